"""DualGRPO through verl's real `main_ppo` in the `separate_async` trainer mode, on CPU: 1 training rank + 1 rollout
rank.

`-- +trainer_mode=separate_async_cpu` (`trainer.v1.trainer_mode=persona_dual_separate_async`,
`actor_rollout_ref.hybrid_engine=false`, checkpoint engine `gloo`, Ray with 2 logical GPUs): the actor and
reference train on one rank (verl's DetachActorWorker, the plugin's CPU subclass), a standalone `hf_cpu` replica
generates continuously on a rank of its own, and after every step the actor's weights reach it through the plugin's
`gloo` checkpoint engine (verl's CheckpointEngineWorker on the rollout rank receives them). Two actor updates per
step (`parameter_sync_step=2`, 2 prompts each): verl computes both mini-batches' `old_log_probs` with the weights of
the step's start (decoupled PPO, its saved copy of the actor). Checked: every row's own mode reached the estimator
(token dump), the prefix advantage is beta times the rest, the rollout's weights after each sync are the actor
saved at that step (checksums, bytes through the engine), and `old_log_probs` of both updates equal the log-probs
of the step's starting weights recomputed here with `transformers` from the saved checkpoints. Nothing is mocked;
the SFT run (conftest's `toy_sft_run`) and one RL run are shared by the tests of this module; no assertion
depends on time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from commands import CHECKPOINTED_TRAINING_OVERRIDES, hf_checksum, hf_params, run_ok, tiny_rl_argv

from verl_personadual.core.names import CPU_CHECKPOINT_ENGINE

BETA = 2.0  # recipes/config/persona_dual_rl.yaml: algorithm.dual_grpo.beta (paper Table 6)
TEMPERATURE = 0.6  # recipes/config/persona_dual_rl.yaml: actor_rollout_ref.rollout.temperature (paper)
N = 4  # rollouts per prompt (commands.TINY_RL_OVERRIDES): 2 per mode
RL_STEPS, PROMPTS, SYNC_STEP = 3, 4, 2  # PROMPTS: commands.TINY_RL_OVERRIDES data.train_batch_size
UPDATE_PROMPTS = PROMPTS // SYNC_STEP  # prompts per actor update
#: A generous bound against a hung run; no assertion depends on time.
HANG_LIMIT_S = 1500
pytestmark = pytest.mark.timeout(2 * HANG_LIMIT_S)


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_sft_run):
    root = tmp_path_factory.mktemp("cpu_training_separate_async")
    sft = toy_sft_run
    metrics, dumps = root / "rl_metrics.jsonl", root / "tokens"
    argv = tiny_rl_argv(
        sft,
        root / "rl",
        overrides=[
            "+trainer_mode=separate_async_cpu",  # 1 training + 1 rollout rank, hybrid_engine=false, gloo transfer
            f"trainer.v1.separate_async.parameter_sync_step={SYNC_STEP}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={UPDATE_PROMPTS}",
            f"trainer.total_training_steps={RL_STEPS}",
            *CHECKPOINTED_TRAINING_OVERRIDES,
            "trainer.max_actor_ckpt_to_keep=null",  # the recipe keeps 2; the checks need every step's actor
            f"trainer.v1.persona_dual.token_dump_dir={dumps}",
        ],
    )
    log = run_ok(argv, root, HANG_LIMIT_S, {"VERL_FILE_LOGGER_PATH": str(metrics), "RAY_DEDUP_LOGS": "0"})
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tokens = {
        (s, k): [json.loads(line) for line in (dumps / f"{s}_{k}.jsonl").read_text().splitlines()]
        for s in range(1, RL_STEPS + 1)
        for k in range(SYNC_STEP)
    }
    return {
        "root": root,
        "sft_hf": sft.sft_hf,
        "log": log,
        "metrics": {r["step"]: r["data"] for r in records},
        "tokens": tokens,
    }


def actor_dir(run, step: int) -> Path:
    """The weights the trainer held after ``step`` (0: the SFT model it started from)."""
    return run["sft_hf"] if step == 0 else Path(run["root"]) / "rl" / f"global_step_{step}" / "actor" / "huggingface"


def test_main_ppo_ran_the_separate_async_trainer_with_one_standalone_rollout(run):
    assert "-m verl.trainer.main_ppo" in run["log"]
    assert "+trainer_mode=separate_async_cpu" in run["log"]  # the command the recipe ran
    assert "the rollout is served by 1 standalone replica(s) only" in run["log"]
    assert re.findall(r"LLMServerManager: \[(.*?)\]", run["log"]) == ["'hf_cpu_server_0'"]
    assert sorted(run["metrics"]) == list(range(1, RL_STEPS + 1))
    for step, m in run["metrics"].items():
        # verl averages a step's metrics over its parameter_sync_step updates: rows per update
        assert m["personadual/train/toy/all/count"] == UPDATE_PROMPTS * N, step
        assert "training/off_policy/trajectory_staleness/mean" in m, step  # verl's async bookkeeping


def test_estimator_read_each_rows_mode_from_its_own_response(run):
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import resolve_prefixes

    prefixes = resolve_prefixes(AutoTokenizer.from_pretrained(run["sft_hf"]))
    by_id = {ids[0]: int(mode) for mode, ids in prefixes.ids.items()}
    for update, rows in run["tokens"].items():
        real = [r for r in rows if not r["padding"]]
        assert len(real) == UPDATE_PROMPTS * N, update
        assert all(by_id[r["response_ids"][0]] == r["mode"] for r in real), update
        groups: dict[str, list[int]] = {}
        for r in real:
            groups.setdefault(r["uid"], []).append(r["mode"])
        assert len(groups) == UPDATE_PROMPTS, update  # a prompt's group is trained whole, in one update
        assert all(sorted(m) == [0, 0, 1, 1] for m in groups.values()), (update, groups)
    for step in range(1, RL_STEPS + 1):  # the two updates of a step train different prompts
        assert not {r["uid"] for r in run["tokens"][step, 0]} & {r["uid"] for r in run["tokens"][step, 1]}, step
    for step, m in run["metrics"].items():
        assert m["personadual/train/unbalanced_groups"] == 0.0, step


def test_rows_come_from_weights_the_rollout_held_before_the_step(run):
    """The rollout generates ahead with the last synced weights (version s-1 is the trainer's at step s); some step
    trained rows older than that, and their modes and groups are as exact as fresh rows' (previous test)."""
    rows = [(s, r) for (s, _), rs in run["tokens"].items() for r in rs if not r["padding"]]
    for step, r in rows:
        first, last = r["policy_steps"]
        assert 0 <= first <= last <= step - 1, (step, r["key"], r["policy_steps"])
    assert any(r["policy_steps"][1] < step - 1 for step, r in rows), sorted(
        {(s, tuple(r["policy_steps"])) for s, r in rows}
    )


def test_prefix_advantage_is_beta_times_the_rest_of_its_row(run):
    ratios = [
        m["personadual/train/prefix_advantage_ratio"]
        for m in run["metrics"].values()
        if "personadual/train/prefix_advantage_ratio" in m
    ]
    assert ratios, "no row had a non-zero advantage in any step"
    assert ratios == pytest.approx([BETA] * len(ratios), abs=1e-5)


def test_rollout_carries_the_actors_weights_after_every_sync_through_the_gloo_engine(run):
    """The rollout server prints a checksum at every sync (at start-up: the SFT model), the gloo engine the bytes it
    sent; the sync after step s carries the actor saved at step s, all of its bytes, to the one rollout worker."""
    syncs = [
        (int(m.group(1)), float(m.group(2)))
        for m in re.finditer(r"weights version \d+ \(global step (\d+)\): \d+ tensors, checksum (\S+);", run["log"])
    ]
    sent = [
        (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(
            rf"\[{CPU_CHECKPOINT_ENGINE} checkpoint engine\] sync \d+ \(global step (\d+)\): (\d+) tensors, (\d+) "
            r"bytes in \d+ bucket\(s\) to (\d+) rollout worker\(s\)",
            run["log"],
        )
    ]
    assert [s for s, _ in syncs] == [s for s, *_ in sent] == list(range(RL_STEPS + 1))
    for (step, checksum), (_, tensors, nbytes, workers) in zip(syncs, sent, strict=True):
        params = hf_params(actor_dir(run, step))
        assert checksum == pytest.approx(hf_checksum(actor_dir(run, step)), rel=1e-7, abs=1e-6), step
        assert (tensors, nbytes, workers) == (len(params), sum(t.nbytes for t in params.values()), 1), step


@torch.no_grad()
def _log_probs(model, row: dict) -> torch.Tensor:
    ids = torch.tensor([row["prompt_ids"] + row["response_ids"]])
    logits = model(ids).logits[0, len(row["prompt_ids"]) - 1 : -1].double() / TEMPERATURE
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(row["response_ids"])[:, None])[:, 0]


def test_both_updates_of_a_step_use_the_steps_starting_weights_as_old_policy(run):
    """Decoupled PPO: `old_log_probs` of update k of step s are the log-probs of the weights at the step's start
    (the actor saved at step s-1), recomputed here with transformers at the rollout temperature; on CPU this needs
    the saved copy to be a copy (the second update's would otherwise be the once-updated weights')."""
    from transformers import AutoModelForCausalLM

    for step in range(1, RL_STEPS + 1):
        model = AutoModelForCausalLM.from_pretrained(actor_dir(run, step - 1), dtype=torch.float32).eval()
        for k in range(SYNC_STEP):
            for r in run["tokens"][step, k]:
                if not r["padding"]:
                    gap = (torch.tensor(r["old_log_probs"]).double() - _log_probs(model, r)).abs().max()
                    assert float(gap) < 1e-4, (step, k, r["key"], float(gap))
