"""Tables (Markdown + CSV) and plots (PNG) from ``predictions.jsonl``; also a side-by-side of several runs.

All numbers are percentages of items (micro-averaged within a cell), written with 2 decimals in Markdown and
4 in CSV; every percentage column's name ends in ``_%`` (item counts are in ``items``, ratios in
``personalized_ratio``). Cells:

- accuracy of (benchmark, setting, decoding) = mean ``correct`` over its rows;
- ``upper_bound`` (Table 8) of (benchmark, setting) = mean over the rows evaluated in both forced modes of
  "correct in general or in personalized mode"; so it is >= each forced mode on the same rows.

Files under ``<run>/tables`` (and ``plots``):

- ``table1.{md,csv}``, Table 1 layout: one line per decoding (``free``, ``general``, ``personalized``,
  ``router``, then ``upper_bound``); a column per objective benchmark x persona setting (``mmlu_pro/unaligned_%``,
  ...), one per personalized benchmark; then ``objective/<setting>_%`` = mean of that setting's objective columns,
  ``personalized_%`` = mean of the personalized columns, ``average_%`` = mean of all benchmark columns (macro).
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

``compare`` writes ``table1.{md,csv}`` for several runs, one line per (run label, decoding), after checking that
every run is complete (:func:`read_complete_run`).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.atomic import atomic_write_bytes, atomic_write_text
from verl_personadual.eval.benchmarks import (
    BENCHMARKS,
    OBJECTIVE_BENCHMARKS,
    PERSONALIZED_BENCHMARKS,
)
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.personas import read_eval_set
from verl_personadual.eval.store import read_predictions
from verl_personadual.prompts import PersonaSetting

__all__ = [
    "IncompleteRunError",
    "read_complete_run",
    "UPPER_BOUND",
    "accuracy_cells",
    "table1",
    "mode_analysis",
    "mode_rates",
    "mixed_ratio",
    "write_report",
    "write_comparison",
    "mode_rates_figure",
    "accuracy_figure",
    "mixed_ratio_figure",
    "RATIOS",
]

logger = logging.getLogger(__name__)

UPPER_BOUND = "upper_bound"
LINE_ORDER = [d.value for d in Decoding] + [UPPER_BOUND]
SETTING_ORDER = [s.value for s in PersonaSetting]
MODE_NAMES = ("general", "personalized", "unknown")
RATIOS = [round(i / 10, 1) for i in range(11)]
_OBJ = {b.value for b in OBJECTIVE_BENCHMARKS}
_PERS = {b.value for b in PERSONALIZED_BENCHMARKS}

Cell = tuple[str, str, str]  # (benchmark, setting, decoding)
PCT = "_%"  # suffix of every percentage column
#: Legend label of the personalized benchmarks' own user personas (their rows carry setting "aligned").
OWN_PERSONA = "own persona"


class IncompleteRunError(ValueError):
    """A run directory that is missing or unfinished; the message names it."""


def read_complete_run(label: str, run_dir: Path) -> list[dict[str, Any]]:
    """The predictions of a finished run: ``eval_set.jsonl`` and ``predictions.jsonl`` exist, and every decoding in
    the predictions has a record for every row of the eval set; else :class:`IncompleteRunError`."""
    run_dir = Path(run_dir)
    where = f"run {label!r} ({run_dir})"
    if not run_dir.is_dir():
        raise IncompleteRunError(f"{where}: no such directory")
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


def _ordered_cells(cells: Mapping[Cell, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    pairs = {(b, s) for b, s, _ in cells}
    bench_rank = {b.value: i for i, b in enumerate(BENCHMARKS)}
    ordered = sorted(pairs, key=lambda p: (bench_rank.get(p[0], len(bench_rank)), SETTING_ORDER.index(p[1])))
    lines = [d for d in LINE_ORDER if any(c[2] == d for c in cells)]
    return ordered, lines


def _acc(cells: Mapping[Cell, tuple[int, float]], pair: tuple[str, str], decoding: str) -> float | None:
    hit = cells.get((pair[0], pair[1], decoding))
    return None if hit is None else hit[1]


def table1(runs: Mapping[str, Mapping[Cell, tuple[int, float]]]) -> tuple[list[str], list[list[Any]]]:
    """Header and lines of Table 1 (module docstring) for ``{label: cells}``; the first column is the line name
    (``<label>:<decoding>``, or ``<decoding>`` when the label is empty). Missing cells are None."""
    union: dict[Cell, Any] = {c: v for cells in runs.values() for c, v in cells.items()}
    pairs, _ = _ordered_cells(union)
    obj_cols = [p for p in pairs if p[0] in _OBJ]
    pers_cols = [p for p in pairs if p[0] in _PERS]
    obj_settings = [s for s in SETTING_ORDER if any(p[1] == s for p in obj_cols)]
    header = ["system"] + [f"{b}/{s}{PCT}" for b, s in obj_cols] + [f"{b}{PCT}" for b, _ in pers_cols]
    header += [f"objective/{s}{PCT}" for s in obj_settings] + ([f"personalized{PCT}"] if pers_cols else [])
    header += [f"average{PCT}"]
    lines: list[list[Any]] = []
    for label, cells in runs.items():
        _, decodings = _ordered_cells(cells)
        for dec in decodings:
            obj = [_acc(cells, p, dec) for p in obj_cols]
            pers = [_acc(cells, p, dec) for p in pers_cols]
            avgs: list[float | None] = []
            for s in obj_settings:
                vals = [v for p, v in zip(obj_cols, obj) if p[1] == s and v is not None]
                avgs.append(_mean(vals) if vals else None)
            if pers_cols:
                vals = [v for v in pers if v is not None]
                avgs.append(_mean(vals) if vals else None)
            every = [v for v in obj + pers if v is not None]
            avgs.append(_mean(every) if every else None)
            lines.append([f"{label}:{dec}" if label else dec] + obj + pers + avgs)
    return header, lines


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
    rank = {b.value: i for i, b in enumerate(BENCHMARKS)}
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
    for r in records:
        if r["benchmark"] in _PERS:
            pers[r["decoding"]].append(float(r["correct"]))
        elif r["setting"] != PersonaSetting.NONE.value:
            obj[r["decoding"]].append(float(r["correct"]))
    decodings = [d for d in LINE_ORDER if obj.get(d) and pers.get(d)]
    header = ["personalized_ratio"] + [f"{d}{PCT}" for d in decodings]
    lines = []
    for ratio in RATIOS:
        lines.append([ratio] + [100.0 * ((1 - ratio) * _mean(obj[d]) + ratio * _mean(pers[d])) for d in decodings])
    return header, lines


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v, 2) for v in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def _csv(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_fmt(v, 4) for v in line] for line in lines])
    return buf.getvalue()


def _write_table(folder: Path, name: str, table: tuple[list[str], list[list[Any]]], md: bool = True) -> list[Path]:
    header, lines = table
    paths = [folder / f"{name}.csv"]
    atomic_write_text(paths[0], _csv(header, lines))
    if md:
        paths.append(folder / f"{name}.md")
        atomic_write_text(paths[1], _markdown(header, lines))
    return paths


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


#: Fixed colours, so that a mode or setting looks the same in every plot and run.
_COLORS = {
    "general": "tab:blue", "personalized": "tab:orange", "unknown": "tab:gray",
    PersonaSetting.NONE.value: "tab:green", PersonaSetting.UNALIGNED.value: "tab:purple",
    PersonaSetting.ALIGNED.value: "tab:red", OWN_PERSONA: "tab:brown",
}
_ACC_LABEL = "accuracy (% of items)"


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"nothing to plot: {what}", ha="center", va="center", transform=ax.transAxes, fontsize=9)


def _bar_series(cells: Mapping[Cell, tuple[int, float]], benches: Sequence[str], dec: str) -> dict[str, tuple[list[int], list[float]]]:
    """Legend label -> (bench indices, accuracies) of one decoding; personalized benchmarks' rows are labelled
    :data:`OWN_PERSONA` (their setting is always "aligned"), objective ones by their setting."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for s in SETTING_ORDER:
        for i, b in enumerate(benches):
            if (b, s, dec) in cells:
                label = OWN_PERSONA if b in _PERS else s
                xs, ys = series.setdefault(label, ([], []))
                xs.append(i)
                ys.append(cells[(b, s, dec)][1])
    order = SETTING_ORDER + [OWN_PERSONA]
    return {k: series[k] for k in sorted(series, key=order.index)}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mode_rates_figure(rates: tuple[list[str], list[list[Any]]]) -> Any:
    """Figure 3b as a matplotlib figure: stacked bars (0-100 % of responses), legend = the modes that occur."""
    plt = _pyplot()
    _, lines = rates
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(lines), 2) + 1.2))
    labels = [f"{l[0]}: {l[1]}/{OWN_PERSONA if l[1] in _PERS else l[2]}" for l in lines]
    left = [0.0] * len(lines)
    for k, mode in enumerate(MODE_NAMES):
        vals = [l[4 + k] for l in lines]
        if any(vals):
            ax.barh(labels, vals, left=left, label=mode, color=_COLORS[mode])
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("% of responses")
    ax.set_xlim(0, 100)
    ax.set_title("Mode rates (model-chosen mode)")
    if lines:
        ax.invert_yaxis()
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    else:
        _no_data(ax, "no free or router decoding in this run")
    return fig


