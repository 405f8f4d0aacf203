"""The quickstart's figures are recomputed from the eval JSONL files (hand-computed expectations)."""

from __future__ import annotations

import json
import math

import pytest

from verl_personadual.apps.quickstart.report import (
    collapse_missed,
    metric_curves,
    read_jsonl,
    selection_line,
    summarize,
    targets_met,
    write_report,
)
from verl_personadual.apps.quickstart.stages import Quickstart


def _pred(row, setting, decoding, mode, correct):
    return {"row_id": row, "setting": setting, "decoding": decoding, "mode": mode, "correct": float(correct)}


# row: setting, (free mode, free correct), forced general correct, forced personalized correct, (pG, pP)
ROWS = {
    "r1": ("unaligned", ("general", 1), 1, 0, (0.8, 0.1)),  # decisive, better G, chose G
    "r2": ("aligned", ("general", 0), 0, 1, (0.6, 0.3)),  # decisive, better P, chose G
    "r3": ("none", ("unknown", 0), 1, 1, (0.2, 0.2)),  # both right: not decisive; unknown mode
    "r4": ("aligned", ("personalized", 1), 0, 1, (0.1, 0.85)),  # decisive, better P, chose P
}


def _files(tmp_path):
    preds, probs = [], []
    for row, (setting, (mode, ok), g, p, (pg, pp)) in ROWS.items():
        preds += [
            _pred(row, setting, "free", mode, ok),
            _pred(row, setting, "general", "general", g),
            _pred(row, setting, "personalized", "personalized", p),
        ]
        probs.append({"row_id": row, "p_general": pg, "p_personalized": pp})
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preds))
    (tmp_path / "mode_probs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in probs))
    return read_jsonl(tmp_path / "predictions.jsonl"), read_jsonl(tmp_path / "mode_probs.jsonl")


def test_summary_from_jsonl_matches_hand_computation(tmp_path):
    s = summarize(*_files(tmp_path))
    assert s["rows"] == 4 and s["decisive"] == 3
    assert s["selection_acc"] == pytest.approx(2 / 3)
    assert s["p_better"] == pytest.approx((0.8 + 0.3 + 0.85) / 3)
    assert s["free_acc"] == pytest.approx(0.5) and s["upper_bound"] == pytest.approx(1.0)
    assert s["free_over_upper"] == pytest.approx(0.5)
    assert s["forced_general_acc"] == pytest.approx(0.5) and s["forced_personalized_acc"] == pytest.approx(0.75)
    assert s["unknown_rate"] == pytest.approx(0.25)
    assert s["mode_mass"] == pytest.approx((0.9 + 0.9 + 0.4 + 0.95) / 4)
    assert s["by_setting"]["aligned"] == pytest.approx(
        {"free_acc": 0.5, "personalized_rate": 0.5, "selection_acc": 0.5}
    )
    assert s["by_setting"]["unaligned"] == pytest.approx(
        {"free_acc": 1.0, "personalized_rate": 0.0, "selection_acc": 1.0}
    )
    assert s["by_setting"]["none"] == pytest.approx({"free_acc": 0.0, "personalized_rate": 0.0})
    assert targets_met(s) == {
        "selection_acc": False,
        "p_better": True,  # (0.8 + 0.3 + 0.85) / 3 = 0.65: on the bound
        "free_over_upper": False,
        "unknown_rate": False,
    }


def test_targets_met_at_the_bounds():
    s = {"selection_acc": 0.9, "p_better": 0.65, "free_over_upper": 0.95, "unknown_rate": 0.0}
    assert all(targets_met(s).values())
    assert not targets_met({**s, "unknown_rate": 0.005})["unknown_rate"]
    assert not targets_met({**s, "p_better": None})["p_better"]
    assert not targets_met({**s, "p_better": 0.649})["p_better"]


COLLAPSE = "personadual/val/all/all/mode_collapse"


def _rl_run(tmp_path, collapse_by_step):
    """A finished quickstart RL run ``none`` whose metrics log (verl's file logger: one record per step) has training
    metrics at steps 1..12, validation at steps 0, 4, 8, 12, and ``collapse_by_step`` as its collapse metric."""
    qs = Quickstart(tmp_path / "qs", ["none"], progress=False)
    metrics = qs.out / "runs" / "none" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    records = []
    for step in range(13):
        data = {} if step == 0 else {"critic/score/mean": 0.5}
        if step % 4 == 0:
            data["personadual/val/all/all/personalized_rate"] = 0.25
        if step in collapse_by_step:
            data[COLLAPSE] = collapse_by_step[step]
        records.append({"step": step, "data": data})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    (qs.out / "stages").mkdir()
    (qs.out / "stages" / "rl-none.json").write_text(json.dumps({"metrics": str(metrics), "command": "x"}))
    return collapse_missed(qs.rl_curves("none"))


def test_collapse_at_step_0_only_meets_the_target(tmp_path):
    """The quickstart's CI runs: the SFT checkpoint's validation (step 0) collapsed, none after training steps."""
    assert _rl_run(tmp_path, {0: 1.0, 4: 0.0, 8: 0.0, 12: 0.0}) is None


def test_collapse_after_step_0_misses_the_target_naming_metric_and_steps(tmp_path):
    assert _rl_run(tmp_path, {0: 1.0, 4: 0.0, 8: 1.0, 12: 0.0}) == (
        "personadual/val/all/all/mode_collapse not 0 at step(s) 8: validation collapsed onto one mode "
        "(target 0 at every validation step after step 0)"
    )
    assert "not 0 at step(s) 8, 12:" in _rl_run(tmp_path / "b", {0: 0.0, 4: 0.0, 8: 1.0, 12: 1.0})


def test_collapse_metric_missing_misses_the_target(tmp_path):
    """Not logged (no validation, e.g. trainer.test_freq=-1; or logged at step 0 only): the check cannot be made, so
    the target is missed, saying so."""
    missing = (
        "personadual/val/all/all/mode_collapse not logged at any validation step after step 0 "
        "(target 0 at every validation step after step 0)"
    )
    assert _rl_run(tmp_path, {}) == missing
    assert _rl_run(tmp_path / "b", {0: 0.0}) == missing


def test_unfinished_runs_are_refused(tmp_path):
    preds, probs = _files(tmp_path)
    with pytest.raises(ValueError, match=r"row r2: no \['personalized'\] prediction"):
        summarize([p for p in preds if not (p["row_id"] == "r2" and p["decoding"] == "personalized")], probs)
    with pytest.raises(ValueError, match="row r4: no mode probabilities"):
        summarize(preds, [p for p in probs if p["row_id"] != "r4"])
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_metric_curves_sorted_by_step_without_nan():
    recs = [{"step": 2, "data": {"a": 0.5, "b": math.nan, "c": "text"}}, {"step": 1, "data": {"a": 0.25, "b": 1}}]
    assert metric_curves(recs) == {"a": [(1, 0.25), (2, 0.5)], "b": [(1, 1.0)]}


def test_report_files_carry_the_recomputed_numbers(tmp_path):
    s = summarize(*_files(tmp_path))
    curves = {"rl-none": metric_curves([{"step": 1, "data": {"personadual/val/toy/aligned/personalized_rate": 0.4}}])}
    md, png, summary = write_report(tmp_path / "out", {"sft": s}, curves, ["python -m x"])
    table_row = next(line for line in md.read_text().splitlines() if line.startswith("| sft | 0."))
    assert table_row.startswith("| sft | 0.667 | 0.650 | 0.500 | 1.000 | 0.500 | 0.250 | 0.787 |")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(summary.read_text())["runs"]["sft"]["decisive"] == 3


def test_the_last_line_counts_each_checkpoints_own_decisive_rows(tmp_path):
    """The quickstart's last line: before = the SFT checkpoint over its 3 decisive rows (ROWS); after = an RL
    checkpoint whose forced modes are both right on r1 as well, so only r2 and r4 are decisive, both chosen well."""
    sft = summarize(*_files(tmp_path))
    rl_dir = tmp_path / "rl"
    rl_dir.mkdir()
    preds, probs = [], []
    for row, (setting, better) in {
        "r1": ("unaligned", None),
        "r2": ("aligned", "personalized"),
        "r3": ("none", None),
        "r4": ("aligned", "personalized"),
    }.items():
        g, p = (1, 1) if better is None else (0, 1)
        preds += [
            _pred(row, setting, "free", better or "general", 1),
            _pred(row, setting, "general", "general", g),
            _pred(row, setting, "personalized", "personalized", p),
        ]
        probs.append({"row_id": row, "p_general": 0.3, "p_personalized": 0.6})
    (rl_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preds))
    (rl_dir / "mode_probs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in probs))
    rl = summarize(read_jsonl(rl_dir / "predictions.jsonl"), read_jsonl(rl_dir / "mode_probs.jsonl"))
    assert (sft["decisive"], rl["decisive"]) == (3, 2)
    assert selection_line("none", sft, rl) == (
        "mode-selection accuracy: before 0.667 after 1.000 (run none; decisive held-out rows: 3 before, 2 after)"
    )
