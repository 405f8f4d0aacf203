"""The mode-collapse warning in a real run built to collapse: verl's `main_ppo` on CPU with the
`no_dual_adv_no_prefix_forcing` ablation (free sampling, group baseline) from a one-mode SFT checkpoint.

The SFT data is the toy's with a personalized share of 0 for every kind (`toy.build`'s `personalized_share`): every
SFT row opens the general mode, so the checkpoint greedily opens it on every validation prompt, and free sampling
never gives the personalized mode a rollout to learn from. Validation runs before training (step 0) and after each
of the two steps: the starting checkpoint's one mode is an info line at step 0, the same one mode after training
steps is the collapse warning (`core/trainer.py`, `PersonaDualGlue._collapse_check`). Nothing is mocked.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from commands import run_ok, tiny_rl_argv, toy_sft

from verl_personadual.data.toy import ToyKind

SFT_STEPS, RL_STEPS = 8, 2
#: A generous bound against a hung run; no assertion depends on time.
HANG_LIMIT_S = 1200
pytestmark = pytest.mark.timeout(2 * HANG_LIMIT_S)

METRIC = "personadual/val/all/all/mode_collapse"
#: core/trainer.py's warning for this run: the general mode; the settings of the toy's 4 validation rows (3 unaligned,
#: 1 aligned), sorted.
WARNING = (
    "step {step}: mode collapse: free validation picks the general mode on >= 95% of the rows of every persona "
    "setting (personadual/val/all/all/mode_collapse; personadual/val/all/aligned/personalized_rate, "
    "personadual/val/all/unaligned/personalized_rate). The model no longer chooses its mode. Check that the SFT "
    "checkpoint emits both modes (eval its free decoding), keep algorithm.dual_grpo.prefix_forcing=true so both modes "
    "are trained, and try algorithm.dual_grpo.prefix_kl=mass, actor_rollout_ref.actor.entropy_coeff=0.001 or a lower "
    "actor learning rate."
)
INFO = (
    "step 0: the starting checkpoint's free validation picks the general mode on >= 95% of the rows of every persona "
    "setting (personadual/val/all/all/mode_collapse = 1): it does not choose its mode yet; prefix forcing trains both "
    "modes, and a warning follows if this persists after training steps"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpu_collapse")
    sft = toy_sft(root, SFT_STEPS, HANG_LIMIT_S, personalized_share={k.value: 0.0 for k in ToyKind})
    metrics = root / "rl_metrics.jsonl"
    argv = tiny_rl_argv(
        sft,
        root / "rl",
        options=["--ablation", "no_dual_adv_no_prefix_forcing"],
        overrides=[
            f"trainer.total_training_steps={RL_STEPS}",
            "trainer.val_before_train=true",
            "trainer.test_freq=1",
            "trainer.save_freq=-1",
        ],
    )
    log = run_ok(argv, root, HANG_LIMIT_S, {"VERL_FILE_LOGGER_PATH": str(metrics)})
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    sft_rows = pq.read_table(sft.data / "sft" / "train.parquet").to_pylist()
    sft_modes = {r["extra_info"]["mode"] for r in sft_rows}
    return {"log": log, "metrics": {r["step"]: r["data"] for r in records}, "sft_modes": sft_modes}


def test_the_run_was_built_to_collapse(run):
    """One-mode SFT data; every validation row, before and after training, in the general mode."""
    assert run["sft_modes"] == {"general"}
    for step in range(RL_STEPS + 1):
        m = run["metrics"][step]
        assert m["personadual/val/all/all/count"] == 4, step
        assert m["personadual/val/all/all/personalized_rate"] == 0.0, step
        assert m["personadual/val/all/all/unknown_rate"] == 0.0, step


def test_collapse_metric_is_one_at_every_validation(run):
    assert sorted(run["metrics"]) == list(range(RL_STEPS + 1))
    assert [run["metrics"][s][METRIC] for s in range(RL_STEPS + 1)] == [1.0] * (RL_STEPS + 1)


def test_collapse_warning_after_training_steps_and_info_line_at_step_0(run):
    lines = run["log"].splitlines()
    for step in range(1, RL_STEPS + 1):
        found = [x for x in lines if WARNING.format(step=step) in x]
        assert len(found) == 1 and "WARNING:" in found[0], (step, run["log"][-6000:])
    assert not [x for x in lines if "step 0: mode collapse" in x]
    info = [x for x in lines if INFO in x]
    assert len(info) == 1 and "INFO:" in info[0], run["log"][-6000:]
