"""Pre-registered claims decided per seed (``eval/toy_evidence.py``), with hand-computed values.

Sign-test p-values are binomial tail sums computed by hand: P(X >= k), X ~ Bin(n, 1/2) = sum_{i>=k} C(n, i) / 2^n.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from verl_personadual.apps import toy_table as app
from verl_personadual.eval.toy_evidence import (
    HELPFUL_MISLEADING,
    CurveAtMost,
    Greater,
    Panel,
    SeedValues,
    Within,
    WithinOf,
    decide,
    seed_values,
    sign_test_p,
    strip_figure,
    write_evidence,
)
from verl_personadual.eval.toy_table import (
    ALIGNED,
    NO_PERSONA,
    P_BETTER,
    PERSONALIZED,
    SELECTION,
    UNALIGNED,
    ToyPart,
)

SEEDS = [1, 2, 3, 4, 5]
RATE = "personadual/train/all/all/personalized_rate"


def _sv(line: str, seed: int, **values: float | None) -> SeedValues:
    names = {"sel": SELECTION, "pers": PERSONALIZED, "unal": UNALIGNED, "pb": P_BETTER}
    return SeedValues(line, seed, {names[k]: v for k, v in values.items()}, decisive=10, items=20)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(5, 5, 1 / 32), (4, 5, 6 / 32), (3, 5, 16 / 32), (0, 5, 1.0), (3, 3, 1 / 8), (6, 7, 8 / 128)],
)
def test_sign_test_p_is_the_binomial_tail(k: int, n: int, p: float) -> None:
    assert sign_test_p(k, n) == pytest.approx(p, abs=1e-12)


def test_greater_needs_every_seed_positive_ties_and_gaps_count_against() -> None:
    values = [_sv("a", s, sel=60.0 + s) for s in SEEDS] + [_sv("b", s, sel=50.0) for s in SEEDS]
    values += [_sv("c", s, sel=None if s == 3 else 70.0) for s in SEEDS]
    values += [_sv("d", s, sel=50.0 if s == 2 else 40.0) for s in SEEDS]
    claims = [
        Greater("all", "a", "b", SELECTION),  # d = 11..15 in every seed
        Greater("gap", "c", "b", SELECTION),  # seed 3 has no value: 4 of 5
        Greater("tie", "b", "d", SELECTION),  # seed 2: 50 - 50 = 0: 4 of 5
        Greater("none", "d", "a", SELECTION),
    ]
    got = {r.id: r for r in decide(claims, values, {}, SEEDS)}
    assert got["all"].result == "confirmed" and got["all"].p_value == pytest.approx(1 / 32)
    assert got["all"].detail[4] == (64.0, 50.0, 14.0)
    assert got["all"].per_seed[1] == "61.00 − 50.00 = 11.00"
    assert got["gap"].holds == {1: True, 2: True, 3: False, 4: True, 5: True}
    assert got["gap"].result == "not confirmed" and got["gap"].p_value == pytest.approx(6 / 32)
    assert got["tie"].holds[2] is False and got["tie"].result == "not confirmed"
    assert got["none"].p_value == pytest.approx(1.0) and got["none"].result == "not confirmed"


def test_four_seeds_all_positive_is_not_enough() -> None:
    """k = n = 4: p = 1/16 > 0.05."""
    values = [_sv("a", s, pb=0.7) for s in SEEDS[:4]] + [_sv("b", s, pb=0.6) for s in SEEDS[:4]]
    (result,) = decide([Greater("C", "a", "b", P_BETTER)], values, {}, SEEDS[:4])
    assert result.p_value == pytest.approx(1 / 16) and result.result == "not confirmed"


def test_bounds_and_untestable_claims() -> None:
    sft = [_sv("sft", s, pers=5.0, unal=95.0) for s in SEEDS[:4]] + [_sv("sft", 5, pers=10.0, unal=89.0)]
    rl = [_sv("rl", s, pers=80.0, unal=95.0) for s in SEEDS]
    base = [_sv("base", s, unal=8.0) for s in SEEDS]
    fpps = [_sv("fpps", s, unal=18.0) for s in SEEDS]  # base + 10 = 18: on the bound, holds
    claims = [
        Within("S1", "sft", ((PERSONALIZED, None, 10.0), (UNALIGNED, 90.0, None))),
        Within("S3", "base", ((UNALIGNED, None, 10.0),)),
        Greater("C2", "rl", "sft", PERSONALIZED, ("S1",)),
        Greater("C10", "rl", "base", UNALIGNED, ("S3",)),
        WithinOf("C13", "fpps", "base", UNALIGNED, 10.0),
        Greater("C11", "rl", "fpps", HELPFUL_MISLEADING, ("S3",)),
    ]
    got = {r.id: r for r in decide(claims, sft + rl + base + fpps, {}, SEEDS)}
    assert got["S1"].holds == {1: True, 2: True, 3: True, 4: True, 5: False}  # 89 < 90 in seed 5
    assert got["S1"].per_seed[5] == "10.00, 89.00"
    assert got["S1"].result == "not confirmed"
    # C2 holds in every seed (80 > 5, 80 > 10) but rests on S1
    assert all(got["C2"].holds.values()) and got["C2"].result == "untestable here (S1 not met)"
    assert got["S3"].result == "confirmed" and got["C10"].result == "confirmed"
    assert got["C13"].result == "confirmed"
    # helpful+misleading: rl (80 + 95) / 2 = 87.5; fpps has no personalized value -> missing in every seed
    assert got["C11"].detail[1] == (87.5, None, None) and got["C11"].result == "not confirmed"


def test_curve_claims_read_every_logged_step() -> None:
    curves = {("v", s): {RATE: [(1, 0.1), (2, 0.2), (3, 0.05)]} for s in SEEDS[:4]}
    curves[("w", 1)] = {RATE: [(1, 0.1), (2, 0.21)]}
    (ok,) = decide([CurveAtMost("C7", "v", RATE, 0.2)], [], curves, SEEDS[:4])
    assert ok.result == "confirmed" and ok.per_seed[1] == "max 0.200 over 3 steps"
    (bad,) = decide([CurveAtMost("C7", "v", RATE, 0.2)], [], curves, SEEDS)  # seed 5 logged nothing
    assert bad.holds[5] is False and bad.result == "not confirmed"
    (over,) = decide([CurveAtMost("C7", "w", RATE, 0.2)], [], curves, [1])
    assert over.detail[1] == (0.21,) and over.result == "not confirmed"


def _record(row: str, task: str, setting: str, decoding: str, correct: int, mode: str) -> dict:
    return {
        "benchmark": "toy",
        "row_id": row,
        "task": task,
        "setting": setting,
        "decoding": decoding,
        "correct": correct,
        "mode": mode,
    }


def test_seed_values_of_one_part() -> None:
    """Four rows: m (misleading: forced general right only -> better general), h (helpful: forced personalized right
    only -> better personalized), a (agreeing: both right), n (no persona: both right). Free picks general on m
    (right) and on h (wrong): selection 1 of 2 decisive rows; p_better = (0.9 + 0.3) / 2."""
    rows = {"m": ("misleading", "unaligned"), "h": ("helpful", "aligned"), "a": ("agreeing", "aligned")}
    rows["n"] = ("none", "none")
    forced = {"m": (1, 0), "h": (0, 1), "a": (1, 1), "n": (1, 1)}
    free = {"m": (1, "general"), "h": (0, "general"), "a": (1, "personalized"), "n": (1, "general")}
    records = []
    for row, (task, setting) in rows.items():
        records.append(_record(row, task, setting, "general", forced[row][0], "general"))
        records.append(_record(row, task, setting, "personalized", forced[row][1], "personalized"))
        records.append(_record(row, task, setting, "free", *free[row]))
    probs = {"m": {"p_general": 0.9, "p_personalized": 0.1}, "h": {"p_general": 0.7, "p_personalized": 0.3}}
    sv = seed_values("x", 7, ToyPart(records, probs), "free")
    assert (sv.line, sv.seed, sv.decisive, sv.items) == ("x", 7, 2, 4)
    assert sv.values[SELECTION] == 50.0
    assert (sv.values[NO_PERSONA], sv.values[UNALIGNED], sv.values[ALIGNED], sv.values[PERSONALIZED]) == (
        100.0,
        100.0,
        100.0,
        0.0,
    )
    assert sv.values[P_BETTER] == pytest.approx(0.6)
    assert sv.get(HELPFUL_MISLEADING) == 50.0
    forced_line = seed_values("y", 7, ToyPart(records), "general")
    assert forced_line.values[SELECTION] is None and forced_line.values[P_BETTER] is None


def test_written_files_hold_the_per_seed_values_and_verdicts(tmp_path: Path) -> None:
    values = [_sv("a", s, sel=60.0 + s, pb=0.5) for s in SEEDS] + [_sv("b", s, sel=50.0, pb=0.5) for s in SEEDS]
    curves = {("a", s): {RATE: [(0, 0.5), (4, 0.6)]} for s in SEEDS}
    claims = [Greater("C1", "a", "b", SELECTION), Greater("C5", "a", "b", P_BETTER)]
    panels = [Panel("rate", (RATE,), "rate")]
    paths = write_evidence(tmp_path, values, claims, curves, {"a": "A line", "b": "B line"}, ["a"], panels)
    assert [p.name for p in paths] == ["per_seed.csv", "claims.csv", "claims.md", "strip.png", "dynamics.png"]
    per_seed = list(csv.DictReader((tmp_path / "per_seed.csv").open()))
    assert len(per_seed) == 10
    assert per_seed[2] == {
        "line": "a",
        "seed": "3",
        "no_persona_%": "",
        "objective/unaligned_%": "",
        "objective/aligned_%": "",
        "personalized_%": "",
        "selection_%": "63.0000",
        "p_better": "0.5000",
        "decisive": "10",
        "items": "20",
    }
    rows = list(csv.DictReader((tmp_path / "claims.csv").open()))
    assert [(r["claim"], r["seed"], r["d"], r["holds"], r["result"]) for r in rows[:2]] == [
        ("C1", "1", "11.0000", "1", "confirmed"),
        ("C1", "2", "12.0000", "1", "confirmed"),
    ]
    assert rows[5]["claim"] == "C5" and rows[5]["d"] == "0.0000" and rows[5]["result"] == "not confirmed"
    md = (tmp_path / "claims.md").read_text()
    assert "| C1 | a > b on selection | 61.00 − 50.00 = 11.00 |" in md
    assert "| C5 | a > b on P(better) | 0.500 − 0.500 = 0.000 |" in md  # probabilities with 3 decimals
    assert "| 5 of 5 | 0.031 | confirmed |" in md and "| 0 of 5 | 1.000 | not confirmed |" in md
    assert (tmp_path / "strip.png").read_bytes()[:4] == b"\x89PNG"


def test_strip_plot_puts_each_seed_at_its_value() -> None:
    values = [_sv("a", 1, sel=20.0), _sv("a", 2, sel=40.0), _sv("b", 1, sel=90.0)]
    fig = strip_figure(values, ["a", "b"], {"a": "A", "b": "B"})
    selection_ax = fig.axes[[ax.get_title() for ax in fig.axes].index("selection")]
    points = sorted(tuple(map(float, c.get_offsets()[0])) for c in selection_ax.collections)
    assert points == [(20.0, 0.0), (40.0, 0.0), (90.0, 1.0)]
    means = sorted(tuple(line.get_xdata()) for line in selection_ax.lines)
    assert means == [(30.0, 30.0), (90.0, 90.0)]


def test_the_table_claims_name_its_lines_and_checks() -> None:
    """Every pre-registered claim reads lines of the table and rests only on setting checks decided before it;
    the ids are the README's (C7 is one claim per system)."""
    keys = {line.key for line in app.lines()}
    ids = [c.id for c in app.CLAIMS]
    assert ids == ["S1", "S2", "S3", *(f"C{i}" for i in range(1, 7)), "C7a", "C7b", *(f"C{i}" for i in range(8, 14))]
    for i, claim in enumerate(app.CLAIMS):
        named = {getattr(claim, f) for f in ("a", "b", "line") if hasattr(claim, f)}
        assert named <= keys, claim
        assert set(claim.rests_on) <= {"S1", "S2", "S3"} & set(ids[:i]), claim
    rests = {c.id: c.rests_on for c in app.CLAIMS}
    assert [k for k, v in rests.items() if v == ("S1",)] == ["C2", "C3", "C4", "C6", "C7a", "C7b"]
    assert [k for k, v in rests.items() if v == ("S2",)] == ["C8"]
    assert [k for k, v in rests.items() if v == ("S3",)] == ["C10", "C11", "C12"]
