"""The toy task's Table 1 (``table1_toy.{md,csv}``): accuracy per kind of toy row, mode selection and P(better mode).

The toy task (``verl_personadual.data.toy``, benchmark ``toy``) has four kinds of rows (``task``): ``none`` (no
persona), ``misleading`` (unaligned persona, gold = the book: general mode is right), ``helpful`` (aligned persona,
gold = the persona: personalized mode is right) and ``agreeing`` (aligned persona that agrees with the book: both
modes are right). A line reads one decoding of one run (:class:`ToyLine`). Every column is computed on each *part*
of the run (each ``seed_<s>`` sub-run of a multi-seed run, or the run itself) from its ``toy`` records only:

- ``no_persona_%``: accuracy (% correct) of the line's decoding over rows with setting ``none``;
- ``objective/unaligned_%``: the same over rows of task ``misleading``;
- ``objective/aligned_%``: the same over rows of task ``agreeing``;
- ``personalized_%``: the same over rows of task ``helpful``;
- ``selection_%``: only when the part has both forced decodings (``general`` and ``personalized``) and the line's
  decoding is not itself forced (``free``, ``router``, ``free_constrained``: its records' ``mode`` is
  general / personalized / unknown): over the *decisive* rows (exactly one of the row's forced general and forced
  personalized records is correct; its *better mode* is that one), the % whose line-decoding record's ``mode``
  equals the better mode (an ``unknown`` mode never does); else None;
- ``p_better``: only when the part has ``mode_probs.jsonl`` (``eval mode-probs`` records: ``row_id``,
  ``p_general``, ``p_personalized``, the probability of each mode's token as the first response token) holding
  every decisive row: the mean over the same decisive rows of ``p_<better mode>``, a probability in [0, 1] (not a
  %); else None;
- ``seeds``: the number of parts; ``items``: rows of the line's decoding per part (the fewest over the parts,
  which differ only in an unfinished run).

A value column is reported as the mean over the parts that have it, with the sample std and the half-width of the
two-sided 95 % Student-t interval over them (``intervals.mean_interval``; std and half-width None with one part).
CSV: ``system`` (and ``section`` for system comparisons), then ``<col>``, ``<col>_std``, ``<col>_ci95`` for every
value column, then ``seeds`` and ``items`` (4 decimals). Markdown: one line per line, section rows in italics as
Table 1 has them, cells "mean ± half-width" (the mean alone with one part; 2 decimals, ``p_better`` 3), followed by
"(k of N seeds)" when only k of the line's N parts measure the column, "–" for None, then a one-line caption defining
the columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.core.modes import Mode, mode_name
from verl_personadual.core.prompts import DataSource, PersonaSetting
from verl_personadual.data.toy import ToyKind
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
from verl_personadual.eval.plots import PCT, csv_table
from verl_personadual.eval.pools import outcomes
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils.atomic import atomic_write_text

__all__ = [
    "TOY",
    "MODE_PROBS",
    "CSV_FILE",
    "MARKDOWN_FILE",
    "COLUMNS",
    "ToyPart",
    "ToyLine",
    "toy_part",
    "has_toy_rows",
    "better_modes",
    "part_values",
    "run_lines",
    "toy_table",
    "toy_markdown",
    "write_toy_table",
]

#: The toy task's benchmark name.
TOY = DataSource.TOY.value
#: The files :func:`write_toy_table` writes.
CSV_FILE, MARKDOWN_FILE = "table1_toy.csv", "table1_toy.md"
#: A part's mode-probability file (``eval mode-probs``'s record format).
MODE_PROBS = "mode_probs.jsonl"
NO_PERSONA = f"no_persona{PCT}"
UNALIGNED = f"objective/unaligned{PCT}"
ALIGNED = f"objective/aligned{PCT}"
PERSONALIZED = f"personalized{PCT}"
SELECTION = f"selection{PCT}"
P_BETTER = "p_better"
#: Value columns, in table order (module docstring).
COLUMNS: tuple[str, ...] = (NO_PERSONA, UNALIGNED, ALIGNED, PERSONALIZED, SELECTION, P_BETTER)
#: Accuracy column -> the toy task kind (``task``) of its rows; ``no_persona_%`` selects by setting instead.
TASK_OF = {UNALIGNED: ToyKind.MISLEADING, ALIGNED: ToyKind.AGREEING, PERSONALIZED: ToyKind.HELPFUL}
MARKDOWN_NAMES = {
    NO_PERSONA: "no persona",
    UNALIGNED: "unaligned (misleading)",
    ALIGNED: "aligned (agreeing)",
    PERSONALIZED: "personalized (helpful)",
    SELECTION: "selection",
    P_BETTER: "P(better)",
}


@dataclass(frozen=True)
class ToyPart:
    """One part of a run (module docstring): its ``toy`` prediction records, and its mode probabilities
    (row_id -> ``mode_probs.jsonl`` record) or None when it has no such file."""

    records: Sequence[Mapping[str, Any]]
    mode_probs: Mapping[str, Mapping[str, Any]] | None = None


def toy_part(records: Iterable[Mapping[str, Any]], part_dir: Path) -> ToyPart:
    """The :class:`ToyPart` of a part directory from its prediction records (only the ``toy`` ones are kept) and
    its ``mode_probs.jsonl`` when there is one."""
    probs_path = Path(part_dir) / MODE_PROBS
    probs = {str(r["row_id"]): r for r in read_predictions(probs_path)} if probs_path.is_file() else None
    return ToyPart([r for r in records if r["benchmark"] == TOY], probs)


def has_toy_rows(parts: Iterable[Iterable[Mapping[str, Any]]]) -> bool:
    """Whether any part's prediction records hold a row of the toy task."""
    return any(r["benchmark"] == TOY for recs in parts for r in recs)


