"""Expert trajectories for the SFT data: reply normalisation, correctness, and gain-based mode selection.

Pure functions (no I/O, no randomness); ``verl_personadual.data.sft_rows`` runs them on every expert reply.

**Reply normalisation** (:func:`normalize_reply`). The expert is asked for our answer format (reasoning, then
``{"answer": ...}`` on the last line, ``prompts.answer_instruction``). A reasoning expert (the paper used
DeepSeek-R1) also thinks before it answers; its thinking arrives either in the reasoning-parser field of the
reply (``llm.Reply.reasoning``: vLLM ``--reasoning-parser``, DeepSeek's API) or inline as a think block at the
head of the content (``<think>...</think>``, or only ``...</think>`` when the chat template opened it). With
``keep_reasoning`` (the default, ``build_sft --expert-reasoning keep``) that thinking becomes the head of the
trajectory's reasoning, as plain text without tags (tags would collide with chat templates that treat them
specially): reasoning = thinking + a blank line + the content's own reasoning; with ``keep_reasoning=False``
(``--expert-reasoning drop``) the thinking is discarded and only the content counts. The answer is whatever the
reward code's extractor (``rewards.extract_answer``) finds in the content after the think block, taken verbatim
(stripped); the content's reasoning is the content without its final answer object when it ends with one
(``format_ok``), together with a code-fence or ``<answer>`` opener left right before it; otherwise (the answer
came from a fallback: loose JSON, ``\\boxed``, "the answer is X") the whole content is the reasoning. The SFT
target is then ``<mode prefix> + reasoning + "\\n" + prompts.format_answer(answer)`` (:func:`assistant_text`).
A reply is *unusable* (:class:`Problem`) when its think tags are malformed (an unclosed ``<think>``: the reply
was cut off while thinking; several blocks; a block that does not open the reply), when no answer can be
extracted, or when nothing is left as reasoning (a bare answer, and no thinking kept).

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

**Single-mode data** (:func:`select_single`, ``build_sft --only-mode``: the SFT stage of the paper's G-SFT-RL /
P-SFT-RL baselines, single-capability models): every item has one trajectory, in that mode, kept when usable
(and, with ``require_correct``, correct): decisions ``only_mode_correct`` / ``only_mode_wrong`` (kept unless
``require_correct``) / ``only_mode_unusable`` (dropped). No gain-based choice is made.

Ties therefore go to general mode by default: the persona must *change the outcome* to earn a personalized
trajectory. ``tie=Mode.PERSONALIZED`` keeps the personalized trajectory when both are correct instead (the paper's
Table 5, e.g. 270 general / 1,730 personalized for UltraMedical, is hard to reach with general ties and a strong
expert; this switch is how to test that reading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import format_answer
from verl_personadual.core.rewards import compute_score, extract_answer
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "Problem",
    "Decision",
    "Trajectory",
    "Selection",
    "normalize_reply",
    "split_think",
    "score_trajectory",
    "assistant_text",
    "select",
    "select_single",
]


class Problem(StrEnum):
    """Why an expert reply cannot be an SFT target."""

    THINK_TAGS = "think_tags"
    NO_ANSWER = "no_answer"
    NO_REASONING = "no_reasoning"


class Decision(StrEnum):
    """The row of the selection table (module docstring) an item fell in."""

    PERSONA_GAIN = "persona_gain"
    BOTH_CORRECT = "both_correct"
    GENERAL_ONLY = "general_only"
    BOTH_WRONG = "both_wrong"
    GENERAL_UNUSABLE = "general_unusable"
    PERSONALIZED_CORRECT = "personalized_correct"
    PERSONALIZED_WRONG = "personalized_wrong"
    PERSONALIZED_UNUSABLE = "personalized_unusable"
    ONLY_MODE_CORRECT = "only_mode_correct"
    ONLY_MODE_WRONG = "only_mode_wrong"
    ONLY_MODE_UNUSABLE = "only_mode_unusable"


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


_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_OPENER = re.compile(r"\s*(?:```(?:json)?|<answer>)?\s*\Z", re.IGNORECASE)


def split_think(content: str) -> tuple[str | None, str] | Problem:
    """``(thinking, rest)`` of a reply's content: the inline think block at its head (None when there is none)
    and the text after it; ``Problem.THINK_TAGS`` for malformed tags (module docstring)."""
    opens, closes = list(_THINK_OPEN.finditer(content)), list(_THINK_CLOSE.finditer(content))
    if not opens and not closes:
        return None, content
    if len(closes) != 1 or len(opens) > 1:
        return Problem.THINK_TAGS
    close = closes[0]
    start = 0
    if opens:
        if opens[0].start() > close.start() or content[: opens[0].start()].strip():
            return Problem.THINK_TAGS
        start = opens[0].end()
    return content[start : close.start()], content[close.end() :]


def normalize_reply(reply: str, reasoning: str | None = None, keep_reasoning: bool = True) -> tuple[str, str] | Problem:
    """``(reasoning, answer)`` of an expert reply (its content, and its reasoning-parser field if any), or the
    :class:`Problem` that makes it unusable (module docstring)."""
    split = split_think(reply)
    if isinstance(split, Problem):
        return split
    inline, content = split
    found = extract_answer(content)
    if found.answer is None:
        return Problem.NO_ANSWER
    own = content
    if found.format_ok and found.span is not None:
        own = _OPENER.sub("", content[: found.span[0]])
    own = own.strip()
    if own == found.answer:
        own = ""
    thinking = [t.strip() for t in (reasoning, inline) if t and t.strip()] if keep_reasoning else []
    text = "\n\n".join(thinking + ([own] if own else []))
    if not text:
        return Problem.NO_REASONING
    return text, found.answer


def score_trajectory(
    reply: str,
    data_source: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any],
    reasoning: str | None = None,
    keep_reasoning: bool = True,
) -> Trajectory:
    """Normalise ``reply`` (with its reasoning-parser field ``reasoning``; :func:`normalize_reply`) and grade the
    normalised body with the project's reward (see module docstring).

    ``ground_truth`` / ``extra_info`` are the RL row's ``reward_model.ground_truth`` and ``extra_info`` (at least
    ``task_family``; ``choices`` for option families). Raises ``rewards.RewardInputError`` for a bad row.
    """
    parsed = normalize_reply(reply, reasoning, keep_reasoning)
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


def select_single(trajectory: Trajectory, mode: Mode, *, require_correct: bool = False) -> Selection:
    """Single-mode selection (module docstring): keep ``trajectory`` in ``mode`` unless it is unusable (or wrong,
    with ``require_correct``)."""
    if not trajectory.usable:
        return Selection(None, Decision.ONLY_MODE_UNUSABLE)
    if trajectory.correct:
        return Selection(mode, Decision.ONLY_MODE_CORRECT)
    return Selection(None if require_correct else mode, Decision.ONLY_MODE_WRONG)
