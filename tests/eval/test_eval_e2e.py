"""End to end on the shipped fixtures (real hub schemas) with a tiny random Qwen3 on CPU: every benchmark x
persona setting x decoding mode, the JSONL, tables recomputed independently, plots; resume after a crash; no
repeated persona / judge requests on re-run (counted on a local OpenAI-protocol server)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from commands import teach
from openai_server import OpenAITestServer

from verl_personadual.apps.eval_cli import main
from verl_personadual.core.prompts import build_prompt
from verl_personadual.data.benchmarks import load_benchmark
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval.generate import prompt_ids
from verl_personadual.eval.store import read_predictions

N_ITEMS = 4  # every fixture file has 4 items
OBJECTIVE = ["mmlu_pro", "supergpqa", "triviaqa", "pubmedqa", "math500"]
PERSONALIZED = ["personafeedback", "fspo_roleplay"]
SETTINGS = ["none", "unaligned", "aligned"]
DECODINGS = ["free", "general", "personalized"]


def _reply(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if "Describe a person who would plausibly ask" in content:
        return json.dumps({"persona": f"A specialist who wonders about item {len(content) % 97}."})
    return '{"answer": "yes"}'


@pytest.fixture(scope="module")
def taught_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen3 after ~80 CPU steps on the fixture prompts (a second or so of work): it opens a free
    response with a mode token and answers ``{"answer": "B"}`` after ``[General_mode]`` and a bare ``C`` after
    ``[Personalized_mode]``, so accuracies differ between modes and from zero (a purely random model scores 0
    almost everywhere, which would make the table checks vacuous)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g, p = tok.convert_tokens_to_ids("[General_mode]"), tok.convert_tokens_to_ids("[Personalized_mode]")
    answer = {g: tok.encode('{"answer": "B"}', add_special_tokens=False), p: tok.encode("C", add_special_tokens=False)}
    seqs = []
    paths = eval_sample_paths()
    for bench in OBJECTIVE + PERSONALIZED:
        for item in load_benchmark(bench, paths[bench])[0].items:
            for persona in [None, "A sailor."] if item.persona is None else [item.persona]:
                ids = prompt_ids(tok, build_prompt(item.question, item.family, persona), {})
                seqs.append((ids, [p if persona else g]))
                seqs += [(ids + [m], answer[m] + [tok.eos_token_id]) for m in (g, p)]
    return teach(model, tok, seqs, tmp_path_factory.mktemp("taught"))


@pytest.fixture()
def server():
    with OpenAITestServer(reply=_reply) as srv:
        yield srv


def _args(model: Path, out: Path, srv: OpenAITestServer, cache: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--out",
        str(out),
        "--samples",
        "--no-progress",
        "--max-new-tokens",
        "12",
        "--batch-size",
        "8",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--llm-base-url",
        srv.base_url,
        "--llm-model",
        "judge-m",
        "--llm-cache-dir",
        str(cache),
        *extra,
    ]


def test_full_run_tables_and_plots(taught_model_dir: Path, tmp_path: Path, server: OpenAITestServer) -> None:
    out = tmp_path / "run"
    assert main(_args(taught_model_dir, out, server, tmp_path / "cache", "--judge")) == 0
    records = read_predictions(out / "predictions.jsonl")
    n_rows = N_ITEMS * (len(OBJECTIVE) * len(SETTINGS) + len(PERSONALIZED))
    assert len(records) == n_rows * len(DECODINGS)
    assert len({(r["row_id"], r["decoding"]) for r in records}) == len(records)
    for r in records:
        if r["decoding"] != "free":
            assert r["mode"] == r["decoding"]
    eval_rows = [json.loads(l) for l in (out / "eval_set.jsonl").read_text().splitlines()]
    assert len(eval_rows) == n_rows
    assert all(r["persona"] for r in eval_rows if r["setting"] != "none")

    # Independent recomputation of every cell from the JSONL.
    acc = defaultdict(list)
    both = defaultdict(dict)
    for r in records:
        acc[(r["benchmark"], r["setting"], r["decoding"])].append(r["correct"])
        if r["decoding"] != "free":
            both[(r["benchmark"], r["setting"], r["row_id"])][r["decoding"]] = r["correct"]
    for (b, s, _), d in both.items():
        acc[(b, s, "upper_bound")].append(max(d["general"], d["personalized"]))
    pct = {k: 100 * sum(v) / len(v) for k, v in acc.items()}
    # the taught model makes the checks below non-vacuous: some answers right, modes that differ
    assert 0 < sum(r["correct"] for r in records) < len(records)
    assert any(pct[(b, s, "general")] != pct[(b, s, "personalized")] for b, s, _ in pct)
    assert any(pct[(b, s, "upper_bound")] > max(pct[(b, s, "general")], pct[(b, s, "personalized")]) for b, s, _ in pct)

    with open(out / "tables" / "table1.csv") as f:
        table = {row["system"]: row for row in csv.DictReader(f)}
    assert list(table) == ["free", "general", "personalized", "upper_bound"]
    for dec, row in table.items():
        for b in OBJECTIVE:
            for s in SETTINGS:
                assert float(row[f"{b}/{s}_%"]) == pytest.approx(pct[(b, s, dec)], abs=1e-4)
        for b in PERSONALIZED:
            assert float(row[f"{b}_%"]) == pytest.approx(pct[(b, "aligned", dec)], abs=1e-4)
        for s in SETTINGS:
            want = sum(pct[(b, s, dec)] for b in OBJECTIVE) / len(OBJECTIVE)
            assert float(row[f"objective/{s}_%"]) == pytest.approx(want, abs=1e-4)
        want = sum(pct[(b, "aligned", dec)] for b in PERSONALIZED) / len(PERSONALIZED)
        assert float(row["personalized_%"]) == pytest.approx(want, abs=1e-4)
    # Table 1's column order: the paper's (PubMedQA first), unaligned before aligned, no-persona columns last.
    assert list(table["free"])[1:4] == ["pubmedqa/unaligned_%", "pubmedqa/aligned_%", "triviaqa/unaligned_%"]
    assert list(table["free"])[-1] == "objective/none_%"

    # Rule vs judge (the scripted judge calls every PubMedQA / MATH-500 response correct).
    with open(out / "tables" / "judge_agreement.csv") as f:
        agreement = {row["benchmark"]: row for row in csv.DictReader(f)}
    assert list(agreement) == ["pubmedqa", "math500"]
    for b, row in agreement.items():
        judged = [r for r in records if r["benchmark"] == b]
        rule = 100 * sum(r["rule_correct"] for r in judged) / len(judged)
        assert int(row["responses"]) == int(row["graded"]) == len(judged)
        assert float(row["judge_%"]) == 100.0 and float(row["rule_%"]) == pytest.approx(rule, abs=1e-4)
        assert float(row["agreement_%"]) == pytest.approx(rule, abs=1e-4)
        assert int(row["judge_only_correct"]) == sum(r["rule_correct"] == 0.0 for r in judged)
        assert int(row["rule_only_correct"]) == 0
    for b in OBJECTIVE + PERSONALIZED:
        for s in SETTINGS if b in OBJECTIVE else ["aligned"]:
            ub = pct[(b, s, "upper_bound")]
            assert ub >= pct[(b, s, "general")] and ub >= pct[(b, s, "personalized")]

    with open(out / "tables" / "mode_rates.csv") as f:
        rates = list(csv.DictReader(f))
    assert len(rates) == len(OBJECTIVE) * len(SETTINGS) + len(PERSONALIZED)
    for row in rates:
        free = [
            r
            for r in records
            if r["decoding"] == "free" and r["benchmark"] == row["benchmark"] and r["setting"] == row["setting"]
        ]
        assert int(row["items"]) == len(free) == N_ITEMS
        for m in ("general", "personalized", "unknown"):
            want = 100 * sum(r["mode"] == m for r in free) / len(free)
            assert float(row[f"{m}_%"]) == pytest.approx(want, abs=1e-4)

    with open(out / "tables" / "mixed_ratio.csv") as f:
        mixed = list(csv.DictReader(f))
    obj = [
        r["correct"]
        for r in records
        if r["decoding"] == "free" and r["benchmark"] in OBJECTIVE and r["setting"] != "none"
    ]
    per = [r["correct"] for r in records if r["decoding"] == "free" and r["benchmark"] in PERSONALIZED]
    for row in mixed:
        x = float(row["personalized_ratio"])
        want = 100 * ((1 - x) * sum(obj) / len(obj) + x * sum(per) / len(per))
        assert float(row["free_%"]) == pytest.approx(want, abs=1e-4)
    for name in ("mode_rates", "accuracy_by_setting", "mixed_ratio"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tables" / "table1.md").read_text().startswith("| system |")