def _accuracy(records: Sequence[Mapping[str, Any]]) -> float | None:
    return 100.0 * sum(float(r["correct"]) for r in records) / len(records) if records else None


def better_modes(records: Iterable[Mapping[str, Any]]) -> dict[str, Mode]:
    """row_id -> better mode of the decisive rows: exactly one of the row's forced general / forced personalized
    records is correct (``pools.outcomes``), the better mode is that one."""
    return {row_id: Mode.GENERAL if g else Mode.PERSONALIZED for row_id, (g, p) in outcomes(records).items() if g != p}


def part_values(part: ToyPart, decoding: str) -> dict[str, float | None]:
    """Every value column of ``decoding`` on one part (module docstring); None where it is not measured."""
    own = [r for r in part.records if r["decoding"] == decoding]
    values: dict[str, float | None] = {
        NO_PERSONA: _accuracy([r for r in own if r["setting"] == PersonaSetting.NONE.value])
    }
    for column, task in TASK_OF.items():
        values[column] = _accuracy([r for r in own if r["task"] == task])
    better = better_modes(part.records)
    by_row = {str(r["row_id"]): r for r in own}
    chose = [float(by_row[row_id]["mode"] == mode_name(m)) for row_id, m in better.items() if row_id in by_row]
    choosing = Decoding(decoding).forced_mode is None
    values[SELECTION] = 100.0 * sum(chose) / len(chose) if choosing and chose else None
    probs = part.mode_probs
    measured = probs is not None and better and all(row_id in probs for row_id in better)
    p_better = [float(probs[row_id][f"p_{mode_name(m)}"]) for row_id, m in better.items()] if measured else []
    values[P_BETTER] = sum(p_better) / len(p_better) if p_better else None
    return values


@dataclass(frozen=True)
class ToyLine:
    """One line of the toy table: its name, the decoding it reads, its run's parts, its section (system
    comparisons), and whether its run sampled (temperature > 0) or decoded greedily."""

    name: str
    decoding: str
    parts: Sequence[ToyPart]
    section: str = ""
    sampled: bool = False

    def value(self, column: str) -> Interval | None:
        """The column's mean over the parts that have it, with std and 95 % half-width; None when none has it."""
        vals = [v for v in (part_values(p, self.decoding)[column] for p in self.parts) if v is not None]
        return mean_interval(vals) if vals else None

    @property
    def seeds(self) -> int:
        return len(self.parts)

    @property
    def items(self) -> int:
        return min((sum(r["decoding"] == self.decoding for r in p.records) for p in self.parts), default=0)


