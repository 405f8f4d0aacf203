"""Tables (Markdown + CSV) and plots (PNG) from ``predictions.jsonl``; also a side-by-side of several runs.

All numbers are percentages of items (micro-averaged within a cell), written with 2 decimals in Markdown and
4 in CSV; every percentage column's name ends in ``_%`` (item counts are in ``items``, ratios in
``personalized_ratio``). Cells:

- accuracy of (benchmark, setting, decoding) = mean ``correct`` over its rows;
- ``upper_bound`` (Table 8) of (benchmark, setting) = mean over the rows evaluated in both forced modes of
  "correct in general or in personalized mode"; so it is >= each forced mode on the same rows.

Files under ``<run>/tables`` (and ``plots``):

- ``table1.{md,csv}``, the paper's Table 1 layout: one line per decoding (``free``, ``general``, ``personalized``,
  ``router``, then ``upper_bound``). Objective benchmarks in the paper's column order (PubMedQA, TriviaQA,
  MMLU-Pro, SuperGPQA, MATH500) under the unaligned and aligned persona settings, then their block average
  ``objective/<setting>_%`` (mean of that setting's objective columns); personalized benchmarks (PersonaFeedback,
  FSPO) under the aligned setting only (each user's own persona; they have no other setting) and their average
  ``personalized_%``. The no-persona setting, which the paper shows as a separate "No-Persona Upperbound" row, is
  in the CSV's last columns (``<benchmark>/none_%``, ``objective/none_%``) and in the Markdown as a
  "(no persona)" row per line. The Markdown puts each objective benchmark's two settings in one cell,
  "unaligned / aligned", as the paper does. A multi-seed run (``eval run --seeds``) reports the mean over its
  seeds with its 95 % Student-t confidence interval (``intervals.mean_interval``: half-width
  t_{0.975, n-1} * std / sqrt(n) over the n seeds, in percentage points): the Markdown shows "mean ± half-width"
  and its caption names the number of seeds; the CSV adds a ``<column>_std`` column (sample standard deviation
  over seeds) and a ``<column>_ci95`` column (the half-width) after every value column.
  Lines of greedy runs (e.g. the FPPS systems, greedy only) beside lines of sampled runs (``--seeds``, temperature
  > 0) are never unmarked: the greedy lines' names carry ``intervals.GREEDY_MARK`` and the caption defines it; the
  CSV adds a ``sampling`` column (``greedy`` / ``sampled``). The same holds for the toy table.
- ``mode_analysis.{md,csv}`` (Table 8): per (benchmark, setting): general, personalized, free accuracy and the
  upper bound, with the item count.
- ``mode_rates.{md,csv}`` (Figure 3b): per (decoding, benchmark, setting) for decodings that choose a mode
  (``free``, ``router``, ``free_constrained``): % of responses in general / personalized / unknown mode.
- ``mixed_ratio.csv`` (Figure 3a): for a personalization ratio r in 0, 0.1, ..., 1, the expected accuracy of a
  mixed task set with a fraction r of personalized items: ``(1 - r) * objective + r * personalized``, where
  objective = accuracy over objective rows that carry a persona (unaligned and aligned) and personalized =
  accuracy over personalized-benchmark rows (micro), per decoding.
- plots: ``mode_rates.png``, ``accuracy_by_setting.png``, ``mixed_ratio.png``; percentage axes are fixed to
  0-100 and legends list only what the run holds (personalized benchmarks' own user personas are labelled
  ``own persona``, apart from the objective ``aligned`` setting).

- ``table1_toy.{md,csv}`` (runs holding rows of the toy task): the toy task's Table 1, one line per decoding
  (:mod:`verl_personadual.eval.toy_table`).
- ``judge_agreement.{md,csv}`` (runs with ``--judge``): per judged benchmark (PubMedQA, MATH-500), responses,
  how many the judge graded, accuracy by the rules and by the judge, the % of graded responses on which they
  agree, and how many only one of them calls correct.

A run directory is either one run (``predictions.jsonl``) or a multi-seed run: one sub-run per sampling seed in
``seed_<s>/`` (each an ordinary run over the same eval set). Tables of a multi-seed run aggregate its sub-runs:
accuracy cells are the mean over seeds of each seed's accuracy (:func:`seed_cells`); mode rates, mixed-set
accuracy and judge agreement pool the responses of all seeds.

``compare`` writes ``table1.{md,csv}`` for several runs after checking that every run (every seed of a multi-seed
run) is complete (:func:`read_complete_run`): with ``--run LABEL=DIR`` one line per (label, decoding); with
``--system NAME=DIR`` (the registered systems, ``eval.systems``) the paper's rows, in its sections and order, then
the other registered systems (the FPPS baselines, in their own section), each from its own decoding (and refused
when the run's prompt style is not the system's). When the runs hold toy rows it also writes
``table1_toy.{md,csv}`` with the same lines (less the ``upper_bound`` ones; a run without toy rows has none there).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.core.modes import MODE_NAMES
from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.data.benchmarks import Section, benchmark_names, get_benchmark, table1_columns
from verl_personadual.data.eval_sets import read_eval_set
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.intervals import (
    CI95,
    STD,
    Interval,
    decoding_caption,
    format_interval,
    marked_name,
    mean_interval,
    mixes_decodings,
    seeds_caption,
)
from verl_personadual.eval.plots import (
    COLORS,
    OWN_PERSONA,
    PCT,
    BarSeries,
    csv_table,
    hbar_figure,
    no_data,
    pyplot,
    save_figure,
    write_table,
)
from verl_personadual.eval.store import read_predictions
from verl_personadual.eval.systems import System, systems
from verl_personadual.eval.toy_table import MARKDOWN_FILE, ToyLine, has_toy_rows, run_lines, toy_part, write_toy_table
from verl_personadual.utils.atomic import atomic_write_text
from verl_personadual.utils.errors import UserError

__all__ = [
    "IncompleteRunError",
    "ComparedRun",
    "run_parts",
    "read_complete_run",
    "seed_cells",
    "judge_agreement",
    "table1_benchmarks",
    "UPPER_BOUND",
    "accuracy_cells",
    "table1",
    "mode_analysis",
    "mode_rates",
    "mixed_ratio",
    "write_report",
    "write_comparison",
    "comparison_lines",
    "table1_markdown",
    "Table1Line",
    "mode_rates_figure",
    "accuracy_figure",
    "mixed_ratio_figure",
    "RATIOS",
]

logger = logging.getLogger(__name__)

UPPER_BOUND = "upper_bound"
LINE_ORDER = [d.value for d in Decoding] + [UPPER_BOUND]
#: Objective persona settings of Table 1's main cells, in its order ("Unalign./Align."); ``none`` comes apart.
TABLE1_SETTINGS = (PersonaSetting.UNALIGNED.value, PersonaSetting.ALIGNED.value)
#: Sub-run directories of a multi-seed run.
SEED_DIR = re.compile(r"seed_(-?\d+)")
SETTING_ORDER = [s.value for s in PersonaSetting]
RATIOS = [round(i / 10, 1) for i in range(11)]

Cell = tuple[str, str, str]  # (benchmark, setting, decoding)


def table1_benchmarks(section: Section) -> list[str]:
    """The registered benchmarks of a Table 1 section in its column order (``benchmarks.table1_columns``: the
    paper's order, PubMedQA, TriviaQA, MMLU-Pro, SuperGPQA, MATH500, not Table 7's; then any other registered
    benchmark); their header names are their ``table1_name``."""
    return [b.name for b in table1_columns(section)]


def _bench_rank() -> dict[str, int]:
    """Registration order of the benchmarks (Table 7's for the built-in ones), the order of the other tables."""
    return {name: i for i, name in enumerate(benchmark_names())}


class IncompleteRunError(UserError, ValueError):
    """A run directory that is missing or unfinished; the message names it."""


def run_parts(run_dir: Path) -> list[Path]:
    """The directories holding predictions: ``run_dir`` itself for one run, its ``seed_<s>`` sub-runs (by seed)
    for a multi-seed run; [] when there is neither."""
    run_dir = Path(run_dir)
    if (run_dir / "predictions.jsonl").is_file():
        return [run_dir]
    seeds = [(int(m.group(1)), d) for d in run_dir.glob("seed_*") if d.is_dir() and (m := SEED_DIR.fullmatch(d.name))]
    return [d for _, d in sorted(seeds)]


def _read_complete_part(where: str, run_dir: Path) -> list[dict[str, Any]]:
    for name in ("eval_set.jsonl", "predictions.jsonl"):
        if not (run_dir / name).is_file():
            raise IncompleteRunError(f"{where}: no {name} (not an `eval run` output directory, or never started)")
    records = read_predictions(run_dir / "predictions.jsonl")
    rows = {r.row_id for r in read_eval_set(run_dir / "eval_set.jsonl")}
    if not records:
        raise IncompleteRunError(f"{where}: no predictions yet; finish it with its `eval run` command")
    done: dict[str, set[str]] = defaultdict(set)
    for r in records:
        done[r["decoding"]].add(r["row_id"])
    for decoding, ids in sorted(done.items()):
        if ids != rows:
            raise IncompleteRunError(
                f"{where}: unfinished, decoding {decoding!r} has {len(ids & rows)} of {len(rows)} rows; "
                "finish it with its `eval run` command"
            )
    return records


def read_complete_run(label: str, run_dir: Path) -> list[list[dict[str, Any]]]:
    """The predictions of a finished run, one list per part (:func:`run_parts`: the run, or each seed of a
    multi-seed run): every part has ``eval_set.jsonl`` and ``predictions.jsonl`` and, for every decoding in its
    predictions, a record for every row of its eval set; all parts have the same rows and decodings. Else
    :class:`IncompleteRunError` naming the run (and seed)."""
    run_dir = Path(run_dir)
    where = f"run {label!r} ({run_dir})"
    if not run_dir.is_dir():
        raise IncompleteRunError(f"{where}: no such directory")
    parts = run_parts(run_dir)
    if not parts:
        _read_complete_part(where, run_dir)  # raises, naming what is missing
    out = [_read_complete_part(where if p == run_dir else f"{where}, {p.name}", p) for p in parts]
    keys = [sorted({(r["row_id"], r["decoding"]) for r in recs}) for recs in out]
    if any(k != keys[0] for k in keys[1:]):
        raise IncompleteRunError(f"{where}: its seeds hold different rows or decodings; run them with one command")
    return out


def read_run(run_dir: Path) -> list[list[dict[str, Any]]]:
    """The records of every part of ``run_dir`` (finished or not), for redrawing its report."""
    parts = run_parts(run_dir)
    if not parts:
        raise IncompleteRunError(f"{run_dir}: no predictions.jsonl and no seed_<s> sub-runs")
    return [read_predictions(p / "predictions.jsonl") for p in parts]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def accuracy_cells(records: Iterable[Mapping[str, Any]]) -> dict[Cell, tuple[int, float]]:
    """(benchmark, setting, decoding) -> (items, accuracy in %), plus the ``upper_bound`` pseudo-decoding."""
    groups: dict[Cell, list[float]] = defaultdict(list)
    forced: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for r in records:
        groups[(r["benchmark"], r["setting"], r["decoding"])].append(float(r["correct"]))
        if r["decoding"] in (Decoding.GENERAL.value, Decoding.PERSONALIZED.value):
            forced[(r["benchmark"], r["setting"], r["row_id"])][r["decoding"]] = float(r["correct"])
    for (bench, setting, _), by_mode in forced.items():
        if len(by_mode) == 2:
            groups[(bench, setting, UPPER_BOUND)].append(max(by_mode.values()))
    return {cell: (len(v), 100.0 * _mean(v)) for cell, v in groups.items()}


def seed_cells(per_seed: Sequence[Mapping[Cell, tuple[int, float]]]) -> dict[Cell, tuple[int, float]]:
    """Cells of a multi-seed run: (items, mean accuracy over the seeds that have the cell); one seed: its cells.
    (Table 1 also reports the confidence interval over seeds, :class:`Table1Line`.)"""
    values: dict[Cell, list[tuple[int, float]]] = defaultdict(list)
    for cells in per_seed:
        for cell, v in cells.items():
            values[cell].append(v)
    return {c: (max(n for n, _ in v), _mean([a for _, a in v])) for c, v in values.items()}


def _ordered_cells(cells: Mapping[Cell, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    pairs = {(b, s) for b, s, _ in cells}
    bench_rank = _bench_rank()
    ordered = sorted(pairs, key=lambda p: (bench_rank.get(p[0], len(bench_rank)), SETTING_ORDER.index(p[1])))
    lines = [d for d in LINE_ORDER if any(c[2] == d for c in cells)]
    return ordered, lines


def _acc(cells: Mapping[Cell, tuple[int, float]], pair: tuple[str, str], decoding: str) -> float | None:
    hit = cells.get((pair[0], pair[1], decoding))
    return None if hit is None else hit[1]


@dataclass(frozen=True)
class _Column:
    """One value column of Table 1: its CSV name, and the (benchmark, setting) cells it averages (one cell for a
    benchmark column, a block's cells for an average column)."""

    name: str
    cells: tuple[tuple[str, str], ...]


def _table1_columns(pairs: set[tuple[str, str]]) -> tuple[list[_Column], list[_Column]]:
    """Main columns (objective unaligned / aligned, their averages, personalized, its average) and no-persona
    columns (objective ``none`` and its average) for the (benchmark, setting) pairs that occur."""
    obj = [b for b in table1_benchmarks(Section.OBJECTIVE) if any(p[0] == b for p in pairs)]
    pers = [b for b in table1_benchmarks(Section.PERSONALIZED) if any(p[0] == b for p in pairs)]
    main = [_Column(f"{b}/{st}{PCT}", ((b, st),)) for b in obj for st in TABLE1_SETTINGS if (b, st) in pairs]
    for st in TABLE1_SETTINGS:
        block = tuple((b, st) for b in obj if (b, st) in pairs)
        if block:
            main.append(_Column(f"objective/{st}{PCT}", block))
    aligned = PersonaSetting.ALIGNED.value
    main += [_Column(f"{b}{PCT}", ((b, aligned),)) for b in pers if (b, aligned) in pairs]
    if any((b, aligned) in pairs for b in pers):
        main.append(_Column(f"personalized{PCT}", tuple((b, aligned) for b in pers if (b, aligned) in pairs)))
    none = PersonaSetting.NONE.value
    no_persona = [_Column(f"{b}/{none}{PCT}", ((b, none),)) for b in obj if (b, none) in pairs]
    if no_persona:
        no_persona.append(_Column(f"objective/{none}{PCT}", tuple(c.cells[0] for c in no_persona)))
    return main, no_persona


def _column_value(col: _Column, cells: Mapping[Cell, tuple[int, float]], dec: str) -> float | None:
    vals = [v for v in (_acc(cells, p, dec) for p in col.cells) if v is not None]
    return _mean(vals) if vals else None


@dataclass(frozen=True)
class Table1Line:
    """One Table 1 line: its name, the decoding it reads, its run's cells (one mapping per seed of a multi-seed
    run), its section (system comparisons), and whether its run sampled (temperature > 0) or decoded greedily."""

    name: str
    decoding: str
    per_seed: Sequence[Mapping[Cell, tuple[int, float]]]
    section: str = ""
    sampled: bool = False

    def value(self, col: _Column) -> Interval | None:
        """The column's mean over the seeds that have it, with its std and 95 % t-interval over two or more
        (``intervals.mean_interval``); None when no seed has it."""
        vals = [v for v in (_column_value(col, cells, self.decoding) for cells in self.per_seed) if v is not None]
        return mean_interval(vals) if vals else None

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {(b, st) for cells in self.per_seed for b, st, _ in cells}

    @property
    def seeds(self) -> int:
        return len(self.per_seed)


def _table1_lines(
    runs: Mapping[str, Sequence[Mapping[Cell, tuple[int, float]]]], sampled: bool = False
) -> list[Table1Line]:
    lines = []
    for label, per_seed in runs.items():
        _, decodings = _ordered_cells({c: v for cells in per_seed for c, v in cells.items()})
        for dec in decodings:
            lines.append(Table1Line(f"{label}:{dec}" if label else dec, dec, per_seed, sampled=sampled))
    return lines


def table1(
    runs: Mapping[str, Mapping[Cell, tuple[int, float]]] | Sequence[Table1Line],
) -> tuple[list[str], list[list[Any]]]:
    """Header and lines of Table 1's CSV (module docstring) for ``{label: cells}`` (one run each: one line per
    label and decoding, named ``<label>:<decoding>``, or ``<decoding>`` when the label is empty) or for explicit
    lines. Lines of multi-seed runs add ``<column>_std`` and ``<column>_ci95`` columns (sample std and 95 %
    t-interval half-width over seeds) after each value column. Lines that mix greedy and sampled runs add a
    ``sampling`` column (``greedy`` / ``sampled``). Missing cells are None."""
    lines = runs if isinstance(runs, Sequence) else _table1_lines({k: [v] for k, v in runs.items()})
    main, no_persona = _table1_columns({p for line in lines for p in line.pairs})
    columns = main + no_persona
    with_std = any(line.seeds > 1 for line in lines)
    with_section = any(line.section for line in lines)
    with_sampling = mixes_decodings(line.sampled for line in lines)
    header = ["system"] + (["section"] if with_section else []) + (["sampling"] if with_sampling else [])
    for col in columns:
        header += [col.name] + ([col.name + STD, col.name + CI95] if with_std else [])
    out = []
    for line in lines:
        row: list[Any] = [line.name] + ([line.section] if with_section else [])
        row += [("sampled" if line.sampled else "greedy")] if with_sampling else []
        for col in columns:
            v = line.value(col)
            row += [None if v is None else v.mean]
            row += ([None, None] if v is None else [v.std, v.half_width]) if with_std else []
        out.append(row)
    return header, out


def table1_markdown(lines: Sequence[Table1Line]) -> str:
    """Table 1 as the paper prints it (module docstring): a cell "unaligned / aligned" per objective benchmark,
    block averages, personalized benchmarks (aligned), section rows for system comparisons, then a
    "(no persona)" row for every line that has no-persona cells."""
    pairs = {p for line in lines for p in line.pairs}
    main, no_persona = _table1_columns(pairs)
    objective, personalized = table1_benchmarks(Section.OBJECTIVE), table1_benchmarks(Section.PERSONALIZED)
    obj = [b for b in objective if any(p[0] == b and p[1] in TABLE1_SETTINGS for p in pairs)]
    obj_avg = [c for c in main if c.name.startswith("objective/")]
    pers = [c for c in main if c.name.removesuffix(PCT) in personalized]
    pers_avg = [c for c in main if c.name.startswith("personalized")]
    settings = [st for st in TABLE1_SETTINGS if any(p[1] == st and p[0] in objective for p in pairs)]
    by_name = {c.name: c for c in main + no_persona}
    header = ["system"] + [get_benchmark(b).table1_name for b in obj] + (["Obj. avg."] if obj_avg else [])
    header += [get_benchmark(c.name.removesuffix(PCT)).table1_name for c in pers]
    header += ["Pers. avg."] if pers_avg else []

    def cell(col: _Column | None, line: Table1Line) -> str:
        return "–" if col is None else format_interval(line.value(col))

    def joined(names: Sequence[str], line: Table1Line) -> str:
        return " / ".join(cell(by_name.get(n), line) for n in names)

    mixed = mixes_decodings(line.sampled for line in lines)
    rows: list[list[str]] = []
    section = None
    for line in lines:
        if line.section and line.section != section:
            section = line.section
            rows.append([f"*{section}*"] + [""] * (len(header) - 1))
        row = [marked_name(line.name, line.sampled, mixed)]
        row += [joined([f"{b}/{st}{PCT}" for st in settings], line) for b in obj]
        row += [joined([f"objective/{st}{PCT}" for st in settings], line)] if obj_avg else []
        row += [cell(c, line) for c in pers] + ([cell(pers_avg[0], line)] if pers_avg else [])
        rows.append(row)
    none = PersonaSetting.NONE.value
    for line in lines:
        values = [by_name.get(f"{b}/{none}{PCT}") for b in obj]
        if not any(c is not None and line.value(c) is not None for c in values):
            continue
        row = [marked_name(f"{line.name} (no persona)", line.sampled, mixed)] + [cell(c, line) for c in values]
        row += [cell(by_name.get(f"objective/{none}{PCT}"), line)] if obj_avg else []
        row += ["–"] * (len(pers) + (1 if pers_avg else 0))
        rows.append(row)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + _table1_caption(lines, settings, bool(obj), bool(pers)) + "\n"


def _table1_caption(lines: Sequence[Table1Line], settings: Sequence[str], objective: bool, personalized: bool) -> str:
    """Table 1's caption, naming only the blocks the table has (none: says so, e.g. for runs of the toy task)."""
    if not objective and not personalized:
        return (
            "No Table 1 benchmark in these runs (Table 1's benchmarks: "
            f"{', '.join(table1_benchmarks(Section.OBJECTIVE) + table1_benchmarks(Section.PERSONALIZED))}). "
            "Runs of the toy task have "
            f"their table in {MARKDOWN_FILE}."
        )
    spread = seeds_caption(line.seeds for line in lines)
    parts = ["Accuracy (%)" + (f", averaged over seeds ({spread})" if spread else "")]
    if objective:
        parts.append(
            f'Objective benchmarks: {" / ".join(settings)} persona. "(no persona)" rows: the objective benchmarks '
            "without persona (the paper's No-Persona Upperbound row)"
        )
    if personalized:
        parts.append("Personalized benchmarks: aligned (each user's own persona)")
    marks = decoding_caption(line.sampled for line in lines)
    return ". ".join(parts + ([marks] if marks else [])) + "."


def mode_analysis(cells: Mapping[Cell, tuple[int, float]]) -> tuple[list[str], list[list[Any]]]:
    """Table 8: per (benchmark, setting), accuracy of each forced mode, of free decoding, and the upper bound."""
    pairs, _ = _ordered_cells(cells)
    cols = [Decoding.GENERAL.value, Decoding.PERSONALIZED.value, Decoding.FREE.value, UPPER_BOUND]
    header = ["benchmark", "setting", "items"] + [f"{c}{PCT}" for c in cols]
    lines = []
    for b, s in pairs:
        vals = [cells.get((b, s, c)) for c in cols]
        n = max((v[0] for v in vals if v is not None), default=0)
        lines.append([b, s, n] + [None if v is None else v[1] for v in vals])
    return header, lines


def mode_rates(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Figure 3b: per (decoding, benchmark, setting) of mode-choosing decodings, % of responses per mode."""
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(MODE_NAMES, 0))
    for r in records:
        if r["decoding"] in (Decoding.FREE.value, Decoding.ROUTER.value, Decoding.FREE_CONSTRAINED.value):
            counts[(r["decoding"], r["benchmark"], r["setting"])][r["mode"]] += 1
    rank = _bench_rank()
    keys = sorted(counts, key=lambda k: (LINE_ORDER.index(k[0]), rank.get(k[1], len(rank)), SETTING_ORDER.index(k[2])))
    header = ["decoding", "benchmark", "setting", "items"] + [f"{m}{PCT}" for m in MODE_NAMES]
    lines = []
    for k in keys:
        n = sum(counts[k].values())
        lines.append([*k, n] + [100.0 * counts[k][m] / n for m in MODE_NAMES])
    return header, lines


def mixed_ratio(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Figure 3a: expected accuracy of a mixed set vs the fraction of personalized items, per decoding."""
    obj: dict[str, list[float]] = defaultdict(list)
    pers: dict[str, list[float]] = defaultdict(list)
    personalized = set(benchmark_names(Section.PERSONALIZED))
    for r in records:
        if r["benchmark"] in personalized:
            pers[r["decoding"]].append(float(r["correct"]))
        elif r["setting"] != PersonaSetting.NONE.value:
            obj[r["decoding"]].append(float(r["correct"]))
    decodings = [d for d in LINE_ORDER if obj.get(d) and pers.get(d)]
    header = ["personalized_ratio"] + [f"{d}{PCT}" for d in decodings]
    lines = []
    for ratio in RATIOS:
        lines.append([ratio] + [100.0 * ((1 - ratio) * _mean(obj[d]) + ratio * _mean(pers[d])) for d in decodings])
    return header, lines


_ACC_LABEL = "accuracy (% of items)"


def _bar_series(
    cells: Mapping[Cell, tuple[int, float]], benches: Sequence[str], dec: str
) -> dict[str, tuple[list[int], list[float]]]:
    """Legend label -> (bench indices, accuracies) of one decoding; personalized benchmarks' rows are labelled
    :data:`OWN_PERSONA` (their setting is always "aligned"), objective ones by their setting."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    personalized = set(benchmark_names(Section.PERSONALIZED))
    for s in SETTING_ORDER:
        for i, b in enumerate(benches):
            if (b, s, dec) in cells:
                label = OWN_PERSONA if b in personalized else s
                xs, ys = series.setdefault(label, ([], []))
                xs.append(i)
                ys.append(cells[(b, s, dec)][1])
    order = SETTING_ORDER + [OWN_PERSONA]
    return {k: series[k] for k in sorted(series, key=order.index)}


def mode_rates_figure(rates: tuple[list[str], list[list[Any]]]) -> Any:
    """Figure 3b as a matplotlib figure: stacked bars (0-100 % of responses), legend = the modes that occur."""
    _, lines = rates
    personalized = set(benchmark_names(Section.PERSONALIZED))
    labels = [f"{l[0]}: {l[1]}/{OWN_PERSONA if l[1] in personalized else l[2]}" for l in lines]
    series = [BarSeries(mode, [l[4 + k] for l in lines], COLORS[mode]) for k, mode in enumerate(MODE_NAMES)]
    return hbar_figure(
        labels,
        series,
        stacked=True,
        xlabel="% of responses",
        title="Mode rates (model-chosen mode)",
        empty="no free or router decoding in this run",
    )


def accuracy_figure(cells: Mapping[Cell, tuple[int, float]]) -> Any:
    """Accuracy per benchmark and setting, one panel per decoding (0-100 %), legend = the settings that ran."""
    plt = pyplot()
    pairs, decodings = _ordered_cells(cells)
    fig, axes = plt.subplots(max(len(decodings), 1), 1, figsize=(9, 2.6 * max(len(decodings), 1)), squeeze=False)
    benches = list(dict.fromkeys(b for b, _ in pairs))
    width = 0.8 / len(SETTING_ORDER)
    for ax, dec in zip(axes[:, 0], decodings):
        series = _bar_series(cells, benches, dec)
        for k, (label, (xs, ys)) in enumerate(series.items()):
            offset = (k - (len(series) - 1) / 2) * width
            bars = ax.bar([x + offset for x in xs], ys, width=width, label=label, color=COLORS[label])
            ax.bar_label(bars, fmt="%.0f", fontsize=6)
        ax.set_xticks(range(len(benches)), benches, fontsize=8)
        ax.set_ylabel(_ACC_LABEL, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(dec, fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    if not decodings:
        no_data(axes[0, 0], "no predictions")
    fig.tight_layout()
    return fig


def mixed_ratio_figure(mixed: tuple[list[str], list[list[Any]]]) -> Any:
    """Figure 3a: accuracy (0-100 %) vs fraction of personalized items (0-1), one line per decoding."""
    plt = pyplot()
    header, lines = mixed
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, name in enumerate(header[1:], start=1):
        ax.plot([l[0] for l in lines], [l[j] for l in lines], marker="o", label=name.removesuffix(PCT))
    ax.set_xlabel("fraction of personalized items")
    ax.set_ylabel(_ACC_LABEL)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 100)
    ax.set_title("Mixed-task accuracy vs personalization ratio")
    if len(header) > 1:
        ax.legend(fontsize=8)
    else:
        no_data(ax, "needs objective rows with a persona and a personalized benchmark")
    return fig


def _plots(folder: Path, cells: Mapping[Cell, tuple[int, float]], rates: Any, mixed: Any) -> list[Path]:
    plt = pyplot()
    written = []
    for name, fig in (
        ("mode_rates", mode_rates_figure(rates)),
        ("accuracy_by_setting", accuracy_figure(cells)),
        ("mixed_ratio", mixed_ratio_figure(mixed)),
    ):
        written.append(save_figure(fig, folder / f"{name}.png"))
        plt.close(fig)
    return written


def judge_agreement(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Rule-vs-judge agreement per benchmark, over the records the judge was asked about (module docstring).
    ``graded`` = responses with a judge verdict; ``agreement_%``, ``rule_%`` and ``judge_%`` are over those."""
    by_bench: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if "judge_correct" in r:
            by_bench[r["benchmark"]].append(r)
    rank = _bench_rank()
    header = [
        "benchmark",
        "responses",
        "graded",
        f"rule{PCT}",
        f"judge{PCT}",
        f"agreement{PCT}",
        "judge_only_correct",
        "rule_only_correct",
    ]
    lines = []
    for bench in sorted(by_bench, key=rank.__getitem__):
        recs = by_bench[bench]
        graded = [(float(r["rule_correct"]), float(r["judge_correct"])) for r in recs if r["judge_correct"] is not None]
        if not graded:
            lines.append([bench, len(recs), 0, None, None, None, 0, 0])
            continue
        lines.append(
            [
                bench,
                len(recs),
                len(graded),
                100.0 * _mean([r for r, _ in graded]),
                100.0 * _mean([j for _, j in graded]),
                100.0 * _mean([float(r == j) for r, j in graded]),
                sum(j > r for r, j in graded),
                sum(r > j for r, j in graded),
            ]
        )
    return header, lines


def _write_table1(folder: Path, lines: Sequence[Table1Line]) -> list[Path]:
    header, rows = table1(lines)
    csv_path, md_path = folder / "table1.csv", folder / "table1.md"
    atomic_write_text(csv_path, csv_table(header, rows))
    atomic_write_text(md_path, table1_markdown(lines))
    return [csv_path, md_path]


def write_report(run_dir: Path) -> list[Path]:
    """Every table and plot of one run directory, one run or a multi-seed run (module docstring); returns the
    written paths."""
    run_dir = Path(run_dir)
    parts = read_run(run_dir)
    per_seed = [accuracy_cells(recs) for recs in parts]
    cells = seed_cells(per_seed)
    records = [r for recs in parts for r in recs]
    tables, plots = run_dir / "tables", run_dir / "plots"
    rates, mixed = mode_rates(records), mixed_ratio(records)
    written = _write_table1(tables, _table1_lines({"": per_seed}))
    if has_toy_rows(parts):
        toy = [toy_part(recs, d) for recs, d in zip(parts, run_parts(run_dir))]
        written += write_toy_table(tables, run_lines("", toy))
    written += write_table(tables, "mode_analysis", mode_analysis(cells))
    written += write_table(tables, "mode_rates", rates)
    written += write_table(tables, "mixed_ratio", mixed, md=False)
    agreement = judge_agreement(records)
    if agreement[1]:
        written += write_table(tables, "judge_agreement", agreement)
    written += _plots(plots, cells, rates, mixed)
    return written


@dataclass(frozen=True)
class ComparedRun:
    """One run given to ``compare``: its label and directory, and the Table 1 system it stands for (``--system``)
    or None (``--run``: one line per decoding)."""

    label: str
    path: Path
    system: System | None = None


def run_sampled(path: Path) -> bool:
    """Whether a run directory (any seed of a multi-seed run) decoded at a temperature > 0 (its ``run_config.json``'s
    ``decoding.temperature``; a run without one: greedy)."""
    configs = [d / "run_config.json" for d in (run_parts(path) or [path])]
    return any(
        json.loads(c.read_text(encoding="utf-8")).get("decoding", {}).get("temperature", 0) > 0
        for c in configs
        if c.is_file()
    )


def _run_prompt_style(path: Path) -> str | None:
    """The prompt style a run directory (or the first seed of a multi-seed run) was generated with."""
    parts = run_parts(path)
    config = (parts[0] if parts else path) / "run_config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("prompt_style") if config.is_file() else None


def _comparison(runs: Sequence[ComparedRun]) -> tuple[list[Table1Line], list[ToyLine]]:
    """Table 1 lines and toy-table lines of the runs given to ``compare`` (:func:`comparison_lines`)."""
    read = {r.label: read_complete_run(r.label, r.path) for r in runs}
    lines: list[Table1Line] = []
    toy: list[ToyLine] = []
    order = systems()
    for r in sorted(runs, key=lambda r: -1 if r.system is None else order.index(r.system)):
        per_seed = [accuracy_cells(recs) for recs in read[r.label]]
        parts = [toy_part(recs, d) for recs, d in zip(read[r.label], run_parts(r.path))]
        sampled = run_sampled(r.path)
        if r.system is None:
            lines += _table1_lines({r.label: per_seed}, sampled)
            toy += run_lines(r.label, parts, sampled)
            continue
        spec = r.system
        where = f"system {spec.name!r} ({r.path})"
        if not any(c[2] == spec.decoding.value for cells in per_seed for c in cells):
            raise IncompleteRunError(
                f"{where}: no {spec.decoding.value!r} decoding; evaluate it with `eval run --system {spec.name}`"
            )
        style = _run_prompt_style(r.path)
        if style != spec.prompt_style.value:
            raise PreflightError(
                f"{where}: generated with prompt style {style!r}, but {spec.label} uses {spec.prompt_style.value!r}; "
                f"evaluate it with `eval run --system {spec.name}`"
            )
        lines.append(Table1Line(r.label, spec.decoding.value, per_seed, spec.section, sampled))
        toy.append(ToyLine(r.label, spec.decoding.value, parts, spec.section, sampled))
    return lines, [line for line in toy if line.items]


def comparison_lines(runs: Sequence[ComparedRun]) -> list[Table1Line]:
    """Table 1 lines of the runs given to ``compare`` (module docstring), every run checked complete first; system
    lines in the paper's order. Raises IncompleteRunError (also for a system run that lacks its decoding), or
    PreflightError for a system run generated with another prompt style."""
    return _comparison(runs)[0]


def write_comparison(runs: Sequence[ComparedRun], out_dir: Path) -> list[Path]:
    """Table 1 of several runs side by side (:func:`comparison_lines`) under ``out_dir``, and the toy table when the
    runs hold toy rows; everything is checked before anything is written."""
    lines, toy = _comparison(runs)
    written = _write_table1(Path(out_dir), lines)
    return written + (write_toy_table(Path(out_dir), toy) if toy else [])
