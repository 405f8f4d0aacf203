"""The mean of a few values (one per seed: sampling or training) with its 95 % Student-t confidence interval.

For values x_1..x_n (n >= 1) :func:`mean_interval` returns

- ``mean`` = (x_1 + ... + x_n) / n;
- ``std`` = the sample standard deviation sqrt(sum (x_i - mean)^2 / (n - 1)); None when n < 2;
- ``half_width`` = t_{0.975, n-1} * std / sqrt(n), the half-width of the two-sided 95 % Student-t interval
  ``mean ± half_width`` for the mean (t_{0.975, n-1}: the 0.975 quantile of Student's t with n - 1 degrees of
  freedom, ``scipy.stats.t.ppf``); None when n < 2.

All three are in the values' own unit (percentage points for accuracies in %). With few seeds the interval is
wide (t_{0.975, 1} = 12.706, t_{0.975, 2} = 4.303): that is what two or three runs can say. Tables write it as
"mean ± half_width" (:func:`format_interval`) and say over how many seeds in their caption (:func:`seeds_caption`).

Greedy and sampled lines in one table (e.g. the FPPS systems, which decode greedily only, beside ``--seeds`` runs
that sample): a greedy line's name carries :data:`GREEDY_MARK` and the caption defines it
(:func:`decoding_caption`), so a single greedy run is never read as a mean over sampled seeds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from scipy.stats import t as student_t

__all__ = [
    "CONFIDENCE",
    "STD",
    "CI95",
    "GREEDY_MARK",
    "Interval",
    "decoding_caption",
    "mean_interval",
    "format_interval",
    "marked_name",
    "mixes_decodings",
    "seeds_caption",
]

#: Two-sided confidence level of :attr:`Interval.half_width`.
CONFIDENCE = 0.95
#: Suffixes of a table's columns holding a value column's sample std and its 95 % half-width.
STD, CI95 = "_std", "_ci95"
#: Marks a greedy line's name in a table that also holds sampled lines (module docstring).
GREEDY_MARK = "†"


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values, their sample std and the 95 % t-interval half-width (module docstring)."""

    n: int
    mean: float
    std: float | None
    half_width: float | None


def mean_interval(values: Sequence[float]) -> Interval:
    """The :class:`Interval` of ``values`` (module docstring); ValueError when there is none."""
    if not values:
        raise ValueError("mean_interval needs at least one value")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(n, mean, None, None)
    std = statistics.stdev(values)
    quantile = float(student_t.ppf(1 - (1 - CONFIDENCE) / 2, n - 1))
    return Interval(n, mean, std, quantile * std / math.sqrt(n))


def format_interval(value: Interval | None, digits: int = 2) -> str:
    """A Markdown cell: "mean ± half_width" with ``digits`` decimals, the mean alone for one value, "–" for None."""
    if value is None:
        return "–"
    if value.half_width is None:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.half_width:.{digits}f}"


def seeds_caption(seeds: Iterable[int]) -> str:
    """A caption's account of the spread of lines over ``seeds`` seeds each: "" when no line has two or more, else
    "mean ± 95 % t-interval half-width over N seeds" (N, or the range "N1-N2" when the lines differ)."""
    counts = sorted(set(seeds))
    if not counts or counts[-1] < 2:
        return ""
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean ± 95 % t-interval half-width over {n} seeds"


def mixes_decodings(sampled: Iterable[bool]) -> bool:
    """Whether lines (``True``: sampled at a temperature > 0, ``False``: greedy) mix the two."""
    return len(set(sampled)) > 1


def marked_name(name: str, sampled: bool, mixed: bool) -> str:
    """A line's name in a table: with :data:`GREEDY_MARK` when the table ``mixed`` greedy and sampled lines and this
    one is greedy."""
    return f"{name} {GREEDY_MARK}" if mixed and not sampled else name


def decoding_caption(sampled: Iterable[bool]) -> str:
    """The caption's sentence defining :data:`GREEDY_MARK` when the lines mix greedy and sampled ones, else ""."""
    if not mixes_decodings(sampled):
        return ""
    return (
        f"{GREEDY_MARK}: greedy decoding (temperature 0), each seed one deterministic run; unmarked lines sample "
        "(temperature > 0), so their spread includes sampling noise"
    )
