"""Both stages on CPU through the real commands: verl's SFT trainer, then verl's `main_ppo` with DualGRPO on two
data-parallel ranks, resumed from its checkpoint.

`python -m verl_personadual.recipes {sft,rl} --backbone cpu_tiny` is what a user runs: it launches verl's own
entry points, which load the plugin through the `verl.plugins` entry point (CPU platform, FSDP2 engine for
device cpu, the `hf_cpu` rollout backend, the `persona_dual_sync` trainer, the forced agent loop, the project
reward). The RL run uses two FSDP2 ranks over gloo (`trainer.n_gpus_per_node=2`, two logical Ray GPUs): verl
balances and pads the rows across ranks before the advantage step, shards the actor, gathers it for the rollout
server and saves a 2-rank sharded checkpoint; a second run resumes it (`trainer.resume_mode=auto`) for one more
step. The quickstart (run by `.ci/run`) covers the one-rank path. Nothing is mocked. The SFT run (conftest's
`toy_sft_run`, shared with the other CPU training tests) and the two RL runs are shared by the tests of this module;
each test asserts something that would be false if a part broke.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from commands import CHECKPOINTED_TRAINING_OVERRIDES, hf_checksum, hf_params, run_ok, tiny_rl_argv
from commands import TOY_SFT_STEPS as SFT_STEPS

BETA = 2.0  # recipes/config/persona_dual_rl.yaml: algorithm.dual_grpo.beta (paper Table 6)
N = 4  # rollouts per prompt in this run (commands.TINY_RL_OVERRIDES): 2 per mode
RL_STEPS, RESUMED_STEPS = 2, 3
RANKS = 2
#: A generous bound against a hung run; no assertion depends on time.
HANG_LIMIT_S = 1500
#: The module's two RL runs (after the shared SFT), set up in its first test: bounded per run above, not by
#: pytest's 900 s.
pytestmark = pytest.mark.timeout(3 * HANG_LIMIT_S)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_ok(argv, cwd, HANG_LIMIT_S, env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_sft_run):
    root = tmp_path_factory.mktemp("cpu_training")
    sft = toy_sft_run
    sft_hf = sft.sft_hf
    metrics, dumps = root / "rl_metrics.jsonl", root / "tokens"
    rl_args = tiny_rl_argv(
        sft,
        root / "rl",
        overrides=[
            *CHECKPOINTED_TRAINING_OVERRIDES,
            f"trainer.n_gpus_per_node={RANKS}",
            f"ray_kwargs.ray_init.num_gpus={RANKS}",
            f"trainer.v1.persona_dual.token_dump_dir={dumps}",
        ],
    )
    resumed_metrics = root / "rl_resumed_metrics.jsonl"  # verl's file logger starts its file anew
    # RAY_DEDUP_LOGS=0: the two rollout servers print identical sync lines, which Ray would fold into one
    rl_log = _run(
        rl_args + [f"trainer.total_training_steps={RL_STEPS}"],
        root,
        env={"VERL_FILE_LOGGER_PATH": str(metrics), "RAY_DEDUP_LOGS": "0"},
    )
    resumed_log = _run(
        rl_args + [f"trainer.total_training_steps={RESUMED_STEPS}", "trainer.resume_mode=auto"],
        root,
        env={"VERL_FILE_LOGGER_PATH": str(resumed_metrics), "RAY_DEDUP_LOGS": "0"},
    )
    records = [
        json.loads(line) for f in (metrics, resumed_metrics) for line in f.read_text().splitlines() if line.strip()
    ]
    tokens = {
        s: [json.loads(line) for line in (dumps / f"{s}.jsonl").read_text().splitlines()]
        for s in range(1, RESUMED_STEPS + 1)
    }
    return {
        "root": root,
        "sft_log": sft.log,
        "sft_hf": sft_hf,
        "rl_log": rl_log,
        "resumed_log": resumed_log,
        "steps": [r["step"] for r in records],
        "metrics": {r["step"]: r["data"] for r in records},
        "tokens": tokens,
        "base": sft.base,
    }


def test_sft_on_cpu_through_the_cpu_tiny_recipe_trains(runs):
    losses = {
        int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step:(\d+) - .*?train/loss:([\d.]+)", runs["sft_log"])
    }
    assert sorted(losses) == list(range(1, SFT_STEPS + 1)), runs["sft_log"][-3000:]
    assert losses[SFT_STEPS] < losses[1]  # lr 3e-3 on a random model: the loss falls
    assert (runs["sft_hf"].parent.parent / "latest_checkpointed_iteration.txt").read_text().strip() == str(SFT_STEPS)
    before, after = hf_params(runs["base"]), hf_params(runs["sft_hf"])
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_main_ppo_ran_dual_grpo_with_the_plugin_trainer(runs):
    """Only the plugin's trainer (persona_dual_sync) logs personadual/train/* metrics; verl's own timings show the
    steps went through the v1 sync trainer's phases."""
    assert "-m verl.trainer.main_ppo" in runs["rl_log"]
    assert runs["steps"] == list(range(1, RESUMED_STEPS + 1)), runs["steps"]  # the resumed run logged step 3 only
    for step, m in runs["metrics"].items():
        ours = {k for k in m if k.startswith("personadual/train/")}
        assert {"personadual/train/unbalanced_groups", "personadual/train/toy/aligned/reward_general"} <= ours, step
        assert all(f"timing_s/{phase}" in m for phase in ("gen", "old_log_prob", "ref", "adv", "update_actor")), step


