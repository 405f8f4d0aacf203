"""Expert trajectories for the SFT data: reply normalisation, correctness, and gain-based mode selection.

Pure functions (no I/O, no randomness); ``data_preprocess.build_sft`` runs them on every expert reply.

**Reply normalisation** (:func:`normalize_reply`). The expert is asked for our answer format (reasoning, then
``{"answer": ...}`` on the last line, ``prompts.answer_instruction``). The answer is whatever the reward code's
extractor (``rewards.extract_answer``) finds, taken verbatim (stripped); the *reasoning* is the reply without
its final answer object when the reply ends with one (``format_ok``), together with a code-fence or
``<answer>`` opener left right before it; otherwise (the answer came from a fallback: loose JSON, ``\\boxed``,
"the answer is X") the whole reply is the reasoning. The SFT target is then
``<mode prefix> + reasoning + "\\n" + prompts.format_answer(answer)`` (:func:`assistant_text`).
A reply is *unusable* (:class:`Problem`) when it holds ``<think>`` tags (a reasoning server without a reasoning
parser; such tags would collide with chat templates that treat them specially), when no answer can be extracted,
or when nothing is left as reasoning (a bare answer).

**Correctness** (:func:`score_trajectory`): ``rewards.compute_score`` on exactly the normalised text the SFT row
will hold (without the prefix, which verl strips as a special token), so a kept trajectory is correct iff the
RL reward would call it correct.

**Selection** (:func:`select`), ``g`` / ``p`` = the general / personalized trajectory is usable and correct:

=====================  ===================================  ==================  ==========================
item                   outcome                              kept mode           :class:`Decision`
=====================  ===================================  ==================  ==========================
objective              p and not g (g wrong or unusable)    personalized        ``persona_gain``
objective              g and p (tie)                        ``tie`` (general)   ``both_correct``
objective              g and not p                          general             ``general_only``
objective              g usable but wrong, not p            general [#]_        ``both_wrong``
objective              g unusable, not p                    dropped             ``general_unusable``
personalized (AlignX)  p usable and correct                 personalized        ``personalized_correct``
personalized (AlignX)  p usable but wrong                   personalized [#]_   ``personalized_wrong``
personalized (AlignX)  p unusable                           dropped             ``personalized_unusable``
=====================  ===================================  ==================  ==========================

.. [#] The paper keeps the general trajectory whenever the persona brought no gain; with
   ``require_correct=True`` wrong trajectories are dropped instead (decision unchanged, ``mode`` None).

Ties therefore go to general mode by default: the persona must *change the outcome* to earn a personalized
trajectory. ``tie=Mode.PERSONALIZED`` keeps the personalized trajectory when both are correct instead (the paper's
Table 5, e.g. 270 general / 1,730 personalized for UltraMedical, is hard to reach with general ties and a strong
expert; this switch is how to test that reading).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Mapping

from verl_personadual.modes import Mode
from verl_personadual.prompts import format_answer
from verl_personadual.rewards import compute_score, extract_answer

__all__ = [
    "Problem",
    "Decision",
    "Trajectory",
    "Selection",
    "normalize_reply",
    "score_trajectory",
    "assistant_text",
    "select",
]


class Problem(str, enum.Enum):
    """Why an expert reply cannot be an SFT target."""

    THINK_TAGS = "think_tags"
    NO_ANSWER = "no_answer"
    NO_REASONING = "no_reasoning"

    def __str__(self) -> str:
        return self.value


class Decision(str, enum.Enum):
    """The row of the selection table (module docstring) an item fell in."""

    PERSONA_GAIN = "persona_gain"
    BOTH_CORRECT = "both_correct"
    GENERAL_ONLY = "general_only"
    BOTH_WRONG = "both_wrong"
    GENERAL_UNUSABLE = "general_unusable"
    PERSONALIZED_CORRECT = "personalized_correct"
    PERSONALIZED_WRONG = "personalized_wrong"
    PERSONALIZED_UNUSABLE = "personalized_unusable"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Trajectory:
    """One normalised expert reply.

    ``reasoning`` and ``answer`` are set iff ``problem is None``; ``correct`` is False for unusable replies.
    """

    reasoning: str | None
    answer: str | None
    correct: bool
    problem: Problem | None

    @property
    def usable(self) -> bool:
        return self.problem is None

    def body(self) -> str:
        """The trajectory without mode prefix: ``reasoning + "\\n" + format_answer(answer)``."""
        if self.reasoning is None or self.answer is None:
            raise ValueError(f"an unusable trajectory ({self.problem}) has no body")
        return f"{self.reasoning}\n{format_answer(self.answer)}"


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`select`: the kept mode (None = item dropped) and why."""

    mode: Mode | None
    decision: Decision


