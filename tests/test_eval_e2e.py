"""End to end on the shipped fixtures (real hub schemas) with a tiny random Qwen3 on CPU: every benchmark x
persona setting x decoding mode, the JSONL, tables recomputed independently, plots; resume after a crash; no
repeated persona / judge requests on re-run (counted on a local OpenAI-protocol server)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from openai_server import OpenAITestServer
from verl_personadual.eval.cli import main, samples_paths
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


@pytest.fixture()
def server():
    with OpenAITestServer(reply=_reply) as srv:
        yield srv


def _args(model: Path, out: Path, srv: OpenAITestServer, cache: Path, *extra: str) -> list[str]:
    return [
        "run", "--model", str(model), "--out", str(out), "--samples", "--no-progress",
        "--max-new-tokens", "6", "--temperature", "1.0", "--batch-size", "8", "--backend", "hf", "--device", "cpu",
        "--llm-base-url", srv.base_url, "--llm-model", "judge-m", "--llm-cache-dir", str(cache), *extra,
    ]


def test_full_run_tables_and_plots(tiny_model_dir: Path, tmp_path: Path, server: OpenAITestServer) -> None:
    out = tmp_path / "run"
    assert main(_args(tiny_model_dir, out, server, tmp_path / "cache", "--judge")) == 0
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

    with open(out / "tables" / "table1.csv") as f:
        table = {row["system"]: row for row in csv.DictReader(f)}
    assert list(table) == ["free", "general", "personalized", "upper_bound"]
    for dec, row in table.items():
        cells = []
        for b in OBJECTIVE:
            for s in SETTINGS:
                assert float(row[f"{b}/{s}"]) == pytest.approx(pct[(b, s, dec)], abs=1e-4)
                cells.append(pct[(b, s, dec)])
        for b in PERSONALIZED:
            assert float(row[b]) == pytest.approx(pct[(b, "aligned", dec)], abs=1e-4)
            cells.append(pct[(b, "aligned", dec)])
        for s in SETTINGS:
            want = sum(pct[(b, s, dec)] for b in OBJECTIVE) / len(OBJECTIVE)
            assert float(row[f"objective/{s}"]) == pytest.approx(want, abs=1e-4)
        assert float(row["average"]) == pytest.approx(sum(cells) / len(cells), abs=1e-4)
    for b in OBJECTIVE + PERSONALIZED:
        for s in SETTINGS if b in OBJECTIVE else ["aligned"]:
            ub = pct[(b, s, "upper_bound")]
            assert ub >= pct[(b, s, "general")] and ub >= pct[(b, s, "personalized")]

    with open(out / "tables" / "mode_rates.csv") as f:
        rates = list(csv.DictReader(f))
    assert len(rates) == len(OBJECTIVE) * len(SETTINGS) + len(PERSONALIZED)
    for row in rates:
        free = [r for r in records if r["decoding"] == "free" and r["benchmark"] == row["benchmark"]
                and r["setting"] == row["setting"]]
        assert int(row["items"]) == len(free) == N_ITEMS
        for m in ("general", "personalized", "unknown"):
            want = 100 * sum(r["mode"] == m for r in free) / len(free)
            assert float(row[f"{m}_%"]) == pytest.approx(want, abs=1e-4)

    with open(out / "tables" / "mixed_ratio.csv") as f:
        mixed = list(csv.DictReader(f))
    obj = [r["correct"] for r in records if r["decoding"] == "free" and r["benchmark"] in OBJECTIVE and r["setting"] != "none"]
    per = [r["correct"] for r in records if r["decoding"] == "free" and r["benchmark"] in PERSONALIZED]
    for row in mixed:
        x = float(row["personalized_ratio"])
        want = 100 * ((1 - x) * sum(obj) / len(obj) + x * sum(per) / len(per))
        assert float(row["free"]) == pytest.approx(want, abs=1e-4)
    for name in ("mode_rates", "accuracy_by_setting", "mixed_ratio"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tables" / "table1.md").read_text().startswith("| system |")