def run_lines(label: str, parts: Sequence[ToyPart], sampled: bool = False) -> list[ToyLine]:
    """One line per decoding in the parts' records (in ``Decoding`` order), named ``<label>:<decoding>``, or
    ``<decoding>`` when the label is empty (as Table 1 names a run's lines)."""
    present = {r["decoding"] for p in parts for r in p.records}
    decodings = [d for d in (x.value for x in Decoding) if d in present]
    return [ToyLine(f"{label}:{d}" if label else d, d, parts, sampled=sampled) for d in decodings]


def toy_table(lines: Sequence[ToyLine]) -> tuple[list[str], list[list[Any]]]:
    """Header and lines of ``table1_toy.csv`` (module docstring)."""
    with_section = any(line.section for line in lines)
    with_sampling = mixes_decodings(line.sampled for line in lines)
    header = ["system"] + (["section"] if with_section else []) + (["sampling"] if with_sampling else [])
    header += [name for c in COLUMNS for name in (c, c + STD, c + CI95)] + ["seeds", "items"]
    out = []
    for line in lines:
        row: list[Any] = [line.name] + ([line.section] if with_section else [])
        row += [("sampled" if line.sampled else "greedy")] if with_sampling else []
        for column in COLUMNS:
            v = line.value(column)
            row += [None, None, None] if v is None else [v.mean, v.std, v.half_width]
        out.append(row + [line.seeds, line.items])
    return header, out


def _cell(line: ToyLine, column: str) -> str:
    """A Markdown cell: :func:`intervals.format_interval`, plus "(k of N seeds)" when only k of the line's N parts
    measure the column (e.g. selection where only some seeds have decisive rows)."""
    value = line.value(column)
    cell = format_interval(value, 3 if column == P_BETTER else 2)
    return cell if value is None or value.n == line.seeds else f"{cell} ({value.n} of {line.seeds} seeds)"


def toy_markdown(lines: Sequence[ToyLine]) -> str:
    """``table1_toy.md`` (module docstring)."""
    header = ["system"] + [MARKDOWN_NAMES[c] for c in COLUMNS] + ["seeds", "items"]
    mixed = mixes_decodings(line.sampled for line in lines)
    rows: list[list[str]] = []
    section = None
    for line in lines:
        if line.section and line.section != section:
            section = line.section
            rows.append([f"*{section}*"] + [""] * (len(header) - 1))
        cells = [_cell(line, c) for c in COLUMNS]
        rows.append([marked_name(line.name, line.sampled, mixed), *cells, str(line.seeds), str(line.items)])
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    spread = seeds_caption(line.seeds for line in lines)
    caption = (
        "Toy task, accuracy (%) of each line's decoding: no persona (setting none), unaligned (misleading persona, "
        "gold = the book), aligned (agreeing persona), personalized (helpful persona, gold = the persona); "
        "selection: % of decisive rows (exactly one forced mode correct) whose response opened that better mode; "
        "P(better): mean probability of the better mode's token on those rows (mode_probs.jsonl); "
        + (f"{spread}; " if spread else "one seed; ")
        + "– = not measured."
        + (f" {marks}." if (marks := decoding_caption(line.sampled for line in lines)) else "")
    )
    return "\n".join(out) + "\n\n" + caption + "\n"


def write_toy_table(folder: Path, lines: Sequence[ToyLine]) -> list[Path]:
    """Write ``table1_toy.csv`` and ``table1_toy.md`` under ``folder``; returns their paths."""
    csv_path, md_path = Path(folder) / CSV_FILE, Path(folder) / MARKDOWN_FILE
    atomic_write_text(csv_path, csv_table(*toy_table(lines)))
    atomic_write_text(md_path, toy_markdown(lines))
    return [csv_path, md_path]
