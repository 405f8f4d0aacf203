"""Optional LLM-judge scorer for free-form items where rules are weak.

The judge does not own a client: it is given one that satisfies :class:`CompletionClient`, normally the
project's ``verl_personadual.utils.llm.LLMClient`` (cache, bounded concurrency, retries); :func:`default_judge`
builds that one from the ``PERSONADUAL_LLM_*`` environment variables. The judge sees the question, the
reference and the candidate answer (``prompts.build_judge_prompt``) and replies in our own answer format,
``{"answer": "yes"}`` / ``{"answer": "no"}``, read back with :func:`extract.extract_answer`.

In ``compute_score`` it is consulted only for its ``families`` and only when the rules found a valid answer and
said "incorrect" (a rule match is never overturned; a hedge or an answer outside a closed answer set is never
sent). A client failure or an unreadable verdict gives None: the rule verdict stands.

From a verl config: ``+reward.custom_reward_function.reward_kwargs.llm_judge=true`` (and optionally
``...judge_families=[free_text,open_qa]``) makes ``compute_score`` use :func:`default_judge`; the
``PERSONADUAL_LLM_*`` variables must then reach the reward workers (Ray ``runtime_env.env_vars``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Iterable, Mapping, Protocol, Sequence

from verl_personadual.core.prompts import TaskFamily, build_judge_prompt
from verl_personadual.core.rewards.extract import extract_answer
from verl_personadual.core.rewards.families import reward_family
from verl_personadual.core.rewards.normalize import tokens

__all__ = ["CompletionClient", "LLMJudge", "DEFAULT_JUDGE_FAMILIES", "DEFAULT_PARAMS", "default_judge"]

logger = logging.getLogger(__name__)

#: Families the judge is consulted for unless told otherwise.
DEFAULT_JUDGE_FAMILIES = frozenset({TaskFamily.FREE_TEXT})
#: Sampling parameters of judge requests unless told otherwise.
DEFAULT_PARAMS: Mapping[str, Any] = {"temperature": 0.0}


class CompletionClient(Protocol):
    """What the judge needs from a chat client.

    ``complete_many(requests, **params)`` takes a sequence of chat conversations (each a list of
    ``{"role", "content"}`` dicts) and sampling parameters (e.g. ``temperature``), and returns one completion
    text per conversation, in the same order. It may raise on failure.
    """

    def complete_many(self, requests: Sequence[list[dict[str, str]]], **params: Any) -> list[str]: ...


class LLMJudge:
    """Yes/no equivalence judgments from an injected :class:`CompletionClient`.

    Args:
        client: the chat client.
        families: registered reward families the judge is consulted for (``compute_score`` reads this).
        max_chars: question, reference and candidate are each cut to this many characters.
        params: sampling parameters of every request (default: greedy, ``temperature=0``).
    """

    def __init__(
        self,
        client: CompletionClient,
        families: Iterable[TaskFamily | str] = DEFAULT_JUDGE_FAMILIES,
        max_chars: int = 4000,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.families = frozenset(str(reward_family(f).name) for f in families)
        self.max_chars = max_chars
        self.params = dict(DEFAULT_PARAMS if params is None else params)

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
            replies = self.client.complete_many(requests, **self.params)
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

    @staticmethod
    def check_reply(reply: str) -> None:
        """Validation hook for ``LLMClient``: raise ValueError on a reply with no yes/no verdict (not cached)."""
        if LLMJudge._verdict(reply) is None:
            raise ValueError(f"judge reply has no yes/no verdict: {reply[-200:]!r}")


@lru_cache(maxsize=None)
def default_judge(families: tuple[str, ...] | None = None) -> LLMJudge:
    """The process-wide judge (one per ``families``, default ``DEFAULT_JUDGE_FAMILIES``) on
    ``verl_personadual.utils.llm.LLMClient`` configured from ``PERSONADUAL_LLM_*`` (endpoint, model, key, cache dir),
    without progress bars, rejecting (not caching) unreadable verdicts.
    Raises ``verl_personadual.utils.llm.LLMConfigError`` when the endpoint or model is not set."""
    from verl_personadual.utils.llm import LLMClient, LLMConfig

    client = LLMClient(LLMConfig.from_env(), validate=LLMJudge.check_reply, progress=False)
    return LLMJudge(client, DEFAULT_JUDGE_FAMILIES if families is None else families)
