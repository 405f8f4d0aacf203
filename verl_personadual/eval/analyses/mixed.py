"""Figure 3a with real mixed test sets: accuracy vs the share of personalized questions, error bars over seeds.

    python -m verl_personadual.eval mixed --run pd=runs/pd --run base=runs/base --out runs/mixed
    python -m verl_personadual.eval mixed --run rl=runs/toy_rl --out runs/toy_mixed --personalized task=helpful

Pools: the rows every ``--run`` evaluated in every ``--decoding``, split into personalized questions (``pools``:
personalized benchmarks, or ``--personalized FIELD=V,...``) and objective ones whose persona setting is in
``--objective-settings`` (default unaligned and aligned: questions that carry a persona, as in Figure 3a).

Sets: for each ratio r (``--ratios``) and seed s (``--seeds``), a set of N rows (``--size``, default the smaller
pool) holding ``k = floor(r * N + 0.5)`` personalized rows and ``N - k`` objective ones, each drawn without
replacement with ``random.Random(f"mixed:{s}:{r}")``; written as ``sets/r<r>_s<s>.jsonl`` in the eval-set format
(so ``eval run --eval-set`` evaluates any other model on exactly these sets). The same sets serve every run.

Evaluation: a set's accuracy for a run and decoding is the mean ``correct`` of its rows in that run. Each row's
response is generated on its own (a single-turn prompt, per-request seeds), so it does not depend on which set the
row is in: looking it up in the run is evaluating the set, with no generation repeated.

Outputs: ``tables/mixed.{md,csv}`` (per run, decoding and ratio: set size, seeds, mean and sample standard
deviation over seeds, in % of rows), ``tables/mixed_per_seed.csv`` and ``plots/mixed.png`` (mean ± std; axes
0-1 and 0-100 %).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.data.eval_sets import EvalRow, write_eval_set
from verl_personadual.data.families import (
    GENERAL,
    PERSONALIZED,
    Selector,
    split_families,
)
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.plots import PCT, no_data, pyplot, save_figure, write_table
from verl_personadual.eval.pools import FinishedRun, parse_labelled, read_run
from verl_personadual.eval.report import RATIOS
from verl_personadual.utils.cli import count, non_negative

__all__ = ["MixedSet", "pools", "build_sets", "evaluate", "summarise", "figure", "add_parser", "command"]


@dataclass(frozen=True)
class MixedSet:
    """One mixed set: its ratio, seed and rows."""

    ratio: float
    seed: int
    rows: list[EvalRow]

    @property
    def name(self) -> str:
        return f"r{self.ratio:.2f}_s{self.seed}"


def pools(
    runs: Mapping[str, FinishedRun],
    decodings: Sequence[str],
    selector: Selector | None,
    objective_settings: Sequence[str],
) -> tuple[list[EvalRow], list[EvalRow]]:
    """(personalized pool, objective pool) in the first run's eval-set order (module docstring)."""
    first = next(iter(runs.values()))
    ok = {r.row_id for r in first.rows}
    for run in runs.values():
        for dec in decodings:
            ok &= set(run.by_decoding(dec))
    fam = split_families([r for r in first.rows if r.row_id in ok], selector)
    return fam[PERSONALIZED], [r for r in fam[GENERAL] if r.setting in objective_settings]


def build_sets(
    personalized: Sequence[EvalRow],
    objective: Sequence[EvalRow],
    ratios: Sequence[float],
    seeds: Sequence[int],
    size: int | None = None,
) -> list[MixedSet]:
    """The mixed sets (module docstring); PreflightError when a pool is too small for ``size``."""
    n = min(len(personalized), len(objective)) if size is None else size
    if n < 1 or n > len(personalized) or n > len(objective):
        raise PreflightError(
            f"set size {n} needs that many rows in each pool; the pools have {len(personalized)} "
            f"personalized and {len(objective)} objective rows (lower --size, or check --personalized)"
        )
    sets = []
    for ratio in ratios:
        if not 0 <= ratio <= 1:
            raise PreflightError(f"ratio {ratio} is not in [0, 1]")
        k = math.floor(ratio * n + 0.5)
        for seed in seeds:
            rng = random.Random(f"mixed:{seed}:{ratio}")
            sets.append(MixedSet(ratio, seed, rng.sample(list(personalized), k) + rng.sample(list(objective), n - k)))
    return sets