def accuracy_figure(cells: Mapping[Cell, tuple[int, float]]) -> Any:
    """Accuracy per benchmark and setting, one panel per decoding (0-100 %), legend = the settings that ran."""
    plt = _pyplot()
    pairs, decodings = _ordered_cells(cells)
    fig, axes = plt.subplots(max(len(decodings), 1), 1, figsize=(9, 2.6 * max(len(decodings), 1)), squeeze=False)
    benches = list(dict.fromkeys(b for b, _ in pairs))
    width = 0.8 / len(SETTING_ORDER)
    for ax, dec in zip(axes[:, 0], decodings):
        series = _bar_series(cells, benches, dec)
        for k, (label, (xs, ys)) in enumerate(series.items()):
            offset = (k - (len(series) - 1) / 2) * width
            bars = ax.bar([x + offset for x in xs], ys, width=width, label=label, color=_COLORS[label])
            ax.bar_label(bars, fmt="%.0f", fontsize=6)
        ax.set_xticks(range(len(benches)), benches, fontsize=8)
        ax.set_ylabel(_ACC_LABEL, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(dec, fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    if not decodings:
        _no_data(axes[0, 0], "no predictions")
    fig.tight_layout()
    return fig


def mixed_ratio_figure(mixed: tuple[list[str], list[list[Any]]]) -> Any:
    """Figure 3a: accuracy (0-100 %) vs fraction of personalized items (0-1), one line per decoding."""
    plt = _pyplot()
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
        _no_data(ax, "needs objective rows with a persona and a personalized benchmark")
    return fig


def _plots(folder: Path, cells: Mapping[Cell, tuple[int, float]], rates: Any, mixed: Any) -> list[Path]:
    plt = _pyplot()
    written = []
    for name, fig in (
        ("mode_rates", mode_rates_figure(rates)),
        ("accuracy_by_setting", accuracy_figure(cells)),
        ("mixed_ratio", mixed_ratio_figure(mixed)),
    ):
        written.append(_save(fig, folder / f"{name}.png"))
        plt.close(fig)
    return written


def write_report(run_dir: Path) -> list[Path]:
    """Every table and plot of one run directory (module docstring); returns the written paths."""
    run_dir = Path(run_dir)
    records = read_predictions(run_dir / "predictions.jsonl")
    cells = accuracy_cells(records)
    tables, plots = run_dir / "tables", run_dir / "plots"
    rates, mixed = mode_rates(records), mixed_ratio(records)
    written = _write_table(tables, "table1", table1({"": cells}))
    written += _write_table(tables, "mode_analysis", mode_analysis(cells))
    written += _write_table(tables, "mode_rates", rates)
    written += _write_table(tables, "mixed_ratio", mixed, md=False)
    written += _plots(plots, cells, rates, mixed)
    return written


def write_comparison(runs: Mapping[str, Path], out_dir: Path) -> list[Path]:
    """Table 1 of several runs side by side (one line per label and decoding) under ``out_dir``; every run must be
    complete (:func:`read_complete_run`), checked before anything is written."""
    cells = {label: accuracy_cells(read_complete_run(label, Path(d))) for label, d in runs.items()}
    return _write_table(Path(out_dir), "table1", table1(cells))
