"""The analyses of mode selection (issue 16): the mode-choice probability against an independent forward pass,
calibration / ECE and the oracle-gap partition against hand-computed values, the constrained decoding, the
multi-turn alignment rates recomputed from the JSONL, the lexical regression on planted words, and the mixed sets."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from verl_personadual.apps.eval_cli import main
from verl_personadual.core.modes import PREFIX_TEXT, Mode, resolve_prefixes
from verl_personadual.core.prompts import build_prompt
from verl_personadual.data.eval_sets import EvalRow, read_eval_set, write_eval_set
from verl_personadual.data.families import Selector, family_of
from verl_personadual.eval.analyses.lexical import fit
from verl_personadual.eval.analyses.mode_probs import (
    ModeProb,
    calibration,
    compute,
    oracle_gap,
)
from verl_personadual.eval.store import read_predictions

HF = ["--backend", "hf", "--device", "cpu", "--no-progress"]


def _row(
    i: int,
    benchmark: str = "triviaqa",
    setting: str = "unaligned",
    persona: str | None = "a pilot",
    question: str = "What is the capital of France?",
    task: str = "t",
) -> EvalRow:
    family = "preference" if benchmark in ("fspo_roleplay", "personafeedback") else "open_qa"
    return EvalRow(
        f"{benchmark}:{i}|{setting}",
        f"{benchmark}:{i}",
        benchmark,
        task,
        family,
        setting,
        question,
        '["Paris"]',
        [],
        None if setting == "none" else persona,
        None,
    )


def _reference_prefix_prob(model, tok, row: EvalRow, prefix: tuple[int, ...]) -> float:
    """P(prefix | prompt) from one unpadded forward pass and torch.softmax, token by token."""
    text = tok.apply_chat_template(
        build_prompt(row.question, row.family, row.persona), add_generation_prompt=True, tokenize=False
    )
    ids = tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids + list(prefix)])).logits[0]
    return math.prod(torch.softmax(logits[len(ids) - 1 + k].double(), -1)[t].item() for k, t in enumerate(prefix))


ROWS = [
    _row(0),
    _row(1, question="Who wrote Hamlet, the long play about a prince of Denmark?"),
    _row(2, setting="none"),
    _row(3, persona="a retired sailor who loves long walks on the beach and old maps"),
]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sigma_is_the_softmax_at_the_first_response_position(tiny_model_dir: Path, batch_size: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = resolve_prefixes(tok).ids
    probs = compute(tiny_model_dir, ROWS, backend="hf", device="cpu", dtype="float32", batch_size=batch_size)
    for row, p in zip(ROWS, probs):
        assert p.row_id == row.row_id
        g, q = (_reference_prefix_prob(model, tok, row, ids[m]) for m in Mode)
        assert p.p_general == pytest.approx(g, rel=1e-4) and p.p_personalized == pytest.approx(q, rel=1e-4)
        assert p.mode_mass <= 1.0
        assert p.sigma == pytest.approx(q / (g + q), rel=1e-4)


def test_sigma_of_a_text_prefix_is_the_product_over_its_tokens(text_tokenizer_dir: Path, tmp_path: Path) -> None:
    from conftest import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path / "m", text_tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = resolve_prefixes(tok).ids
    assert min(len(v) for v in ids.values()) > 1
    probs = compute(
        path, ROWS, backend="hf", device="cpu", dtype="float32", batch_size=2, out_file=tmp_path / "s.jsonl"
    )
    for row, p in zip(ROWS, probs):
        g, q = (_reference_prefix_prob(model, tok, row, ids[m]) for m in Mode)
        assert p.p_general == pytest.approx(g, rel=1e-4) and p.p_personalized == pytest.approx(q, rel=1e-4)
        assert g + q <= 1.0
    # resumable: a second call reads the file back, appends nothing
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(l)["row_id"] for l in lines] == [r.row_id for r in ROWS]
    assert compute(path, ROWS, backend="hf", device="cpu", out_file=tmp_path / "s.jsonl") == probs
    assert (tmp_path / "s.jsonl").read_text().splitlines() == lines


def _prob(row_id: str, sigma: float) -> ModeProb:
    """A ModeProb with the given renormalised sigma and a mode mass of 0.5."""
    return ModeProb(row_id, math.log(0.5 * (1 - sigma)), math.log(0.5 * sigma))


def _rec(row_id: str, decoding: str, correct: float, mode: str | None = None, setting: str = "unaligned") -> dict:
    return {
        "row_id": row_id,
        "decoding": decoding,
        "correct": correct,
        "mode": mode or decoding,
        "benchmark": "triviaqa",
        "setting": setting,
    }


def test_calibration_bins_and_ece_by_hand() -> None:
    # (row, sigma, correct general, correct personalized); r6, r7 are ties, r9 has no forced result
    spec = [
        ("r1", 0.05, 1, 0),
        ("r2", 0.15, 0, 1),
        ("r3", 0.12, 1, 0),
        ("r4", 0.95, 0, 1),
        ("r5", 0.999, 0, 1),
        ("r6", 0.5, 1, 1),
        ("r7", 0.7, 0, 0),
        ("r8", 0.65, 1, 0),
    ]
    records = [_rec(r, "general", g) for r, _, g, _ in spec] + [_rec(r, "personalized", p) for r, _, _, p in spec]
    probs = [_prob(r, s) for r, s, _, _ in spec] + [_prob("r9", 0.3)]
    cal = calibration(probs, records, bins=10)
    assert (cal.decisive, cal.ties) == (6, 2)
    filled = [(lo, n, conf, rate) for lo, _, n, conf, rate in cal.bins if n]
    assert [(round(lo, 1), n) for lo, n, _, _ in filled] == [(0.0, 1), (0.1, 2), (0.6, 1), (0.9, 2)]
    assert [c for _, _, c, _ in filled] == pytest.approx([0.05, 0.135, 0.65, 0.9745])
    assert [r for _, _, _, r in filled] == [0.0, 0.5, 0.0, 1.0]
    # ECE = (1 * 0.05 + 2 * 0.365 + 1 * 0.65 + 2 * 0.0255) / 6
    assert cal.ece == pytest.approx(1.481 / 6)


def test_oracle_gap_partition_by_hand() -> None:
    # row: (setting, free mode, free correct, forced general, forced personalized, sigma)
    spec = {
        "a": ("unaligned", "general", 1, 1, 0, 0.2),
        "b": ("unaligned", "general", 0, 0, 1, 0.9),
        "c": ("unaligned", "unknown", 0, 1, 0, 0.4),
        "d": ("aligned", "personalized", 0, 0, 0, 0.6),
        "e": ("aligned", "personalized", 0, 0, 1, 0.3),
        "f": ("aligned", "unknown", 1, 0, 0, 0.5),
    }
    records = []
    for r, (s, mode, free, g, p, _) in spec.items():
        records += [
            _rec(r, "free", free, mode, s),
            _rec(r, "general", g, setting=s),
            _rec(r, "personalized", p, setting=s),
        ]
    gap = oracle_gap(records, [_prob(r, v[5]) for r, v in spec.items()])
    assert gap[("all", "all")] == pytest.approx(
        {
            "items": 6,
            "free": 100 * 2 / 6,
            "upper_bound": 100 * 4 / 6,
            "lost_to_mode_choice": 100 / 6,
            "lost_to_unknown_mode": 100 / 6,
            "lost_in_both": 100 / 6,
            "lost_other": 100 / 6,
            "argmax_sigma": 100 * 3 / 6,
            "expected_sigma": 100 * 2.6 / 6,
        }
    )
    assert gap[("triviaqa", "unaligned")] == pytest.approx(
        {
            "items": 3,
            "free": 100 / 3,
            "upper_bound": 100.0,
            "lost_to_mode_choice": 100 / 3,
            "lost_to_unknown_mode": 100 / 3,
            "lost_in_both": 0.0,
            "lost_other": 0.0,
            "argmax_sigma": 100.0,
            "expected_sigma": 100 * 2.3 / 3,
        }
    )


@pytest.fixture(scope="module")
def samples_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model on 4 TriviaQA (unaligned persona) + 4 FSPO rows, in free, constrained and both forced
    decodings (greedy)."""
    out = tmp_path_factory.mktemp("analyses") / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--samples",
                *HF,
                "--max-new-tokens",
                "5",
                "--benchmarks",
                "triviaqa",
                "fspo_roleplay",
                "--settings",
                "unaligned",
                "--decoding",
                "free",
                "free_constrained",
                "general",
                "personalized",
            ]
        )
        == 0
    )
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_constrained_decoding_and_the_mode_probs_command(
    samples_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from conftest import TEST_SPEC

    from verl_personadual.apps.tiny_model import build_model

    recs = read_predictions(samples_run / "predictions.jsonl")
    by = {(r["row_id"], r["decoding"]): r for r in recs}
    rows = read_eval_set(samples_run / "eval_set.jsonl")
    other = build_model(tmp_path / "other", tiny_model_dir, replace(TEST_SPEC, seed=1))
    out = tmp_path / "mp"
    assert (
        main(
            [
                "mode-probs",
                "--run",
                f"a={samples_run}",
                "--model",
                f"b={other}",
                "--eval-set",
                str(samples_run / "eval_set.jsonl"),
                "--out",
                str(out),
                *HF,
            ]
        )
        == 0
    )
    sig = {l["row_id"]: l for l in map(json.loads, (out / "mode_probs_a.jsonl").read_text().splitlines())}
    sig_b = {l["row_id"]: l for l in map(json.loads, (out / "mode_probs_b.jsonl").read_text().splitlines())}
    assert set(sig) == set(sig_b) == {r.row_id for r in rows}
    for row in rows:
        cons = by[(row.row_id, "free_constrained")]
        s = sig[row.row_id]
        assert s["p_general"] + s["p_personalized"] <= 1.0
        # never an unknown mode; greedy takes sigma's argmax, then generates exactly as when that mode is forced
        assert cons["mode"] == ("personalized" if s["p_personalized"] > s["p_general"] else "general")
        forced = by[(row.row_id, cons["mode"])]
        assert (cons["response"], cons["correct"]) == (forced["response"], forced["correct"])
    # tables recomputed from the JSONL files
    sigma = {(l["label"], l["benchmark"], l["setting"]): l for l in _csv(out / "tables" / "sigma.csv")}
    for label, src in (("a", sig), ("b", sig_b)):
        assert float(sigma[(label, "all", "all")]["sigma_mean"]) == pytest.approx(
            statistics.fmean(v["sigma"] for v in src.values()), abs=1e-4
        )
        fspo = [v["sigma"] for v in src.values() if v["benchmark"] == "fspo_roleplay"]
        assert float(sigma[(label, "fspo_roleplay", "aligned")]["sigma_mean"]) == pytest.approx(
            statistics.fmean(fspo), abs=1e-4
        )
    shift = {(l["benchmark"], l["setting"]): l for l in _csv(out / "tables" / "sigma_shift.csv")}
    want = statistics.fmean(sig_b[k]["sigma"] - sig[k]["sigma"] for k in sig)
    assert float(shift[("all", "all")]["delta"]) == pytest.approx(want, abs=1e-4)
    cons_all = [l for l in _csv(out / "tables" / "constrained.csv") if l["benchmark"] == "all"][0]
    free = [r for r in recs if r["decoding"] == "free"]
    assert float(cons_all["free_unknown_mode_%"]) == pytest.approx(
        100 * statistics.fmean(r["mode"] == "unknown" for r in free), abs=1e-3
    )
    assert float(cons_all["mode_differs_%"]) == pytest.approx(
        100 * statistics.fmean(r["mode"] != by[(r["row_id"], "free_constrained")]["mode"] for r in free), abs=1e-3
    )
    for line in _csv(out / "tables" / "oracle_gap.csv"):  # free + the four losses partition the rows
        parts = ("free_%", "lost_to_mode_choice_%", "lost_to_unknown_mode_%", "lost_in_both_%", "lost_other_%")
        assert sum(float(line[k]) for k in parts) == pytest.approx(100.0, abs=1e-3)
    assert {l["label"] for l in _csv(out / "tables" / "calibration.csv")} == {"a"}  # b has no forced results
    summary = json.loads((out / "summary.json").read_text())
    assert summary["a"]["rows"] == len(rows) and summary["a"]["decisive_rows"] + summary["a"]["tie_rows"] == len(rows)
    for name in ("calibration", "sigma_distribution", "oracle_gap"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # resumed with another checkpoint under the same label: refused, nothing mixed
    before = (out / "mode_probs_a.jsonl").read_text()
    assert main(["mode-probs", "--run", f"a={samples_run}", "--model", f"a={other}", "--out", str(out), *HF]) == 2
    assert (out / "mode_probs_a.jsonl").read_text() == before
    # Table 1 and the mode rates of the run list the constrained decoding next to free
    systems = [l["system"] for l in _csv(samples_run / "tables" / "table1.csv")]
    assert systems.index("free_constrained") > systems.index("free")
    rates = [l for l in _csv(samples_run / "tables" / "mode_rates.csv") if l["decoding"] == "free_constrained"]
    assert rates and all(float(l["unknown_%"]) == 0.0 for l in rates)


def test_multiturn_alignment_from_the_jsonl(samples_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mt"
    argv = [
        "multiturn",
        "--run",
        str(samples_run),
        "--out",
        str(out),
        "--decoding",
        "free_constrained",
        "--max-new-tokens",
        "3",
        "--batch-size",
        "3",
        *HF,
    ]
    assert main(argv) == 0
    single = {
        r["row_id"]: r
        for r in read_predictions(samples_run / "predictions.jsonl")
        if r["decoding"] == "free_constrained"
    }
    rows = {r.row_id: r for r in read_eval_set(samples_run / "eval_set.jsonl")}
    dialogues = [json.loads(l) for l in (out / "dialogues.jsonl").read_text().splitlines()]
    assert sorted(d["second_row_id"] for d in dialogues) == sorted(rows)  # every row is a second turn once
    for d in dialogues:
        first, second = rows[d["first_row_id"]], rows[d["second_row_id"]]
        want_order = "general_to_personalized" if second.benchmark == "fspo_roleplay" else "personalized_to_general"
        assert d["order"] == want_order and family_of(first) != family_of(second)
        f = single[first.row_id]
        assert d["first_response"] == PREFIX_TEXT[Mode.parse(f["mode"])] + f["response"]
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == len(dialogues) and all(p["mode"] != "unknown" for p in preds)
    # alignment recomputed from the JSONL and the single-turn run, per order
    table = {l["order"]: l for l in _csv(out / "tables" / "alignment.csv")}
    for order in ("general_to_personalized", "personalized_to_general"):
        mine = [p for p in preds if p["order"] == order]
        aligned = [p["mode"] == single[p["second_row_id"]]["mode"] for p in mine]
        assert int(table[order]["compared"]) == len(mine) == 4
        assert float(table[order]["aligned_%"]) == pytest.approx(100 * sum(aligned) / len(mine), abs=1e-3)
        assert float(table[order]["single_turn_accuracy_%"]) == pytest.approx(
            100 * statistics.fmean(single[p["second_row_id"]]["correct"] for p in mine), abs=1e-3
        )
    dev = _csv(out / "tables" / "deviation.csv")
    for line in dev:
        mine = [p for p in preds if p["order"] == line["order"] and p["benchmark"] == line["benchmark"]]
        shifted = sum(p["mode"] != single[p["second_row_id"]]["mode"] for p in mine)
        assert (int(line["compared"]), int(line["shifted"])) == (len(mine), shifted)
    # resumed: nothing generated again; another pairing seed in the same directory is refused
    assert main(argv) == 0 and read_predictions(out / "predictions.jsonl") == preds
    assert main([*argv, "--seed", "1"]) == 2
    # ... and so is another second-turn length (multiturn_config.json pins checkpoint and sampling)
    assert main([*argv, "--max-new-tokens", "4"]) == 2  # the last --max-new-tokens wins
    assert read_predictions(out / "predictions.jsonl") == preds
    assert json.loads((out / "multiturn_config.json").read_text())["sampling"]["max_new_tokens"] == 3
    assert (out / "plots" / "alignment.png").exists() and (out / "plots" / "deviation.png").exists()


def _write_run(path: Path, rows: list[EvalRow], records: list[dict]) -> Path:
    write_eval_set(path / "eval_set.jsonl", rows)
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


FILLER = ["quiet", "river", "lamp", "garden", "violin", "paper", "window", "coffee", "bridge", "candle"]


def test_lexical_regression_finds_planted_words(tmp_path: Path) -> None:
    """ "zebra" in the persona -> personalized, "anchor" in the question -> general (it wins over zebra)."""
    rows, records, truth = [], [], {}
    for i in range(85):
        rng = random.Random(i)
        z, anchor = i % 2 == 0, i % 3 == 0
        persona = " ".join(["a"] + rng.sample(FILLER, 3) + (["zebra"] if z else []) + ["keeper"])
        question = " ".join(rng.sample(FILLER, 3) + (["anchor"] if anchor else []) + ["today?"])
        row = _row(i, persona=persona, question=question)
        mode = "unknown" if i >= 80 else ("personalized" if z and not anchor else "general")
        rows.append(row)
        records.append({"row_id": row.row_id, "decoding": "free", "mode": mode, "correct": 0.0})
        truth[row.row_id] = (z, anchor, mode)
    run = _write_run(tmp_path / "run", rows, records)
    out = tmp_path / "lex"
    assert main(["lexical", "--run", str(run), "--out", str(out), "--top", "5"]) == 0
    table = _csv(out / "tables" / "lexical.csv")
    words = {l["word"]: l for l in table}
    assert {"zebra", "anchor"} <= set(list(words)[:2])
    assert float(words["zebra"]["weight"]) > 0 and words["zebra"]["direction"] == "personalized"
    assert float(words["anchor"]["weight"]) < 0 and words["anchor"]["direction"] == "general"
    known = [v for v in truth.values() if v[2] != "unknown"]
    with_z = [v for v in known if v[0]]
    assert int(words["zebra"]["rows_with_word"]) == len(with_z) == 40
    assert float(words["zebra"]["personalized_when_present_%"]) == pytest.approx(
        100 * sum(v[2] == "personalized" for v in with_z) / len(with_z), abs=1e-3
    )
    summary = json.loads((out / "lexical_summary.json").read_text())
    assert (summary["rows_used"], summary["rows_unknown_mode"]) == (80, 5)
    assert summary["personalized"] == sum(v[2] == "personalized" for v in known)
    assert (out / "plots" / "lexical.png").read_bytes()[:4] == b"\x89PNG"
    # a seeded sample: same seed, same fit; the planted sign holds on the sample too
    modes = {r["row_id"]: r["mode"] for r in records}
    a, b = fit(rows, modes, sample=50, seed=3), fit(rows, modes, sample=50, seed=3)
    assert a == b and a.summary["rows_used"] == 50
    assert dict(zip(a.words, a.weights))["zebra"] > 0


def test_mixed_sets_by_hand(tmp_path: Path) -> None:
    pers = [_row(i, "fspo_roleplay", "aligned", persona="a reader") for i in range(10)]
    obj = [_row(i, "triviaqa", "unaligned") for i in range(10)] + [_row(i, "triviaqa", "none") for i in range(5)]
    rows = pers + obj
    obj_correct = {r.row_id: float(i % 2) for i, r in enumerate(obj)}  # half the objective rows right
    run_a = _write_run(
        tmp_path / "a",
        rows,
        [
            {
                "row_id": r.row_id,
                "decoding": "free",
                "mode": "general",
                "correct": 1.0 if r in pers else obj_correct[r.row_id],
            }
            for r in rows
        ],
    )
    run_b = _write_run(
        tmp_path / "b",
        rows,
        [
            {"row_id": r.row_id, "decoding": "free", "mode": "general", "correct": 0.0 if r in pers else 1.0}
            for r in rows
        ],
    )
    out = tmp_path / "mixed"
    assert (
        main(
            [
                "mixed",
                "--run",
                f"a={run_a}",
                f"b={run_b}",
                "--out",
                str(out),
                "--size",
                "6",
                "--ratios",
                "0",
                "0.25",
                "0.5",
                "1",
            ]
        )
        == 0
    )
    table = {(l["run"], float(l["personalized_ratio"])): l for l in _csv(out / "tables" / "mixed.csv")}
    for ratio in (0, 0.25, 0.5, 1):
        k = math.floor(ratio * 6 + 0.5)  # 0, 2, 3, 6
        accs = []
        for seed in (0, 1, 2):
            s = read_eval_set(out / "sets" / f"r{ratio:.2f}_s{seed}.jsonl")
            assert len(s) == 6 and sum(r.benchmark == "fspo_roleplay" for r in s) == k
            assert all(r.setting != "none" for r in s) and len({r.row_id for r in s}) == 6
            accs.append(
                100 * statistics.fmean(1.0 if r.benchmark == "fspo_roleplay" else obj_correct[r.row_id] for r in s)
            )
        line = table[("a", float(ratio))]
        assert float(line["mean_%"]) == pytest.approx(statistics.fmean(accs), abs=1e-3)
        assert float(line["std_%"]) == pytest.approx(statistics.stdev(accs), abs=1e-3)
        assert float(table[("b", float(ratio))]["mean_%"]) == pytest.approx(100 * (6 - k) / 6, abs=1e-3)
    # seeds draw different sets; the same command draws the same ones again
    first = (out / "sets" / "r0.00_s0.jsonl").read_text()
    assert first != (out / "sets" / "r0.00_s1.jsonl").read_text()
    assert main(["mixed", "--run", f"a={run_a}", "--out", str(tmp_path / "again"), "--size", "6", "--ratios", "0"]) == 0
    assert (tmp_path / "again" / "sets" / "r0.00_s0.jsonl").read_text() == first
    assert (out / "plots" / "mixed.png").read_bytes()[:4] == b"\x89PNG"
    # pools too small for the size asked for: one clear error
    assert main(["mixed", "--run", f"a={run_a}", "--out", str(tmp_path / "x"), "--size", "11"]) == 2


def test_selector_and_families() -> None:
    assert family_of(_row(0, "fspo_roleplay", "aligned")) == "personalized"
    assert family_of({"data_source": "alignx", "extra_info": {"task": "x"}}) == "personalized"
    assert (
        family_of({"data_source": "toy", "extra_info": {"task": "helpful"}}, Selector.parse("task=helpful"))
        == "personalized"
    )
    assert family_of(_row(0, task="misleading"), Selector.parse("task=helpful,agreeing")) == "general"
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        Selector.parse("task")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("mode-probs", "expected calibration error"),
        ("multiturn", "mode-alignment rate"),
        ("lexical", "LogisticRegression"),
        ("mixed", "floor(r * N + 0.5)"),
    ],
)
def test_analysis_help_explains_itself(command: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and says.lower() in " ".join(capsys.readouterr().out.split()).lower()


ROOT = Path(__file__).resolve().parents[2]


def _make_pictures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pictures", ROOT / "docs" / "analyses" / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_pictures_are_the_scripts() -> None:
    """The README's Analyses pictures exist, are PNGs, and are exactly the ones make_pictures.py rebuilds."""
    root, module = ROOT, _make_pictures()
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Analyses") : readme.index("\n## ", readme.index("## Analyses") + 1)]
    shown = re.findall(r"\]\(docs/analyses/([\w.]+\.png)\)", section)
    assert sorted(shown) == sorted(module.PICTURES)
    for name in shown:
        assert (root / "docs" / "analyses" / name).read_bytes()[:4] == b"\x89PNG"
    assert "docs/analyses/make_pictures.py" in section


def test_two_turn_stand_in_rows() -> None:
    """make_pictures' taught_mt rows: floor(0.5 * 6 + 0.5) = 3 of 6 rows get a first turn from the other family
    (helpful <-> the rest), finished with that row's family prefix and gold; the answer to learn is unchanged."""
    tasks = ["helpful", "helpful", "misleading", "none", "agreeing", "misleading"]
    rows = [
        {
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "extra_info": {"source_id": f"s{i}", "task": t, "task_family": "free_text", "ground_truth": f"g{i}"},
        }
        for i, t in enumerate(tasks)
    ]
    out = _make_pictures().two_turn_sft_rows(rows, 0.5)
    assert [r["messages"][-1] for r in out] == [r["messages"][-1] for r in rows]
    two = [(i, r) for i, r in enumerate(out) if r["extra_info"]["turns"] == 2]
    assert len(two) == 3
    for i, r in two:
        first = int(r["extra_info"]["first_turn_source_id"][1:])
        assert (tasks[first] == "helpful") != (tasks[i] == "helpful")
        prefix = PREFIX_TEXT[Mode.PERSONALIZED if tasks[first] == "helpful" else Mode.GENERAL]
        assert r["messages"][:4] == [
            {"role": "user", "content": f"q{first}"},
            {"role": "assistant", "content": prefix + json.dumps({"answer": f"g{first}"})},
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"a{i}"},
        ]