def evaluate(sets: Sequence[MixedSet], runs: Mapping[str, FinishedRun], decodings: Sequence[str]) -> list[list[Any]]:
    """Per (run label, decoding, set): ``[label, decoding, ratio, seed, size, accuracy %]``."""
    out = []
    for label, run in runs.items():
        for dec in decodings:
            correct = {k: float(r["correct"]) for k, r in run.by_decoding(dec).items()}
            for s in sets:
                out.append(
                    [
                        label,
                        dec,
                        s.ratio,
                        s.seed,
                        len(s.rows),
                        100.0 * statistics.fmean(correct[r.row_id] for r in s.rows),
                    ]
                )
    return out


def summarise(per_seed: Sequence[Sequence[Any]]) -> tuple[list[str], list[list[Any]]]:
    """Mean and sample standard deviation over seeds (None with one seed) per (label, decoding, ratio)."""
    groups: dict[tuple[str, str, float], list[Sequence[Any]]] = {}
    for line in per_seed:
        groups.setdefault((line[0], line[1], line[2]), []).append(line)
    header = ["run", "decoding", "personalized_ratio", "set_size", "seeds", f"mean{PCT}", f"std{PCT}"]
    lines = []
    for (label, dec, ratio), group in groups.items():
        accs = [g[5] for g in group]
        lines.append(
            [
                label,
                dec,
                ratio,
                group[0][4],
                len(group),
                statistics.fmean(accs),
                statistics.stdev(accs) if len(accs) > 1 else None,
            ]
        )
    return header, lines


def figure(table: tuple[list[str], list[list[Any]]]) -> Any:
    """Accuracy (0-100 %) vs ratio (0-1), one line per run:decoding, error bars = std over seeds."""
    plt = pyplot()
    _, lines = table
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[list[Any]]] = {}
    for line in lines:
        series.setdefault(f"{line[0]}:{line[1]}", []).append(line)
    for name, pts in series.items():
        ax.errorbar(
            [p[2] for p in pts],
            [p[5] for p in pts],
            yerr=[p[6] or 0.0 for p in pts],
            marker="o",
            capsize=3,
            label=f"{name} (± std over {pts[0][4]} seeds)",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 100)
    ax.set_xlabel("fraction of personalized questions in the set")
    ax.set_ylabel("accuracy (% of items)")
    ax.set_title("Mixed test sets (Figure 3a)")
    if series:
        ax.legend(fontsize=8)
    else:
        no_data(ax, "no sets")
    return fig


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"ratio {text} is not in [0, 1]")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mixed",
        help="Figure 3a from real mixed test sets at each personalization ratio, over seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        nargs="+",
        action="extend",
        required=True,
        metavar="LABEL=DIR",
        help="finished `eval run` directories on the same eval set; repeatable",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--decoding",
        nargs="+",
        default=[Decoding.FREE.value],
        choices=[d.value for d in Decoding],
        help="decodings to plot (default free); every run must have them",
    )
    p.add_argument(
        "--ratios", nargs="+", type=_ratio, default=RATIOS, help="personalized fractions (default 0, 0.1, ..., 1)"
    )
    p.add_argument(
        "--seeds", nargs="+", type=non_negative, default=[0, 1, 2], help="set-sampling seeds (default 0 1 2)"
    )
    p.add_argument("--size", type=count, help="rows per set (default: the smaller pool)")
    p.add_argument(
        "--personalized",
        type=Selector.parse,
        metavar="FIELD=V[,V...]",
        help="rows that are personalized questions (default: personalized benchmarks; toy: task=helpful)",
    )
    p.add_argument(
        "--objective-settings",
        nargs="+",
        default=[PersonaSetting.UNALIGNED.value, PersonaSetting.ALIGNED.value],
        choices=[s.value for s in PersonaSetting],
        help="persona settings of the objective pool (default unaligned aligned)",
    )
    p.set_defaults(func=command)


def command(a: argparse.Namespace) -> list[Path]:
    """Run ``mixed`` (module docstring); returns the written paths."""
    runs = {label: read_run(Path(d), need=a.decoding) for label, d in parse_labelled(a.run, "--run").items()}
    pers, obj = pools(runs, a.decoding, a.personalized, a.objective_settings)
    sets = build_sets(pers, obj, a.ratios, a.seeds, a.size)
    out = Path(a.out)
    for s in sets:
        write_eval_set(out / "sets" / f"{s.name}.jsonl", s.rows)
    written = [out / "sets"]
    per_seed = evaluate(sets, runs, a.decoding)
    summary = summarise(per_seed)
    written += write_table(out / "tables", "mixed", summary)
    written += write_table(
        out / "tables",
        "mixed_per_seed",
        (["run", "decoding", "personalized_ratio", "seed", "set_size", f"accuracy{PCT}"], per_seed),
        md=False,
    )
    plt = pyplot()
    fig = figure(summary)
    written.append(save_figure(fig, out / "plots" / "mixed.png"))
    plt.close(fig)
    return written
