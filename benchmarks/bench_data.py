"""RL data pipeline benchmark: prints figures and ratios against baselines measured in the same run.

1. Offline pipeline throughput on synthetic items in the real schemas (default 100k: 40% UltraMedical, 50% FLAN,
   10% AlignX, plus a PersonaHub pool and PubMedQA / TriviaQA overlap lists): rows/s of the whole build
   (load, filter, compose, write parquet) with offline-template aligned personas, against the baseline of
   only parsing the same JSONL files with ``json.loads``.
2. Aligned-persona generation through ``verl_personadual.utils.llm.LLMClient`` against the local OpenAI-protocol test
   server (in its own process) with a fixed latency: requests/s at 1 vs 16 requests in flight (target
   speed-up >= 12x).

    python benchmarks/bench_data.py [--items 100000] [--requests 320] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the local OpenAI-protocol server lives with the tests

from openai_server import OpenAITestServer  # noqa: E402

from verl_personadual.core.prompts import build_aligned_persona_request  # noqa: E402
from verl_personadual.data.personas import AlignedMode  # noqa: E402
from verl_personadual.data.rl_rows import BuildConfig, build  # noqa: E402
from verl_personadual.utils.llm import LLMClient, LLMConfig  # noqa: E402

FLAN_TASKS = ("bool_q_10templates", "anli_r1_10templates", "math_dataset_10templates", "trivia_qa_10templates")


def _write(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def synthetic_inputs(root: Path, n_items: int, seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    n_um, n_flan = int(n_items * 0.4), int(n_items * 0.5)
    n_ax = n_items - n_um - n_flan

    def um(i: int) -> dict:
        src = ("MedQA", "MedMCQA", "PubMedQA")[i % 3]
        q = f"Case {i}: which finding is most likely in patient {rng.randrange(10**6)}?\n\n" + "\n".join(
            f"{L}. option {L.lower()} {i}" for L in "ABCD"
        )
        return {
            "id": f"{src},{i}",
            "type": "Exam",
            "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "So, the answer is B."}],
            "answer": "ABCD"[i % 4],
            "score": "rated 5",
        }

    def fl(i: int) -> dict:
        task = FLAN_TASKS[i % len(FLAN_TASKS)]
        if task in ("bool_q_10templates", "anli_r1_10templates"):
            return {"inputs": f"Statement {i}: is it true?\nOPTIONS:\n- yes\n- no", "targets": "yes", "task": task}
        return {"inputs": f"Question number {i}: what is {i} plus {i}?", "targets": str(2 * i), "task": task}

    def ax(i: int) -> dict:
        return {
            "prompt": f"Post {i}: any advice?",
            "chosen": f"Detailed advice {i}.",
            "rejected": f"Short {i}.",
            "Preference Direction": [0.5] * 90,
            "Demographic Information": f"A {20 + i % 50}-year-old user {i}.",
            "User-Generated Content": [
                {"prompt": f"Earlier post {i}", "comment": "Nice.", "Preference Direction": [0.5] * 90}
            ],
            "Pair-wise Comparative Feedback": [],
        }

    return {
        "ultramedical": _write(root / "ultramedical.jsonl", (um(i) for i in range(n_um))),
        "flan": _write(root / "flan.jsonl", (fl(i) for i in range(n_flan))),
        "alignx": _write(root / "alignx.jsonl", (ax(i) for i in range(n_ax))),
        "personahub": _write(
            root / "personahub.jsonl", ({"persona": f"A hobbyist number {i}."} for i in range(20_000))
        ),
        "pubmedqa": _write(
            root / "pubmedqa.jsonl", ({"pubid": i, "question": f"Does drug {i} work?"} for i in range(1000))
        ),
        "triviaqa": _write(root / "triviaqa.jsonl", ({"question": f"Who invented gadget {i}?"} for i in range(18_000))),
    }


def bench_offline(n_items: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = synthetic_inputs(Path(tmp), n_items)
        t0 = time.perf_counter()
        parsed = sum(
            1
            for name in ("ultramedical", "flan", "alignx")
            for line in paths[name].open(encoding="utf-8")
            if json.loads(line)
        )
        t_parse = time.perf_counter() - t0
        counts = {
            "ultramedical": int(n_items * 0.4 * 0.9),
            "flan": int(n_items * 0.5 * 0.9),
            "alignx": int(n_items * 0.1 * 0.9),
        }
        vals = {k: v // 20 for k, v in counts.items()}
        cfg = BuildConfig(
            out_dir=Path(tmp) / "out",
            paths=dict(paths),
            train_counts=counts,
            val_counts=vals,
            aligned=AlignedMode.OFFLINE_TEMPLATE,
            progress=False,
        )
        t0 = time.perf_counter()
        manifest = build(cfg)
        t_build = time.perf_counter() - t0
    rows = sum(o["rows"] for o in manifest["outputs"].values())
    print(f"[offline] {parsed} synthetic items; json.loads only: {parsed / t_parse:,.0f} items/s ({t_parse:.2f} s)")
    print(
        f"[offline] full build: {rows:,} rows written in {t_build:.2f} s -> {rows / t_build:,.0f} rows/s, "
        f"{parsed / t_build:,.0f} input items/s; build / parse-only time = {t_build / t_parse:.1f}x"
    )


def _bench_reply(body: dict) -> str:
    return json.dumps({"persona": "A benchmark persona."})


def _serve(latency: float, conn: Connection) -> None:
    """Child process: run the test server until told to stop, then report its max requests in flight."""
    srv = OpenAITestServer(reply=_bench_reply, latency_s=latency).start()
    conn.send(srv.base_url)
    while conn.recv() == "reset":
        conn.send(srv.max_in_flight)
        srv.reset_counters()
    srv.stop()


def bench_llm(n_requests: int, latency: float) -> None:
    """The server runs in its own process, as a real endpoint would, so its threads do not share the client's GIL."""
    requests = [build_aligned_persona_request(f"Synthetic question {i}?") for i in range(n_requests)]
    rates = {}
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(latency, theirs), daemon=True)
    proc.start()
    base_url = ours.recv()
    try:
        for concurrency in (1, 16):
            with tempfile.TemporaryDirectory() as cache:
                client = LLMClient(
                    LLMConfig(base_url=base_url, model="bench", cache_dir=Path(cache), max_concurrency=concurrency),
                    progress=False,
                )
                t0 = time.perf_counter()
                client.complete_many(requests, desc=None)
                elapsed = time.perf_counter() - t0
                assert client.stats.requests == n_requests, client.stats
            ours.send("reset")
            seen = ours.recv()
            rates[concurrency] = n_requests / elapsed
            print(
                f"[llm] {n_requests} requests, {latency * 1000:.0f} ms latency, {concurrency:2d} in flight: "
                f"{elapsed:.2f} s -> {rates[concurrency]:.1f} req/s (max in flight seen by the server {seen})"
            )
    finally:
        ours.send("stop")
        proc.join(timeout=10)
    print(f"[llm] speed-up 16 vs 1 in flight: {rates[16] / rates[1]:.1f}x (ideal 16x, target >= 12x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000, help="synthetic source items (default 100000)")
    p.add_argument("--requests", type=int, default=320, help="aligned-persona requests per setting (default 320)")
    p.add_argument("--latency", type=float, default=0.05, help="server latency in seconds (default 0.05)")
    args = p.parse_args()
    bench_offline(args.items)
    bench_llm(args.requests, args.latency)


if __name__ == "__main__":
    main()
