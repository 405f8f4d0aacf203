"""Pre-registered claims on a multi-seed toy table, decided per training seed, with the per-seed values and plots.

Inputs are per-seed values of toy-table lines (:class:`SeedValues`: a line key, a training seed, every
``toy_table.COLUMNS`` value of the line's decoding on that seed, and its decisive-row count) and, for claims on
training curves, each line's verl file-logger curves per seed (``metric -> [(step, value)]``). A claim is one of

- :class:`Greater` ("A > B on column X"): per seed d_S = A_S - B_S; *confirmed* when d_S > 0 in every seed and the
  exact one-sided sign test over the seeds, ties and missing values counted against (k = seeds with d_S > 0 of the
  n seeds, p = P(Bin(n, 1/2) >= k)), gives p <= :data:`ALPHA` (five seeds: k = 5, p = 1/32 = 0.031);
- :class:`Within` (every seed's value of each listed column within [low, high]);
- :class:`WithinOf` (every seed: A_S <= B_S + offset);
- :class:`CurveAtMost` (every seed: every logged step's value of a training metric <= bound).

A claim lists the setting checks it rests on (``rests_on``: ids of other claims); if one of them is not confirmed,
the claim is *untestable here*, not refuted. Column :data:`HELPFUL_MISLEADING` is the mean of the personalized
(helpful) and unaligned (misleading) accuracies. :func:`write_evidence` writes ``per_seed.csv`` (one row per line
and seed), ``claims.{md,csv}``, ``strip.png`` (each seed's value per line and column) and ``dynamics.png``
(training curves per variant, a line per seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

from scipy.stats import binom

from verl_personadual.eval.plots import csv_table, no_data, pyplot, save_figure
from verl_personadual.eval.toy_table import (
    COLUMNS,
    MARKDOWN_NAMES,
    P_BETTER,
    PERSONALIZED,
    UNALIGNED,
    ToyPart,
    better_modes,
    part_values,
)
from verl_personadual.utils.atomic import atomic_write_text

__all__ = [
    "ALPHA",
    "HELPFUL_MISLEADING",
    "Claim",
    "ClaimResult",
    "CurveAtMost",
    "Curves",
    "Greater",
    "Panel",
    "SeedValues",
    "Within",
    "WithinOf",
    "claims_markdown",
    "claims_table",
    "decide",
    "dynamics_figure",
    "per_seed_table",
    "seed_values",
    "sign_test_p",
    "strip_figure",
    "write_evidence",
]

#: Level of the sign test: a :class:`Greater` claim needs p <= ALPHA (and d_S > 0 in every seed).
ALPHA = 0.05
#: Derived column: mean of personalized (helpful) and unaligned (misleading) accuracy, in %.
HELPFUL_MISLEADING = "helpful+misleading_%"
NAMES = {**MARKDOWN_NAMES, HELPFUL_MISLEADING: "helpful+misleading"}
CONFIRMED, NOT_CONFIRMED = "confirmed", "not confirmed"

#: ``metric -> [(step, value), ...]`` of one run (``quickstart.report.metric_curves``).
Curves = Mapping[str, Sequence[tuple[int, float]]]


@dataclass(frozen=True)
class SeedValues:
    """One line of the table on one training seed: every value column (None where not measured), the decisive
    rows (exactly one forced mode correct) and the rows of the line's decoding."""

    line: str
    seed: int
    values: Mapping[str, float | None]
    decisive: int
    items: int

    def get(self, column: str) -> float | None:
        """A value column, or :data:`HELPFUL_MISLEADING` (None unless both of its columns are measured)."""
        if column == HELPFUL_MISLEADING:
            a, b = self.values.get(PERSONALIZED), self.values.get(UNALIGNED)
            return None if a is None or b is None else (a + b) / 2
        return self.values.get(column)


def seed_values(line: str, seed: int, part: ToyPart, decoding: str) -> SeedValues:
    """The :class:`SeedValues` of ``decoding`` on one seed's run (a :class:`toy_table.ToyPart`)."""
    rows = sum(r["decoding"] == decoding for r in part.records)
    return SeedValues(line, seed, part_values(part, decoding), len(better_modes(part.records)), rows)


