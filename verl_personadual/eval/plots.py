"""Public table and figure helpers shared by the report and the analyses: Markdown / CSV tables written
side by side (:func:`write_table`), a headless matplotlib (:func:`pyplot`), figures saved atomically
(:func:`save_figure`), the shared colours and the percentage-column suffix :data:`PCT`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.utils.atomic import atomic_write_bytes, atomic_write_text

#: Legend label of the personalized benchmarks' own user personas (their rows carry setting "aligned").
OWN_PERSONA = "own persona"
PCT = "_%"  # suffix of every percentage column


def format_value(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(format_value(v, 2) for v in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def csv_table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[format_value(v, 4) for v in line] for line in lines])
    return buf.getvalue()


def write_table(folder: Path, name: str, table: tuple[list[str], list[list[Any]]], md: bool = True) -> list[Path]:
    header, lines = table
    paths = [folder / f"{name}.csv"]
    atomic_write_text(paths[0], csv_table(header, lines))
    if md:
        paths.append(folder / f"{name}.md")
        atomic_write_text(paths[1], markdown_table(header, lines))
    return paths


def save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


#: Fixed colours, so that a mode or setting looks the same in every plot and run.
COLORS = {
    "general": "tab:blue",
    "personalized": "tab:orange",
    "unknown": "tab:gray",
    PersonaSetting.NONE.value: "tab:green",
    PersonaSetting.UNALIGNED.value: "tab:purple",
    PersonaSetting.ALIGNED.value: "tab:red",
    OWN_PERSONA: "tab:brown",
}


def no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"nothing to plot: {what}", ha="center", va="center", transform=ax.transAxes, fontsize=9)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class BarSeries:
    """One colour of a horizontal bar figure: a value per figure label (None: no bar there), its legend entry, and
    optional text next to each bar."""

    label: str
    values: Sequence[float | None]
    color: str
    annotations: Sequence[str] | None = None


def hbar_figure(
    labels: Sequence[str],
    series: Sequence[BarSeries],
    *,
    xlabel: str,
    title: str,
    empty: str,
    stacked: bool = False,
    xlim: tuple[float, float] | None = (0.0, 100.0),
    width: float = 8.0,
    row_height: float = 0.35,
    legend_outside: bool = True,
) -> Any:
    """Horizontal bars, one row per label (first label on top): side by side per series, or ``stacked`` (each
    series starts where the previous ended; a series that is zero everywhere is left out of the legend). With no
    labels the axes say ``nothing to plot: <empty>``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, row_height * max(len(labels), 2) + 1.2))
    rows = list(range(len(labels)))
    left = [0.0] * len(labels)
    for s in series:
        vals = [0.0 if v is None else float(v) for v in s.values]
        shown = [i for i, v in enumerate(s.values) if v is not None and (not stacked or v)]
        if shown and (not stacked or any(vals)):
            bars = ax.barh(
                [rows[i] for i in shown],
                [vals[i] for i in shown],
                color=s.color,
                label=s.label,
                left=[left[i] for i in shown] if stacked else None,
            )
            if s.annotations is not None:
                ax.bar_label(bars, labels=[s.annotations[i] for i in shown], fontsize=7, padding=2)
        if stacked:
            left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(rows, list(labels))
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if labels:
        ax.invert_yaxis()
        if legend_outside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        else:
            ax.legend(loc="lower right", fontsize=8)
    else:
        no_data(ax, empty)
    return fig
