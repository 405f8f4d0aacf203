"""The toy task's Table 1 (``eval/toy_table.py``) from hand-built run directories, with hand-computed values.

Every run has the same six toy rows: one of kind ``none``, two ``misleading``, two ``helpful``, one ``agreeing``.
Confidence intervals use Student-t 0.975 quantiles from a t table (reference values, not scipy's).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from verl_personadual.apps.eval_cli import main
from verl_personadual.eval import report
from verl_personadual.eval.store import PredictionStore
from verl_personadual.eval.toy_table import ToyLine, ToyPart, part_values, toy_markdown

T975 = {1: 12.7062047362, 2: 4.30265272975}
SETTING = {"none": "none", "misleading": "unaligned", "helpful": "aligned", "agreeing": "aligned"}
ROWS = {"n": "none", "m1": "misleading", "m2": "misleading", "h1": "helpful", "h2": "helpful", "a": "agreeing"}

# row -> ((free mode, free correct), forced general correct, forced personalized correct, (p_general, p_personalized))
SEED_0 = {
    "n": (("general", 1), 1, 1, (0.5, 0.5)),  # both forced right: not decisive
    "m1": (("general", 1), 1, 0, (0.9, 0.1)),  # decisive, better general, chose it
    "m2": (("personalized", 0), 1, 0, (0.6, 0.4)),  # decisive, better general, chose personalized
    "h1": (("personalized", 1), 0, 1, (0.2, 0.8)),  # decisive, better personalized, chose it
    "h2": (("unknown", 0), 0, 1, (0.3, 0.5)),  # decisive, better personalized, opened no mode
    "a": (("general", 1), 1, 1, (0.7, 0.3)),
}
# free accuracy: none 100, misleading 50, agreeing 100, helpful 50; selection 2/4 = 50; p_better 2.8/4 = 0.7
SEED_1 = {
    "n": (("general", 0), 1, 1, (0.5, 0.5)),
    "m1": (("general", 1), 1, 0, (0.95, 0.05)),
    "m2": (("general", 1), 1, 0, (0.8, 0.2)),
    "h1": (("personalized", 1), 0, 1, (0.1, 0.9)),
    "h2": (("personalized", 1), 0, 1, (0.4, 0.6)),
    "a": (("personalized", 1), 1, 1, (0.5, 0.5)),
}
# none 0, misleading 100, agreeing 100, helpful 100; selection 4/4 = 100; p_better 3.25/4 = 0.8125
SEED_2 = {
    "n": (("general", 1), 1, 1, (0.5, 0.5)),
    "m1": (("general", 1), 1, 0, (0.7, 0.3)),
    "m2": (("general", 0), 0, 0, (0.5, 0.5)),  # both forced wrong: not decisive
    "h1": (("personalized", 1), 0, 1, (0.4, 0.6)),
    "h2": (("general", 0), 0, 1, (0.6, 0.4)),
    "a": (("general", 1), 1, 1, (0.5, 0.5)),
}
# none 100, misleading 50, agreeing 100, helpful 50; selection 2/3 = 66.67; p_better 1.7/3 = 0.5667
BASE = {"n": 1, "m1": 1, "m2": 1, "h1": 0, "h2": 0, "a": 1}  # free only, mode unknown
# none 100, misleading 100, agreeing 100, helpful 0


def _eval_row(name: str) -> dict:
    """A row of ``eval_set.jsonl`` with the fields of ``data.toy.eval_row``."""
    kind = ROWS[name]
    return {
        "row_id": f"toy:{name}|{SETTING[kind]}",
        "item_id": f"toy:{name}",
        "benchmark": "toy",
        "task": kind,
        "family": "free_text",
        "setting": SETTING[kind],
        "question": "Is mango a good fruit? The book says true.",
        "gold": "false" if kind == "helpful" else "true",
        "choices": [],
        "persona": None if kind == "none" else "a fruit seller who says false",
        "persona_id": None if kind == "none" else "toy:fruit:seller:false",
    }


def _record(name: str, decoding: str, mode: str, correct: int) -> dict:
    """A ``predictions.jsonl`` record with the fields ``eval.run`` writes."""
    row = _eval_row(name)
    return {
        **{k: row[k] for k in ("row_id", "item_id", "benchmark", "task", "family", "setting")},
        "decoding": decoding,
        "prompt_style": "persona",
        "mode": mode,
        "persona_id": row["persona_id"],
        "pred": "true",
        "correct": float(correct),
        "format_ok": True,
        "has_answer": True,
        "score": float(correct),
        "response_tokens": 4,
        "truncated": False,
        "response": '{"answer": "true"}',
    }


def _mode_prob(name: str, p_general: float, p_personalized: float) -> dict:
    """A ``mode_probs.jsonl`` record in the format ``eval mode-probs`` writes."""
    row = _eval_row(name)
    return {
        "row_id": row["row_id"],
        "decoding": "mode_probs",
        "benchmark": "toy",
        "task": row["task"],
        "setting": row["setting"],
        "logp_general": math.log(p_general),
        "logp_personalized": math.log(p_personalized),
        "p_general": p_general,
        "p_personalized": p_personalized,
        "mode_mass": p_general + p_personalized,
        "sigma": p_personalized / (p_general + p_personalized),
    }


def _part(path: Path, records: list[dict], probs: list[dict] | None = None) -> None:
    path.mkdir(parents=True)
    (path / "eval_set.jsonl").write_text("".join(json.dumps(_eval_row(n)) + "\n" for n in ROWS))
    PredictionStore(path / "predictions.jsonl").append(records)
    if probs is not None:
        PredictionStore(path / "mode_probs.jsonl").append(probs)
    (path / "run_config.json").write_text(json.dumps({"prompt_style": "persona"}))


def _dual_part(path: Path, seed: dict) -> None:
    records = [_record(n, "free", m, ok) for n, ((m, ok), _, _, _) in seed.items()]
    records += [_record(n, "general", "general", g) for n, (_, g, _, _) in seed.items()]
    records += [_record(n, "personalized", "personalized", p) for n, (_, _, p, _) in seed.items()]
    _part(path, records, [_mode_prob(n, *probs) for n, (_, _, _, probs) in seed.items()])


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_part_values_of_one_seed():
    records = [_record(n, "free", m, ok) for n, ((m, ok), _, _, _) in SEED_0.items()]
    records += [_record(n, d, d, out[k]) for n, out in SEED_0.items() for k, d in ((1, "general"), (2, "personalized"))]
    probs = {_eval_row(n)["row_id"]: _mode_prob(n, *v[3]) for n, v in SEED_0.items()}
    part = ToyPart(records, probs)
    assert part_values(part, "free") == {
        "no_persona_%": 100.0,
        "objective/unaligned_%": 50.0,
        "objective/aligned_%": 100.0,
        "personalized_%": 50.0,
        "selection_%": 50.0,
        "p_better": pytest.approx(0.7),
    }
    # forced general: right on misleading (the book), wrong on helpful; a forced decoding selects nothing
    assert part_values(part, "general") == {
        "no_persona_%": 100.0,
        "objective/unaligned_%": 100.0,
        "objective/aligned_%": 100.0,
        "personalized_%": 0.0,
        "selection_%": None,
        "p_better": pytest.approx(0.7),
    }
    # a mode-probability file that misses a decisive row (h2) measures no p_better
    partial = ToyPart(records, {k: v for k, v in probs.items() if not k.startswith("toy:h2")})
    assert part_values(partial, "free")["p_better"] is None
    # without forced decodings there are no decisive rows
    free_only = ToyPart([r for r in records if r["decoding"] == "free"], probs)
    assert part_values(free_only, "free")["selection_%"] is None and part_values(free_only, "free")["p_better"] is None


def test_report_of_one_toy_run_has_one_line_per_decoding(tmp_path: Path):
    _dual_part(tmp_path / "r", SEED_0)
    written = report.write_report(tmp_path / "r")
    tables = tmp_path / "r" / "tables"
    assert {tables / "table1_toy.md", tables / "table1_toy.csv"} <= set(written)
    rows = _csv(tables / "table1_toy.csv")
    assert [r["system"] for r in rows] == ["free", "general", "personalized"]
    assert list(rows[0])[1:4] == ["no_persona_%", "no_persona_%_std", "no_persona_%_ci95"]
    assert [rows[2][c] for c in ("objective/unaligned_%", "personalized_%", "selection_%", "p_better")] == [
        "0.0000",
        "100.0000",
        "",
        "0.7000",
    ]
    assert (rows[0]["no_persona_%_std"], rows[0]["seeds"], rows[0]["items"]) == ("", "1", "6")
    md = (tables / "table1_toy.md").read_text()
    assert md.splitlines()[0] == (
        "| system | no persona | unaligned (misleading) | aligned (agreeing) | personalized (helpful) | selection "
        "| P(better) | seeds | items |"
    )
    assert "| free | 100.00 | 50.00 | 100.00 | 50.00 | 50.00 | 0.700 | 1 | 6 |" in md.splitlines()
    assert "| general | 100.00 | 100.00 | 100.00 | 0.00 | – | 0.700 | 1 | 6 |" in md.splitlines()
    assert "one seed; – = not measured." in md


def test_compare_writes_the_toy_table_with_95_percent_intervals(tmp_path: Path):
    for s, seed in enumerate((SEED_0, SEED_1, SEED_2)):
        _dual_part(tmp_path / "rl" / f"seed_{s}", seed)
    _part(tmp_path / "base", [_record(n, "free", "unknown", ok) for n, ok in BASE.items()])
    out = tmp_path / "cmp"
    systems = [f"persona_dual:RL={tmp_path / 'rl'}", f"base={tmp_path / 'base'}"]
    assert main(["compare", "--system", systems[0], "--system", systems[1], "--out", str(out)]) == 0
    base, rl = _csv(out / "table1_toy.csv")
    assert (base["system"], base["section"], rl["system"], rl["section"]) == (
        "Backbone",
        "General purpose models",
        "RL",
        "Dual-mode models",
    )
    # RL over its 3 seeds: per-seed values in the comments above; std = sample std, ci95 = t(0.975, 2) * std / sqrt(3)
    expected = {
        "no_persona_%": ("66.6667", "57.7350", "143.4218"),  # 100, 0, 100: std 100 / sqrt(3)
        "objective/unaligned_%": ("66.6667", "28.8675", "71.7109"),  # 50, 100, 50
        "objective/aligned_%": ("100.0000", "0.0000", "0.0000"),  # 100, 100, 100
        "personalized_%": ("66.6667", "28.8675", "71.7109"),  # 50, 100, 50
        "selection_%": ("72.2222", "25.4588", "63.2431"),  # 50, 100, 66.67
        "p_better": ("0.6931", "0.1231", "0.3057"),  # 0.7, 0.8125, 0.5667
    }
    for column, (mean, std, ci95) in expected.items():
        assert (rl[column], rl[column + "_std"], rl[column + "_ci95"]) == (mean, std, ci95), column
    assert float(rl["no_persona_%_ci95"]) == pytest.approx(T975[2] * (100 / math.sqrt(3)) / math.sqrt(3), abs=1e-4)
    assert (rl["seeds"], rl["items"]) == ("3", "6")
    # the backbone: one part, free decoding only, no mode probabilities
    assert [base[c] for c in expected] == ["100.0000", "100.0000", "100.0000", "0.0000", "", ""]
    assert (base["no_persona_%_std"], base["no_persona_%_ci95"], base["seeds"]) == ("", "", "1")
    md = (out / "table1_toy.md").read_text().splitlines()
    assert md[2:6] == [
        "| *General purpose models* |  |  |  |  |  |  |  |  |",
        "| Backbone | 100.00 | 100.00 | 100.00 | 0.00 | – | – | 1 | 6 |",
        "| *Dual-mode models* |  |  |  |  |  |  |  |  |",
        "| RL | 66.67 ± 143.42 | 66.67 ± 71.71 | 100.00 ± 0.00 | 66.67 ± 71.71 | 72.22 ± 63.24 | 0.693 ± 0.306 "
        "| 3 | 6 |",
    ]
    assert "mean ± 95 % t-interval half-width over 1-3 seeds; – = not measured." in md[-1]
    # Table 1 itself is written next to it, for the same lines
    assert [r["system"] for r in _csv(out / "table1.csv")] == ["Backbone", "RL"]
    # ... whose caption says it has no Table 1 benchmark and where the toy's table is
    caption = (out / "table1.md").read_text().split("\n\n")[1]
    assert caption == (
        "No Table 1 benchmark in these runs (Table 1's benchmarks: pubmedqa, triviaqa, mmlu_pro, supergpqa, "
        "math500, personafeedback, fspo_roleplay). Runs of the toy task have their table in table1_toy.md.\n"
    )


def test_a_column_only_some_seeds_measure_says_how_many():
    """Selection needs decisive rows: a seed whose two forced modes always agree has none, and the cell says that
    the mean is over fewer seeds than the line has."""

    def part(seed: dict) -> ToyPart:
        records = [_record(n, "free", m, ok) for n, ((m, ok), _, _, _) in seed.items()]
        records += [_record(n, d, d, v[k]) for n, v in seed.items() for k, d in ((1, "general"), (2, "personalized"))]
        return ToyPart(records)

    agreeing = {n: ((m, ok), g, g, p) for n, ((m, ok), g, _, p) in SEED_0.items()}  # forced personalized = general
    line = ToyLine("x", "free", [part(SEED_0), part(agreeing), part(agreeing)])
    row = next(r for r in toy_markdown([line]).splitlines() if r.startswith("| x |"))
    # selection 50 (SEED_0 only); free accuracies are the same in all three parts, so their intervals are ± 0
    accuracies = "| 100.00 ± 0.00 | 50.00 ± 0.00 | 100.00 ± 0.00 | 50.00 ± 0.00 |"
    assert row == f"| x {accuracies} 50.00 (1 of 3 seeds) | – | 3 | 6 |"