def test_actor_weights_changed_every_step(runs):
    ckpt = runs["root"] / "rl"
    steps = [hf_params(ckpt / f"global_step_{s}" / "actor" / "huggingface") for s in range(1, RESUMED_STEPS + 1)]
    for before, after in zip([hf_params(runs["sft_hf"]), *steps], steps):
        assert any(not torch.equal(before[k], after[k]) for k in before)


def test_rollout_server_generated_with_the_synced_weights(runs):
    """Each rollout server (one per rank: tensor parallel 1) prints a checksum of its weights at every sync; the sync
    after step s must carry the full actor saved at step s, gathered from both FSDP shards (checksum computed here
    from the checkpoint's HF export), and the next step's rollouts, split over the servers, used them."""
    syncs = [
        (int(m.group(1)), int(m.group(2)), float(m.group(3)))
        for m in re.finditer(
            r"weights version (\d+) \(global step (\d+)\): \d+ tensors, checksum (\S+);", runs["rl_log"]
        )
    ]
    served = [
        (int(m.group(1)), int(m.group(2)))
        for m in re.finditer(r"requests served with version (\d+): (\d+)", runs["rl_log"])
    ]
    after_step_1 = [(version, checksum) for version, step, checksum in syncs if step == 1]
    assert len(after_step_1) == RANKS, runs["rl_log"][-3000:]
    actor = runs["root"] / "rl" / "global_step_1" / "actor" / "huggingface"
    for _, checksum in after_step_1:
        assert checksum == pytest.approx(hf_checksum(actor), rel=1e-7, abs=1e-6)
    # step 2 generated 4 prompts x N rollouts with those versions (each server prints its count at its next sync)
    versions = {version for version, _ in after_step_1}
    assert sum(count for version, count in served if version in versions) == 4 * N, served


def test_two_rank_checkpoint_resumed_to_step_3(runs):
    """Each step saved one shard per rank; the second run loaded step 2's shards and trained step 3 only, starting
    from the step-2 weights (its first sync carries them)."""
    ckpt = runs["root"] / "rl"
    for step in range(1, RESUMED_STEPS + 1):
        shards = sorted(p.name for p in (ckpt / f"global_step_{step}" / "actor").glob("model_world_size_*_rank_*.pt"))
        assert shards == [f"model_world_size_{RANKS}_rank_{r}.pt" for r in range(RANKS)], (step, shards)
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(RESUMED_STEPS)
    assert "step:3 " in runs["resumed_log"] and "step:1 " not in runs["resumed_log"]
    first = re.search(r"weights version \d+ \(global step (\d+)\): \d+ tensors, checksum (\S+);", runs["resumed_log"])
    assert first is not None and first.group(1) == str(RL_STEPS), runs["resumed_log"][-3000:]
    step2 = hf_checksum(ckpt / f"global_step_{RL_STEPS}" / "actor" / "huggingface")
    assert float(first.group(2)) == pytest.approx(step2, rel=1e-7, abs=1e-6)


def test_estimator_read_each_rows_mode_from_its_own_response_after_cross_rank_balancing(runs):
    """verl reorders rows across the two ranks and appends padding rows; the mode the trainer used for each row
    (token dump) is the one its own first response token names, and every prompt group kept n/2 per mode."""
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import resolve_prefixes

    prefixes = resolve_prefixes(AutoTokenizer.from_pretrained(runs["sft_hf"]))
    by_id = {ids[0]: int(mode) for mode, ids in prefixes.ids.items()}
    for step, rows in runs["tokens"].items():
        real = [r for r in rows if not r["padding"]]
        assert len(real) == 4 * N, step
        assert all(by_id[r["response_ids"][0]] == r["mode"] for r in real), step
        assert all(r["mode"] == -1 for r in rows if r["padding"])
        groups: dict[str, list[int]] = {}
        for r in real:
            groups.setdefault(r["uid"], []).append(r["mode"])
        assert all(sorted(m) == [0, 0, 1, 1] for m in groups.values()), (step, groups)


def test_every_group_had_half_its_rollouts_in_each_mode(runs):
    for step, m in runs["metrics"].items():
        assert m["personadual/train/unbalanced_groups"] == 0.0, step
        assert m["personadual/train/toy/all/personalized_rate"] == 0.5, step
        assert m["personadual/train/toy/all/count"] == 4 * N, step


def test_prefix_advantage_is_beta_times_the_rest_of_its_row(runs):
    ratios = [
        m["personadual/train/prefix_advantage_ratio"]
        for m in runs["metrics"].values()
        if "personadual/train/prefix_advantage_ratio" in m
    ]
    assert ratios, "no row had a non-zero advantage in any step"
    assert ratios == pytest.approx([BETA] * len(ratios), abs=1e-5)
    for m in runs["metrics"].values():
        assert 0.0 < m["personadual/train/mode_token_mass"] <= 1.0
