"""A quickstart SIGKILLed (its whole process group) during RL, after verl wrote a periodic checkpoint, continues
from that step on rerun and reaches the targets (issue 22, item 5). Expensive: one quickstart plus one resume of
its RL stage (measured in the README)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verl_personadual.apps.quickstart.report import TARGETS, targets_met

REPO = Path(__file__).resolve().parents[2]


def _logged(metrics: Path, step: int) -> bool:
    """verl's file logger has written the training metrics of ``step`` (it logs a step after saving it)."""
    if not metrics.exists():
        return False
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["step"] == step and any(k.startswith("actor/") for k in record["data"]):
            return True
    return False


@pytest.mark.ray
@pytest.mark.timeout(3600)
def test_killed_rl_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    argv = [sys.executable, "-m", "verl_personadual.quickstart", "--out", str(out), "--no-progress", "--check-targets"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ckpt = out / "runs" / "none" / "checkpoints"
    latest = ckpt / "latest_checkpointed_iteration.txt"
    metrics = out / "runs" / "none" / "metrics.jsonl"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            # kill between two checkpoints: after verl saved a step and logged its metrics
            while not (latest.exists() and latest.read_text().strip() and _logged(metrics, int(latest.read_text()))):
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                time.sleep(1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    saved = int(latest.read_text())
    assert saved in (4, 8)
    assert not (out / "stages" / "rl-none.json").exists()

    second = subprocess.run(argv[:-1], capture_output=True, text=True, env=env, timeout=3000)
    evidence = os.environ.get("QUICKSTART_RESUME_EVIDENCE")  # keep the run's logs and figures for a report
    if evidence:
        shutil.copytree(
            out, evidence, ignore=shutil.ignore_patterns("checkpoints", "sft", "model", "data"), dirs_exist_ok=True
        )
        (Path(evidence) / "second.stdout").write_text(second.stdout)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (
        f"resuming from step {saved}: the checkpoint {ckpt / f'global_step_{saved}'} of a killed run" in second.stdout
    )
    assert latest.read_text().strip() == "12"
    marker = json.loads((out / "stages" / "rl-none.json").read_text())
    assert marker["resumed_from_step"] == saved
    assert marker["checkpoint"] == str(ckpt / "global_step_12" / "actor" / "huggingface")
    # verl's log of the rerun has no step before the saved one, and every step after it
    rerun = (out / "logs" / "rl-none.log").read_text()
    steps = {int(m) for m in re.findall(r"\bstep:(\d+)\b", rerun)}
    assert min(steps) >= saved and set(range(saved + 1, 13)) <= steps
    # the metrics file holds every training step once: the first run's up to the checkpoint, the rerun's after it
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    trained = [r["step"] for r in records if any(k.startswith("actor/") for k in r["data"])]
    assert trained == list(range(1, 13))
    # and the resumed run reaches the quickstart's targets
    summary = json.loads((out / "summary.json").read_text())
    after = summary["runs"]["rl-none"]
    assert all(targets_met(after).values()), {k: after.get(k) for k in TARGETS}
