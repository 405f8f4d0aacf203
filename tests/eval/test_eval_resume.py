"""Resume after a crash: no finished item is generated again, no duplicate lines, a torn last line is cut, and
neither persona generation nor the judge repeats a request (counted on a local OpenAI-protocol server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_server import OpenAITestServer

from verl_personadual.core.prompts import DataSource, PersonaSetting
from verl_personadual.core.rewards import compute_score
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval.generate import Decoding, DecodingParams, HFGenerator
from verl_personadual.eval.run import RunConfig, run
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils.llm import LLMConfig

BENCHES = [DataSource.MMLU_PRO, DataSource.PUBMEDQA, DataSource.MATH500]
PERSONA_MARK = "Describe a person who would plausibly ask"
JUDGE_MARK = "You grade a model's response"


def _reply(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if PERSONA_MARK in content:
        return json.dumps({"persona": f"A reader curious about topic {len(content) % 89}."})
    return '{"answer": "yes"}'


class Crash(RuntimeError):
    pass


class CountingGenerator:
    """The real transformers backend; counts prompts and can crash after ``crash_after`` batches."""

    def __init__(self, inner: HFGenerator, crash_after: int | None = None):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.crash_after, self.batches, self.prompts = crash_after, 0, 0

    def generate(self, prompts, max_new_tokens, seeds):
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise Crash("simulated kill")
        self.batches += 1
        self.prompts += len(prompts)
        return self.inner.generate(prompts, max_new_tokens, seeds)


def _count(srv: OpenAITestServer, mark: str) -> int:
    return sum(mark in b["messages"][-1]["content"] for b in srv.bodies)


def test_resume_after_crash(tiny_model_dir: Path, tmp_path: Path) -> None:
    with OpenAITestServer(reply=_reply) as srv:
        cfg = RunConfig(
            model=str(tiny_model_dir),
            out_dir=tmp_path / "run",
            benchmarks=BENCHES,
            settings=list(PersonaSetting),
            decodings=[Decoding.FREE, Decoding.GENERAL, Decoding.PERSONALIZED],
            paths=eval_sample_paths(),
            batch_size=10,
            decoding=DecodingParams(max_new_tokens=6, temperature=1.0, seed=3),
            judge=True,
            llm=LLMConfig(base_url=srv.base_url, model="m", cache_dir=tmp_path / "cache"),
            progress=False,
        )
        total = 4 * len(BENCHES) * 3 * 3  # items x benchmarks x settings x decodings
        hf = HFGenerator(cfg.model, cfg.decoding)
        with pytest.raises(Crash):
            run(cfg, generator=CountingGenerator(hf, crash_after=3))
        pred = cfg.out_dir / "predictions.jsonl"
        first = read_predictions(pred)
        assert len(first) == 30
        persona_requests = _count(srv, PERSONA_MARK)
        assert persona_requests == 4 * len(BENCHES)  # one per objective item
        # A kill in the middle of a write leaves a torn last line.
        with open(pred, "a") as f:
            f.write('{"row_id": "mmlu_pro:7|none", "decoding": "fr')

        gen = CountingGenerator(hf)
        run(cfg, generator=gen)
        assert gen.prompts == total - len(first)
        records = read_predictions(pred)
        assert len(records) == total
        assert len({(r["row_id"], r["decoding"]) for r in records}) == total
        assert records[: len(first)] == first
        assert _count(srv, PERSONA_MARK) == persona_requests  # the eval set was reused

        # The extract-then-verify judge graded every PubMedQA / MATH-500 response (the scripted judge says yes), and
        # every distinct request was sent exactly once over both runs (the rest came from the cache).
        judged = set()
        rows = {
            json.loads(l)["row_id"]: json.loads(l) for l in (cfg.out_dir / "eval_set.jsonl").read_text().splitlines()
        }
        for r in records:
            if r["benchmark"] not in ("pubmedqa", "math500"):
                assert "judge_correct" not in r
                continue
            row = rows[r["row_id"]]
            rule = compute_score(r["benchmark"], r["response"], row["gold"], {"task_family": r["family"]})
            assert (r["rule_correct"], r["judge_correct"], r["correct"], r["grader"]) == (
                rule["correct"],
                1.0,
                1.0,
                "judge",
            )
            judged.add((row["question"], row["gold"], r["response"]))
        assert _count(srv, JUDGE_MARK) == len(judged) > 0

        # A finished run: nothing generated, nothing requested. Rebuilding the eval set (file removed) gives the
        # same bytes from the LLM cache, without a request.
        before = srv.requests
        saved = (cfg.out_dir / "eval_set.jsonl").read_bytes()
        (cfg.out_dir / "eval_set.jsonl").unlink()
        gen = CountingGenerator(hf)
        run(cfg, generator=gen)
        assert gen.prompts == 0 and srv.requests == before
        assert (cfg.out_dir / "eval_set.jsonl").read_bytes() == saved