def sign_test_p(positive: int, n: int) -> float:
    """Exact one-sided sign-test p-value: P(X >= positive) for X ~ Binomial(n, 1/2)."""
    return float(binom.sf(positive - 1, n, 0.5))


@dataclass(frozen=True)
class Greater:
    """ "``a`` > ``b`` on ``column``", decided by the sign test over seeds (module docstring)."""

    id: str
    a: str
    b: str
    column: str
    rests_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Within:
    """Every seed's value of ``line`` within each ``(column, low, high)`` bound (None: unbounded on that side)."""

    id: str
    line: str
    bounds: tuple[tuple[str, float | None, float | None], ...]
    rests_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class WithinOf:
    """Every seed: ``a``'s ``column`` <= ``b``'s ``column`` + ``offset``."""

    id: str
    a: str
    b: str
    column: str
    offset: float
    rests_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class CurveAtMost:
    """Every seed: every logged step's ``metric`` of ``line``'s training run <= ``bound`` (no logged step: fails)."""

    id: str
    line: str
    metric: str
    bound: float
    rests_on: tuple[str, ...] = ()


Claim = Union[Greater, Within, WithinOf, CurveAtMost]


@dataclass(frozen=True)
class ClaimResult:
    """A claim's statement, its per-seed evidence (seed -> one text cell), whether it holds in each seed, the
    sign test (k of n, p) for :class:`Greater`, and the verdict (confirmed / not confirmed / untestable here)."""

    id: str
    statement: str
    per_seed: Mapping[int, str]
    holds: Mapping[int, bool]
    result: str
    p_value: float | None = None
    detail: Mapping[int, tuple[float | None, ...]] = field(default_factory=dict)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _digits(column: str) -> int:
    """Decimals of a column's values in ``claims.md``: 3 for probabilities, 2 for percentages."""
    return 3 if column == P_BETTER else 2


def _statement(claim: Claim) -> str:
    if isinstance(claim, Greater):
        return f"{claim.a} > {claim.b} on {NAMES[claim.column]}"
    if isinstance(claim, Within):
        parts = []
        for column, low, high in claim.bounds:
            lo = "" if low is None else f"{low:g} <= "
            hi = "" if high is None else f" <= {high:g}"
            parts.append(f"{lo}{NAMES[column]}{hi}")
        return f"{claim.line}: " + " and ".join(parts)
    if isinstance(claim, WithinOf):
        return f"{claim.a} {NAMES[claim.column]} <= {claim.b}'s + {claim.offset:g}"
    return f"{claim.line}: {claim.metric} <= {claim.bound:g} at every logged step"


def _judge(
    claim: Claim, by: Mapping[tuple[str, int], SeedValues], curves: Mapping[tuple[str, int], Curves], seeds: list[int]
) -> tuple[dict[int, str], dict[int, bool], dict[int, tuple[float | None, ...]]]:
    """Per seed: an evidence cell, whether the claim holds there, and the raw values."""
    cells, holds, raw = {}, {}, {}
    for s in seeds:
        if isinstance(claim, (Greater, WithinOf)):
            a, b = (by[(x, s)].get(claim.column) if (x, s) in by else None for x in (claim.a, claim.b))
            if isinstance(claim, Greater):
                d = None if a is None or b is None else a - b
                ok = d is not None and d > 0
                k = _digits(claim.column)
                cells[s] = f"{_fmt(a, k)} − {_fmt(b, k)} = {_fmt(d, k)}"
                raw[s] = (a, b, d)
            else:
                ok = a is not None and b is not None and a <= b + claim.offset
                k = _digits(claim.column)
                cells[s] = f"{_fmt(a, k)} vs {_fmt(b, k)} + {claim.offset:g}"
                raw[s] = (a, b)
        elif isinstance(claim, Within):
            sv = by.get((claim.line, s))
            vals = tuple(None if sv is None else sv.get(c) for c, _, _ in claim.bounds)
            ok = all(
                v is not None and (lo is None or v >= lo) and (hi is None or v <= hi)
                for v, (_, lo, hi) in zip(vals, claim.bounds)
            )
            cells[s] = ", ".join(_fmt(v, _digits(c)) for v, (c, _, _) in zip(vals, claim.bounds))
            raw[s] = vals
        else:
            points = list(curves.get((claim.line, s), {}).get(claim.metric, ()))
            top = max((v for _, v in points), default=None)
            ok = top is not None and top <= claim.bound
            cells[s] = f"max {_fmt(top, 3)} over {len(points)} steps"
            raw[s] = (top,)
        holds[s] = ok
    return cells, holds, raw


