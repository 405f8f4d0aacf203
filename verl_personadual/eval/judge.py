"""The paper's extract-then-verify LLM judge for PubMedQA and MATH-500 (§4: "we employ GPT-4o-mini as an automated
judge to first extract the concise answer and then verify its correctness").

The judge sees the question, the reference answer and the *whole* response (``prompts.build_extract_verify_prompt``),
so a free-form answer that the rule-based extractor cannot read is still graded. It replies with a JSON object
``{"extracted": <concise answer>, "answer": "yes" | "no"}`` on its last line. Requests go through the project's
``LLMClient`` (any OpenAI-compatible endpoint; bounded concurrency, retries, on-disk cache keyed by model, prompt
and sampling parameters, so a re-run or a resumed run asks nothing twice). A reply without a readable verdict is
rejected by the client's validator (not cached, counted as a failure); an item whose request failed gets no
verdict (``None``): ``eval run`` then saves no prediction for it and exits with status 2 (``eval.run``), so a
rerun asks again.

Long inputs are cut: the question to its first :data:`MAX_QUESTION_CHARS` characters, the response to its *last*
:data:`MAX_RESPONSE_CHARS` (the final answer is at the end).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from verl_personadual.core.prompts import EXTRACTED_KEY, build_extract_verify_prompt
from verl_personadual.core.rewards import extract_answer
from verl_personadual.data.benchmarks import benchmark_names, get_benchmark, is_benchmark
from verl_personadual.utils.llm import LLMBatchError, LLMClient

__all__ = [
    "is_judged",
    "judged_benchmarks",
    "JUDGE_PARAMS",
    "MAX_QUESTION_CHARS",
    "MAX_RESPONSE_CHARS",
    "JudgeVerdict",
    "ExtractVerifyJudge",
    "parse_verdict",
]

logger = logging.getLogger(__name__)

#: Sampling parameters of every judge request (part of the cache key).
JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0}
MAX_QUESTION_CHARS = 8000
MAX_RESPONSE_CHARS = 8000


def is_judged(benchmark: str) -> bool:
    """True for a benchmark registered as graded by the judge (``benchmarks.Benchmark.judged``: the paper's
    PubMedQA and MATH-500)."""
    return is_benchmark(benchmark) and get_benchmark(benchmark).judged


def judged_benchmarks() -> list[str]:
    """The judged benchmarks, in registration order."""
    return [name for name in benchmark_names() if is_judged(name)]


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's reading of one response: the concise answer it extracted ("" when none) and its verdict."""

    extracted: str
    correct: bool


def _extracted(reply: str) -> str:
    """The ``"extracted"`` value of the last line that parses as a JSON object holding it, else ""."""
    for line in reversed(reply.strip().splitlines()):
        line = line.strip().strip("`")
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and EXTRACTED_KEY in obj:
            value = obj[EXTRACTED_KEY]
            return value.strip() if isinstance(value, str) else json.dumps(value)
    return ""


def parse_verdict(reply: str) -> JudgeVerdict | None:
    """The verdict of a judge reply (the answer key's yes / no, read by the reward's extractor) and its extracted
    answer; None when the reply holds no yes / no verdict."""
    found = extract_answer(reply).answer
    words = found.strip().lower().split() if found else []
    if words[:1] not in (["yes"], ["no"]):
        return None
    return JudgeVerdict(_extracted(reply), words[0] == "yes")


def _check(reply: str) -> None:
    """``LLMClient`` validator: a reply without a verdict is rejected (and not cached)."""
    if parse_verdict(reply) is None:
        raise ValueError(f"judge reply has no yes/no verdict: {reply[-200:]!r}")


class ExtractVerifyJudge:
    """Extract-then-verify verdicts from an OpenAI-compatible endpoint (module docstring).

    Args:
        client: the project's LLM client (its config names endpoint, model and cache); the judge sets its own
            validator on every request.
    """

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    @property
    def model(self) -> str:
        return self.client.config.model

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[JudgeVerdict | None]:
        """Verdicts for ``(question, reference, response)`` triples, in order; None for an item whose request
        failed (the failures are logged; the successful replies are cached)."""
        if not items:
            return []
        requests = [
            build_extract_verify_prompt(q[:MAX_QUESTION_CHARS], ref, resp[-MAX_RESPONSE_CHARS:])
            for q, ref, resp in items
        ]
        try:
            replies: list[str | None] = list(
                self.client.complete_many(requests, validate=_check, desc=None, **JUDGE_PARAMS)
            )
        except LLMBatchError as err:
            logger.warning(
                "judge: %d of %d requests failed; those responses are not saved (%s)",
                len(err.failures),
                len(items),
                str(err)[:300],
            )
            replies = err.results
        return [None if r is None else parse_verdict(r) for r in replies]
