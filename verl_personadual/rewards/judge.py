"""Optional LLM-judge scorer for free-form items where rules are weak.

The judge does not own a client: it is given one that satisfies :class:`CompletionClient` (the project's
OpenAI-compatible client in ``verl_personadual.llm`` is meant to, with its cache, bounded concurrency and
retries). The judge sees the question, the reference and the candidate answer (``prompts.build_judge_prompt``)
and replies in our own answer format, ``{"answer": "yes"}`` / ``{"answer": "no"}``, read back with
:func:`extract.extract_answer`.

In ``compute_score`` it is consulted only for its ``families`` and only when the rules said "incorrect" (a
rule match is never overturned). A client failure or an unreadable verdict gives None: the rule verdict stands.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Protocol, Sequence

from verl_personadual.prompts import TaskFamily, build_judge_prompt
from verl_personadual.rewards.extract import extract_answer
from verl_personadual.rewards.normalize import tokens

__all__ = ["CompletionClient", "LLMJudge", "DEFAULT_JUDGE_FAMILIES"]

logger = logging.getLogger(__name__)

#: Families the judge is consulted for unless told otherwise.
DEFAULT_JUDGE_FAMILIES = frozenset({TaskFamily.FREE_TEXT})


class CompletionClient(Protocol):
    """What the judge needs from a chat client.

    ``complete_many(requests)`` takes a sequence of chat conversations (each a list of ``{"role", "content"}``
    dicts) and returns one completion text per conversation, in the same order. It may raise on failure.
    """

    def complete_many(self, requests: Sequence[list[dict[str, str]]]) -> list[str]: ...


class LLMJudge:
    """Yes/no equivalence judgments from an injected :class:`CompletionClient`.

    Args:
        client: the chat client.
        families: task families the judge is consulted for (``compute_score`` reads this).
        max_chars: question, reference and candidate are each cut to this many characters.
    """

    def __init__(
        self,
        client: CompletionClient,
        families: Iterable[TaskFamily | str] = DEFAULT_JUDGE_FAMILIES,
        max_chars: int = 4000,
    ) -> None:
        self.client = client
        self.families = frozenset(TaskFamily(f) for f in families)
        self.max_chars = max_chars

    def judge_many(self, items: Sequence[tuple[str, Any, str]]) -> list[bool | None]:
        """Verdicts for ``(question, reference, candidate)`` triples: True / False, None when unknown.

        A reference given as a list (aliases) is shown joined with " | ".
        """
        if not items:
            return []
        requests = []
        for question, reference, candidate in items:
            ref = " | ".join(map(str, reference)) if isinstance(reference, (list, tuple)) else str(reference)
            n = self.max_chars
            requests.append(build_judge_prompt(question[:n], ref[:n], candidate[:n]))
        try:
            replies = self.client.complete_many(requests)
        except Exception:
            logger.warning(
                "LLM judge: client failed on %d item(s); keeping the rule verdicts", len(items), exc_info=True
            )
            return [None] * len(items)
        if len(replies) != len(items):
            logger.warning("LLM judge: %d replies for %d requests; keeping the rule verdicts", len(replies), len(items))
            return [None] * len(items)
        return [self._verdict(r) for r in replies]

    def judge(self, question: str, reference: Any, candidate: str) -> bool | None:
        """Verdict for one item (see :meth:`judge_many`)."""
        return self.judge_many([(question, reference, candidate)])[0]

    @staticmethod
    def _verdict(reply: Any) -> bool | None:
        answer = extract_answer(reply).answer if isinstance(reply, str) else None
        words = tokens(answer) if answer else []
        if words[:1] == ["yes"]:
            return True
        if words[:1] == ["no"]:
            return False
        return None