def decide(
    claims: Sequence[Claim],
    values: Sequence[SeedValues],
    curves: Mapping[tuple[str, int], Curves],
    seeds: Sequence[int],
) -> list[ClaimResult]:
    """Every claim's :class:`ClaimResult` over ``seeds``, in order; a claim whose ``rests_on`` names a claim
    decided before it that is not confirmed is *untestable here*."""
    by = {(v.line, v.seed): v for v in values}
    seeds = list(seeds)
    done: dict[str, str] = {}
    out = []
    for claim in claims:
        cells, holds, raw = _judge(claim, by, curves, seeds)
        p = None
        if isinstance(claim, Greater):
            p = sign_test_p(sum(holds.values()), len(seeds))
            verdict = CONFIRMED if all(holds.values()) and p <= ALPHA else NOT_CONFIRMED
        else:
            verdict = CONFIRMED if seeds and all(holds.values()) else NOT_CONFIRMED
        unmet = [r for r in claim.rests_on if done.get(r) != CONFIRMED]
        if unmet:
            verdict = f"untestable here ({', '.join(unmet)} not met)"
        done[claim.id] = verdict
        out.append(ClaimResult(claim.id, _statement(claim), cells, holds, verdict, p, raw))
    return out


def per_seed_table(values: Sequence[SeedValues]) -> tuple[list[str], list[list[object]]]:
    """``per_seed.csv``: line, seed, every value column, decisive rows, rows."""
    header = ["line", "seed", *COLUMNS, "decisive", "items"]
    return header, [[v.line, v.seed, *(v.values.get(c) for c in COLUMNS), v.decisive, v.items] for v in values]


def claims_markdown(results: Sequence[ClaimResult], seeds: Sequence[int], labels: Mapping[str, str]) -> str:
    """``claims.md``: one row per claim: id, statement, each seed's evidence, k of n seeds holding, sign-test p,
    verdict; then the line keys' labels."""
    header = ["claim", "statement", *(f"seed {s}" for s in seeds), "holds", "p (sign test)", "result"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        k = sum(r.holds.values())
        p = "" if r.p_value is None else f"{r.p_value:.3f}"
        cells = [r.id, r.statement, *(r.per_seed[s] for s in seeds), f"{k} of {len(seeds)}", p, r.result]
        out.append("| " + " | ".join(cells) + " |")
    legend = "; ".join(f"`{k}` = {v}" for k, v in labels.items())
    caption = (
        "Greater claims: per seed A − B = d; confirmed when d > 0 in every seed and the exact one-sided sign test "
        f"(ties and missing values against) gives p <= {ALPHA:g}. Bounds: confirmed when every seed is within. "
        f"Lines: {legend}."
    )
    return "\n".join(out) + "\n\n" + caption + "\n"


def claims_table(results: Sequence[ClaimResult], seeds: Sequence[int]) -> tuple[list[str], list[list[object]]]:
    """``claims.csv``: one row per claim and seed (claim, statement, seed, its raw values a / b / d, holds),
    with the claim's p-value and verdict repeated on each row."""
    header = ["claim", "statement", "seed", "a", "b", "d", "holds", "p_value", "result"]
    rows: list[list[object]] = []
    for r in results:
        for s in seeds:
            raw = list(r.detail.get(s, ())) + [None, None, None]
            rows.append([r.id, r.statement, s, *raw[:3], int(r.holds[s]), r.p_value, r.result])
    return header, rows


@dataclass(frozen=True)
class Panel:
    """One column of ``dynamics.png``: a title, the metric(s) drawn (solid, then dashed), and the y label."""

    title: str
    metrics: tuple[str, ...]
    ylabel: str


def strip_figure(values: Sequence[SeedValues], lines: Sequence[str], labels: Mapping[str, str]) -> object:
    """One panel per value column: a row per line (first on top), a dot per seed and a bar at the mean."""
    plt = pyplot()
    seeds = sorted({v.seed for v in values})
    by = {(v.line, v.seed): v for v in values}
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.0 * len(COLUMNS), 0.35 * len(lines) + 1.6), sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, column in zip(axes, COLUMNS):
        for row, line in enumerate(lines):
            got = [(s, by[(line, s)].get(column)) for s in seeds if (line, s) in by]
            got = [(s, x) for s, x in got if x is not None]
            for s, x in got:
                ax.scatter([x], [row], color=cmap(seeds.index(s) % 10), s=14, zorder=3)
            if got:
                mean = sum(x for _, x in got) / len(got)
                ax.plot([mean, mean], [row - 0.3, row + 0.3], color="black", linewidth=1.2)
        ax.set_title(NAMES[column], fontsize=9)
        ax.set_xlim(-0.05, 1.05) if column == "p_better" else ax.set_xlim(-5, 105)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(lines)), [labels.get(line, line) for line in lines], fontsize=8)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(i % 10)) for i in range(len(seeds))]
    fig.legend(handles, [f"seed {s}" for s in seeds], loc="lower center", ncol=len(seeds), fontsize=8)
    fig.subplots_adjust(bottom=0.22)
    return fig


