"""Step throughput of DualGRPO in each verl trainer mode that runs on CPU, against ``persona_dual_sync``.

    python benchmarks/bench_trainer_modes.py [--out DIR] [--modes sync colocate_async] [--steps 12]

Runs the quickstart's stages once under ``--out`` (toy data, tiny model, verl's SFT trainer), then, from the same
SFT checkpoint, one DualGRPO run (recipe ``cpu_toy``, ablation ``none``) per trainer mode (``-- +trainer_mode=M``,
``sync`` = the recipe's default), each for ``--steps`` steps. Each run's wall clock is read from its own output: the
time each ``step:N -`` line of verl's console logger arrived. Throughput = prompts per second over steps 2..N:
``(N - 1) * data.train_batch_size / (t_N - t_1)`` (step 1 is left out: it holds start-up work and, in the async
modes, the warm-up generation). Printed: each mode's throughput, its ratio to ``sync`` measured in the same
invocation, and verl's mean ``timing_s/gen`` and ``timing_s/update_actor`` per step.

``separate_async`` does not run on CPU (the recipe refuses it there: its rollout needs a pool of its own and a GPU
checkpoint engine), so it is not offered. What a CPU ratio says about GPUs: the async modes hide generation behind
training; on one CPU rank both compete for the same cores, so the ratio here is a lower bound on the overlap's gain
and mostly measures the modes' orchestration cost, not what a GPU node gains.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

from verl_personadual.apps.quickstart.report import read_jsonl
from verl_personadual.apps.quickstart.stages import TOY_BACKBONE, Quickstart, run_label

MODES = ("sync", "colocate_async")
STEP_LINE = re.compile(r"\bstep:(\d+) - ")


def mode_override(mode: str) -> list[str]:
    """The recipe overrides of ``mode`` (none for the default, ``sync``)."""
    return [] if mode == "sync" else [f"+trainer_mode={mode}"]


def throughput(step_times: dict[int, float], batch: int) -> float:
    """Prompts per second over steps 2..N from the arrival time of each step's log line (step -> seconds)."""
    steps = sorted(step_times)
    first, last = steps[0], steps[-1]
    if last - first < 1:
        raise ValueError(f"need at least two logged steps, got {steps}")
    return (last - first) * batch / (step_times[last] - step_times[first])


def train_batch_size(qs: Quickstart, overrides: list[str]) -> int:
    """``data.train_batch_size`` (prompts per step) of the quickstart's RL recipe with ``overrides``."""
    from verl_personadual.apps.recipes import compose

    cfg = compose.compose_checked(
        "rl",
        compose.build_overrides(
            stage="rl",
            backbone=TOY_BACKBONE,
            model=str(qs.model),
            train_files=[str(qs.data / "rl" / "train.parquet")],
            val_files=[str(qs.data / "rl" / "validation.parquet")],
            ablation="none",
            extra=overrides,
        ),
    )
    return int(cfg.data.train_batch_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="working directory (default: a new temporary one)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="trainer modes to time")
    parser.add_argument("--steps", type=int, default=12, help="RL steps per mode (default: %(default)s)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_trainer_modes_"))
    rows = []
    for mode in args.modes:
        overrides = [*mode_override(mode), f"trainer.total_training_steps={args.steps}", "trainer.test_freq=-1"]
        overrides += ["trainer.val_before_train=false"]
        timeline: list[tuple[str, float, str]] = []
        qs = Quickstart(out, ["none"], progress=False, overrides=overrides, timeline=timeline)
        qs.run_all()
        label = run_label("none", overrides)
        stage_name = f"rl-{label}"
        times = {int(m.group(1)): t for st, t, line in timeline if st == stage_name and (m := STEP_LINE.search(line))}
        records = [r["data"] for r in read_jsonl(qs.out / "runs" / label / "metrics.jsonl")]
        batch = train_batch_size(qs, overrides)
        rows.append(
            (
                mode,
                throughput(times, batch),
                statistics.mean(r["timing_s/gen"] for r in records if "timing_s/gen" in r),
                statistics.mean(r["timing_s/update_actor"] for r in records if "timing_s/update_actor" in r),
            )
        )
    base = next((r[1] for r in rows if r[0] == "sync"), None)
    print(f"{'mode':<16} {'prompts/s (steps 2..N)':>24} {'x sync':>8} {'gen s/step':>11} {'update s/step':>14}")
    for mode, tput, gen, upd in rows:
        ratio = f"{tput / base:.2f}" if base else "-"
        print(f"{mode:<16} {tput:>24.3f} {ratio:>8} {gen:>11.2f} {upd:>14.2f}")
    print(f"(runs under {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
