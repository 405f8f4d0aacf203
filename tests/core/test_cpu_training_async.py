"""DualGRPO through verl's real `main_ppo` in the `colocate_async` trainer mode, on CPU, on two data-parallel ranks.

`trainer.v1.trainer_mode=persona_dual_colocate_async` is the one key that switches the recipe: verl's
`PPOTrainerColocateAsync` generates a warm-up batch ahead (`trainer.v1.colocate_async.num_warmup_batches=1`) and
keeps generating while the actor trains, so a step may train on rows the previous weights generated. The glue must
still hand every row's own mode to the estimator (token dump), and the rollout servers must carry the actor's
weights after each sync (checksums). `separate_async` on CPU: `test_cpu_training_separate_async.py`. Nothing is
mocked; the SFT run (conftest's `toy_sft_run`) and one RL run are shared by the tests of this module; no assertion
depends on time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from commands import CHECKPOINTED_TRAINING_OVERRIDES, hf_checksum, run_ok, tiny_rl_argv

BETA = 2.0  # recipes/config/persona_dual_rl.yaml: algorithm.dual_grpo.beta (paper Table 6)
N = 4  # rollouts per prompt (commands.TINY_RL_OVERRIDES): 2 per mode
RL_STEPS, RANKS, PROMPTS = 3, 2, 4  # PROMPTS: commands.TINY_RL_OVERRIDES data.train_batch_size
#: A generous bound against a hung run; no assertion depends on time.
HANG_LIMIT_S = 1500
pytestmark = pytest.mark.timeout(2 * HANG_LIMIT_S)


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_sft_run):
    root = tmp_path_factory.mktemp("cpu_training_async")
    sft = toy_sft_run
    metrics, dumps = root / "rl_metrics.jsonl", root / "tokens"
    argv = tiny_rl_argv(
        sft,
        root / "rl",
        overrides=[
            "trainer.v1.trainer_mode=persona_dual_colocate_async",
            "trainer.v1.colocate_async.num_warmup_batches=1",
            f"trainer.total_training_steps={RL_STEPS}",
            *CHECKPOINTED_TRAINING_OVERRIDES,
            "trainer.max_actor_ckpt_to_keep=null",  # the recipe keeps 2; the checksums need every step's actor
            f"trainer.n_gpus_per_node={RANKS}",
            f"ray_kwargs.ray_init.num_gpus={RANKS}",
            f"trainer.v1.persona_dual.token_dump_dir={dumps}",
        ],
    )
    log = run_ok(argv, root, HANG_LIMIT_S, {"VERL_FILE_LOGGER_PATH": str(metrics), "RAY_DEDUP_LOGS": "0"})
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tokens = {
        s: [json.loads(line) for line in (dumps / f"{s}.jsonl").read_text().splitlines()]
        for s in range(1, RL_STEPS + 1)
    }
    return {
        "root": root,
        "sft_hf": sft.sft_hf,
        "log": log,
        "metrics": {r["step"]: r["data"] for r in records},
        "tokens": tokens,
    }


def test_main_ppo_ran_the_colocate_async_trainer_for_every_step(run):
    assert "-m verl.trainer.main_ppo" in run["log"]
    assert "trainer.v1.trainer_mode=persona_dual_colocate_async" in run["log"]  # the command the recipe ran
    assert sorted(run["metrics"]) == list(range(1, RL_STEPS + 1))
    for step, m in run["metrics"].items():
        assert m["personadual/train/toy/all/count"] == PROMPTS * N, step
        assert "training/off_policy/trajectory_staleness/mean" in m, step  # verl's async bookkeeping


def test_estimator_read_each_rows_mode_from_its_own_response(run):
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import resolve_prefixes

    prefixes = resolve_prefixes(AutoTokenizer.from_pretrained(run["sft_hf"]))
    by_id = {ids[0]: int(mode) for mode, ids in prefixes.ids.items()}
    for step, rows in run["tokens"].items():
        real = [r for r in rows if not r["padding"]]
        assert len(real) == PROMPTS * N, step
        assert all(by_id[r["response_ids"][0]] == r["mode"] for r in real), step
        groups: dict[str, list[int]] = {}
        for r in real:
            groups.setdefault(r["uid"], []).append(r["mode"])
        assert all(sorted(m) == [0, 0, 1, 1] for m in groups.values()), (step, groups)
    for step, m in run["metrics"].items():
        assert m["personadual/train/unbalanced_groups"] == 0.0, step


def test_rows_generated_by_older_weights_were_trained_with_their_own_modes(run):
    """The warm-up batch runs ahead: some step trained rows whose newest weight version is older than the trainer's
    (version s-1 is the trainer's at step s); those rows' modes and groups are as exact as fresh rows'."""
    stale = [
        (step, r)
        for step, rows in run["tokens"].items()
        for r in rows
        if not r["padding"] and r["policy_steps"][1] < step - 1
    ]
    assert stale, {s: sorted({tuple(r["policy_steps"]) for r in rows}) for s, rows in run["tokens"].items()}
    for step, rows in run["tokens"].items():
        for r in rows:
            if not r["padding"]:
                first, last = r["policy_steps"]
                assert 0 <= first <= last <= step - 1, (step, r["key"], r["policy_steps"])


def test_prefix_advantage_is_beta_times_the_rest_of_its_row(run):
    ratios = [
        m["personadual/train/prefix_advantage_ratio"]
        for m in run["metrics"].values()
        if "personadual/train/prefix_advantage_ratio" in m
    ]
    assert ratios, "no row had a non-zero advantage in any step"
    assert ratios == pytest.approx([BETA] * len(ratios), abs=1e-5)


def test_rollout_servers_carry_the_actors_weights_after_every_sync(run):
    """Each rollout server (one per rank) prints a checksum at every sync; the sync after step s carries the actor
    saved at step s, gathered from both FSDP shards."""
    syncs = [
        (int(m.group(1)), float(m.group(2)))
        for m in re.finditer(r"weights version \d+ \(global step (\d+)\): \d+ tensors, checksum (\S+);", run["log"])
    ]
    for step in range(1, RL_STEPS + 1):
        after = [checksum for s, checksum in syncs if s == step]
        assert len(after) == RANKS, (step, syncs)
        actor = Path(run["root"]) / "rl" / f"global_step_{step}" / "actor" / "huggingface"
        assert after == pytest.approx([hf_checksum(actor)] * RANKS, rel=1e-7, abs=1e-6)


def test_per_mode_lengths_in_the_training_metrics(run):
    for step, m in run["metrics"].items():
        for mode in ("general", "personalized"):
            name = f"personadual/train/all/all/length_{mode}"
            assert 1 <= m[f"{name}_mean"] <= m[f"{name}_p95"] <= 16, step
            assert 0.0 <= m[f"{name}_clip_rate"] <= 1.0, step
        lengths = {0: [], 1: []}
        for r in run["tokens"][step]:
            if not r["padding"]:
                lengths[r["mode"]].append(len(r["response_ids"]))
        assert m["personadual/train/all/all/length_general_mean"] == pytest.approx(sum(lengths[0]) / len(lengths[0]))
        clipped = sum(n == 16 for n in lengths[1]) / len(lengths[1])
        assert m["personadual/train/all/all/length_personalized_clip_rate"] == pytest.approx(clipped)