_THINK = re.compile(r"</?think>", re.IGNORECASE)
_OPENER = re.compile(r"\s*(?:```(?:json)?|<answer>)?\s*\Z", re.IGNORECASE)


def normalize_reply(reply: str) -> tuple[str, str] | Problem:
    """``(reasoning, answer)`` of an expert reply, or the :class:`Problem` that makes it unusable."""
    if _THINK.search(reply):
        return Problem.THINK_TAGS
    found = extract_answer(reply)
    if found.answer is None:
        return Problem.NO_ANSWER
    reasoning = reply
    if found.format_ok and found.span is not None:
        reasoning = _OPENER.sub("", reply[: found.span[0]])
    reasoning = reasoning.strip()
    if not reasoning or reasoning == found.answer:
        return Problem.NO_REASONING
    return reasoning, found.answer


def score_trajectory(
    reply: str, data_source: str, ground_truth: Any, extra_info: Mapping[str, Any]
) -> Trajectory:
    """Normalise ``reply`` and grade the normalised body with the project's reward (see module docstring).

    ``ground_truth`` / ``extra_info`` are the RL row's ``reward_model.ground_truth`` and ``extra_info`` (at least
    ``task_family``; ``choices`` for option families). Raises ``rewards.RewardInputError`` for a bad row.
    """
    parsed = normalize_reply(reply)
    if isinstance(parsed, Problem):
        return Trajectory(None, None, False, parsed)
    reasoning, answer = parsed
    trajectory = Trajectory(reasoning, answer, False, None)
    result = compute_score(data_source, trajectory.body(), ground_truth, dict(extra_info))
    return Trajectory(reasoning, answer, result["correct"] == 1.0, None)


def assistant_text(mode: Mode, trajectory: Trajectory) -> str:
    """The SFT assistant turn: ``mode.prefix + reasoning + "\\n" + format_answer(answer)``."""
    return mode.prefix + trajectory.body()


def select(
    general: Trajectory | None,
    personalized: Trajectory,
    *,
    require_correct: bool = False,
    tie: Mode = Mode.GENERAL,
) -> Selection:
    """Gain-based selection (table in the module docstring).

    ``general is None`` marks a personalized item (AlignX: no general trajectory is generated); otherwise the
    item is objective. ``require_correct`` drops items whose kept trajectory is wrong; ``tie`` is the mode kept
    when both trajectories of an objective item are correct.
    """
    if general is None:
        if not personalized.usable:
            return Selection(None, Decision.PERSONALIZED_UNUSABLE)
        if personalized.correct:
            return Selection(Mode.PERSONALIZED, Decision.PERSONALIZED_CORRECT)
        return Selection(None if require_correct else Mode.PERSONALIZED, Decision.PERSONALIZED_WRONG)
    if personalized.correct and not general.correct:
        return Selection(Mode.PERSONALIZED, Decision.PERSONA_GAIN)
    if general.correct and personalized.correct:
        return Selection(tie, Decision.BOTH_CORRECT)
    if general.correct:
        return Selection(Mode.GENERAL, Decision.GENERAL_ONLY)
    if general.usable:
        return Selection(None if require_correct else Mode.GENERAL, Decision.BOTH_WRONG)
    return Selection(None, Decision.GENERAL_UNUSABLE)
