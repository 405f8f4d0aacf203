"""Step throughput of DualGRPO in each verl trainer mode that runs on CPU, against ``persona_dual_sync``.

    python benchmarks/bench_trainer_modes.py [--out DIR] [--modes sync colocate_async] [--steps 12] [--repeats 3]

Runs the quickstart's stages up to SFT once under ``--out`` (toy data, tiny model, verl's SFT trainer), then, from
the same SFT checkpoint, ``--repeats`` DualGRPO runs (recipe ``cpu_toy``, ablation ``none``) per trainer mode
(``-- +trainer_mode=M``, ``sync`` = the recipe's default), each for ``--steps`` steps, interleaved (sync,
colocate_async, sync, colocate_async, ...) so that a drift in the machine's load hits every mode alike. Each run's
wall clock is read from its own output: the time each ``step:N -`` line of verl's console logger arrived.
Throughput = prompts per second over steps 2..N: ``(N - 1) * data.train_batch_size / (t_N - t_1)`` (step 1 is left
out: it holds start-up work and, in the async modes, the warm-up generation). Printed per mode: the mean, min and
max throughput over the repeats, the ratio of its mean to ``sync``'s mean, the min..max of the per-repeat ratios
(repeat k of the mode over repeat k of ``sync``, the runs next to each other in time), and verl's mean
``timing_s/gen`` and ``timing_s/update_actor`` per step over all its runs.

``separate_async`` is not offered: on CPU it runs on two ranks (``+trainer_mode=separate_async_cpu``: one
training rank, one rollout rank), so its figure would not compare with one-rank runs of the other modes.
What a CPU ratio says about GPUs: the async modes hide generation behind training; on one CPU rank both
compete for the same cores, so the ratio here is a lower bound on the overlap's gain and mostly measures the
modes' orchestration cost, not what a GPU node gains.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from verl_personadual.apps.quickstart.report import read_jsonl
from verl_personadual.apps.quickstart.stages import TOY_BACKBONE, Quickstart, run_label

MODES = ("sync", "colocate_async")
BASE_MODE = "sync"
STEP_LINE = re.compile(r"\bstep:(\d+) - ")


@dataclass(frozen=True)
class ModeSpread:
    """One mode's throughput (prompts/s) over its repeats, and its ratios to the base mode (None without one)."""

    mode: str
    mean: float
    low: float
    high: float
    ratio_of_means: float | None
    pair_ratio_low: float | None
    pair_ratio_high: float | None


def mode_override(mode: str) -> list[str]:
    """The recipe overrides of ``mode`` (none for the default, ``sync``)."""
    return [] if mode == "sync" else [f"+trainer_mode={mode}"]


def step_arrivals(lines: Iterable[tuple[float, str]]) -> dict[int, float]:
    """Step -> arrival time of its first ``step:N -`` line, from one run's ``(time, line)`` output pairs."""
    arrivals: dict[int, float] = {}
    for t, line in lines:
        m = STEP_LINE.search(line)
        if m:
            arrivals.setdefault(int(m.group(1)), t)
    return arrivals


def throughput(arrivals: Mapping[int, float], batch: int) -> float:
    """Prompts per second over steps 2..N, N the last logged step: ``(N - 1) * batch / (t_N - t_1)`` from the
    arrival time of each step's line (step -> seconds); a ValueError without step 1 or a step after it."""
    last = max(arrivals, default=0)
    if 1 not in arrivals or last < 2:
        raise ValueError(f"need the lines of step 1 and a later step, got steps {sorted(arrivals)}")
    return (last - 1) * batch / (arrivals[last] - arrivals[1])


def spread(throughputs: Mapping[str, Sequence[float]], base: str = BASE_MODE) -> list[ModeSpread]:
    """Per mode (in the given order): mean, min and max of its throughputs (one per repeat, in repeat order), the
    ratio of its mean to ``base``'s mean, and the min and max over repeats k of ``tput[k] / base_tput[k]``; the
    ratios are None when ``base`` was not run. Modes with different repeat counts are a ValueError."""
    counts = {mode: len(values) for mode, values in throughputs.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(f"every mode needs the same, non-zero number of repeats, got {counts}")
    ref = throughputs.get(base)
    out = []
    for mode, values in throughputs.items():
        mean = statistics.mean(values)
        pairs = [v / r for v, r in zip(values, ref)] if ref else None
        out.append(
            ModeSpread(
                mode=mode,
                mean=mean,
                low=min(values),
                high=max(values),
                ratio_of_means=mean / statistics.mean(ref) if ref else None,
                pair_ratio_low=min(pairs) if pairs else None,
                pair_ratio_high=max(pairs) if pairs else None,
            )
        )
    return out


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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="working directory (default: a new temporary one)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="trainer modes to time")
    parser.add_argument("--steps", type=int, default=12, help="RL steps per run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, interleaved (default: %(default)s)")
    args = parser.parse_args()
    if args.steps < 2 or args.repeats < 1:
        parser.error("--steps must be >= 2 and --repeats >= 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_trainer_modes_"))
    tputs: dict[str, list[float]] = {mode: [] for mode in args.modes}
    gen: dict[str, list[float]] = {mode: [] for mode in args.modes}
    upd: dict[str, list[float]] = {mode: [] for mode in args.modes}
    for k in range(1, args.repeats + 1):
        for mode in args.modes:
            overrides = [*mode_override(mode), f"trainer.total_training_steps={args.steps}", "trainer.test_freq=-1"]
            # the experiment name changes nothing but verl's logger name; it gives each run a label of its own
            overrides += ["trainer.val_before_train=false", f"trainer.experiment_name=bench_{mode}_r{k}"]
            label = run_label("none", overrides)
            if (out / "runs" / label).exists():
                print(
                    f"error: {out / 'runs' / label} exists (an earlier benchmark run): use a fresh --out",
                    file=sys.stderr,
                )
                return 2
            timeline: list[tuple[str, float, str]] = []
            qs = Quickstart(out, ["none"], progress=False, overrides=overrides, timeline=timeline)
            qs.run_all(stop_after="sft")
            qs.train_rl(label)
            stage = f"rl-{label}"
            arrivals = step_arrivals((t, line) for st, t, line in timeline if st == stage)
            tputs[mode].append(throughput(arrivals, train_batch_size(qs, overrides)))
            records = [r["data"] for r in read_jsonl(qs.out / "runs" / label / "metrics.jsonl")]
            gen[mode] += [r["timing_s/gen"] for r in records if "timing_s/gen" in r]
            upd[mode] += [r["timing_s/update_actor"] for r in records if "timing_s/update_actor" in r]
            print(f"repeat {k} {mode}: {tputs[mode][-1]:.3f} prompts/s (steps 2..{args.steps})", flush=True)
    print(
        f"{'mode':<16} {'prompts/s mean':>14} {'min':>7} {'max':>7} {'x sync (means)':>14} {'x sync (pairs)':>15} "
        f"{'gen s/step':>11} {'update s/step':>14}"
    )
    for s in spread(tputs):
        pairs = "-" if s.pair_ratio_low is None else f"{s.pair_ratio_low:.2f}..{s.pair_ratio_high:.2f}"
        print(
            f"{s.mode:<16} {s.mean:>14.3f} {s.low:>7.3f} {s.high:>7.3f} {_fmt(s.ratio_of_means):>14} {pairs:>15} "
            f"{statistics.mean(gen[s.mode]):>11.2f} {statistics.mean(upd[s.mode]):>14.2f}"
        )
    print(f"({args.repeats} run(s) per mode, interleaved; runs under {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