def dynamics_figure(
    curves: Mapping[tuple[str, int], Curves], lines: Sequence[str], labels: Mapping[str, str], panels: Sequence[Panel]
) -> object:
    """A row per line (training variant, named on the left), a column per :class:`Panel` (titled on top), a line per
    seed (solid: the panel's first metric, dashed: its second) over training steps."""
    plt = pyplot()
    seeds = sorted({s for _, s in curves})
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        len(lines), len(panels), figsize=(4.0 * len(panels), 2.4 * len(lines)), squeeze=False, sharex=True
    )
    for i, line in enumerate(lines):
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            drawn = False
            for s in seeds:
                for metric, style in zip(panel.metrics, ("-", "--")):
                    points = curves.get((line, s), {}).get(metric, ())
                    if points:
                        ax.plot(*zip(*points), style, color=cmap(seeds.index(s) % 10), marker=".", linewidth=1)
                        drawn = True
            if not drawn:
                no_data(ax, "not logged by this variant")
            ax.set_ylim(-0.05, 1.05)
            if i == 0:
                ax.set_title(panel.title, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{labels.get(line, line)}\n{panel.ylabel}", fontsize=8)
            if i == len(lines) - 1:
                ax.set_xlabel("training step", fontsize=8)
    handles = [plt.Line2D([], [], color=cmap(i % 10)) for i in range(len(seeds))]
    fig.legend(handles, [f"seed {s}" for s in seeds], loc="upper center", ncol=max(len(seeds), 1), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def write_evidence(
    folder: Path,
    values: Sequence[SeedValues],
    claims: Sequence[Claim],
    curves: Mapping[tuple[str, int], Curves],
    labels: Mapping[str, str],
    variants: Sequence[str],
    panels: Sequence[Panel],
) -> list[Path]:
    """Write ``per_seed.csv``, ``claims.{md,csv}``, ``strip.png`` and ``dynamics.png`` under ``folder`` (module
    docstring); ``labels`` maps line keys to their table labels in line order, ``variants`` are the lines drawn in
    ``dynamics.png``. Returns the paths written."""
    folder = Path(folder)
    seeds = sorted({v.seed for v in values})
    results = decide(claims, values, curves, seeds)
    paths = [folder / "per_seed.csv", folder / "claims.csv", folder / "claims.md"]
    atomic_write_text(paths[0], csv_table(*per_seed_table(values)))
    atomic_write_text(paths[1], csv_table(*claims_table(results, seeds)))
    atomic_write_text(paths[2], claims_markdown(results, seeds, labels))
    plt = pyplot()
    for name, fig in (
        ("strip.png", strip_figure(values, list(labels), labels)),
        ("dynamics.png", dynamics_figure(curves, variants, labels, panels)),
    ):
        paths.append(save_figure(fig, folder / name))
        plt.close(fig)
    return paths
