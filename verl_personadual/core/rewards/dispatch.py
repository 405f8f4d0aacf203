"""The reward entry point: ``compute_score`` as verl 0.9.1's reward managers call it.

Family: ``extra_info["task_family"]`` (a ``prompts.TaskFamily`` value) when present (None and "" count as
absent), else the default of the row's ``data_source`` (``families.source_family``: the training sources registered
below, an evaluation benchmark once ``verl_personadual.data.benchmarks`` is imported; FLAN rows with
``extra_info["choices"]`` -> ``option_text``). Families are the registered ones (``families.family_names``).

Reward shape (keyword arguments, settable as ``+reward.custom_reward_function.reward_kwargs.<key>=<value>``):
``score = correct_weight * correct + format_weight * format_ok`` when an answer was extracted
(defaults 0.9 and 0.1, as the authors), ``score = no_answer_score`` (default 0.0) when nothing was.

Returned dict, always with exactly the keys ``RESULT_KEYS`` (verl takes the key set from the first row of a
batch, so every row must have all of them):

- ``score``: the reward; ``acc`` = ``correct``: 1.0 / 0.0 (``acc`` is the key verl's validation reports as
  ``val-core``); ``format_ok``: 1.0 / 0.0; ``has_answer``: 1.0 when the answer is valid for the family.
- ``mode``: 0.0 general, 1.0 personalized, -1.0 unknown (from ``extra_info[names.MODE_FIELD]``);
  ``personalized``: 1.0 when the mode is personalized, else 0.0 (its mean is the personalized-mode rate).
- ``persona_setting``: 0.0 none, 1.0 unaligned, 2.0 aligned, -1.0 unknown (``extra_info["persona_setting"]``).
- ``acc_general``, ``acc_personalized``, ``acc_persona_none``, ``acc_persona_unaligned``,
  ``acc_persona_aligned``: ``correct`` for rows of that mode / setting, None for the others. verl drops None
  values before averaging, so their means are the accuracy per mode and per setting.
- ``pred``: the canonical prediction (str, "" when none); verl uses it for majority-vote metrics.
- ``response_length``: the response's token count from ``extra_info[names.RESPONSE_LENGTH_FIELD]`` (set by the
  plugin's agent loops), -1.0 when absent; the trainer's validation length metrics read it.

Model output never makes it raise: extraction and the scorers are total by construction (bounded, no
recursion, see ``extract`` and ``scorers``), and as a last line any exception while reading or scoring
``solution_str`` is logged with its traceback and scored as no answer. What may raise is what is not model
output: a bad row (unknown data source or family, unusable gold, bad choices) or a bad keyword raises
:class:`~verl_personadual.core.rewards.scorers.RewardInputError` / ``TypeError`` naming it, and a math checker that
cannot start at all (math-verify missing) raises :class:`~verl_personadual.core.rewards.mathcheck.MathServerError`.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from verl_personadual.core.modes import UNKNOWN_MODE, Mode
from verl_personadual.core.names import MODE_FIELD, RESPONSE_LENGTH_FIELD
from verl_personadual.core.prompts import DataSource, PersonaSetting, TaskFamily
from verl_personadual.core.rewards.extract import NOTHING, Extraction, extract_answer
from verl_personadual.core.rewards.families import family_names, register_source, source_family, source_names
from verl_personadual.core.rewards.judge import LLMJudge, default_judge
from verl_personadual.core.rewards.mathcheck import DEFAULT_TIMEOUT_S, MathServerError
from verl_personadual.core.rewards.scorers import (
    Gold,
    RewardInputError,
    Verdict,
    parse_gold,
    score,
)

__all__ = [
    "compute_score",
    "resolve_family",
    "RESULT_KEYS",
    "CORRECT_WEIGHT",
    "FORMAT_WEIGHT",
    "NO_ANSWER_SCORE",
]

CORRECT_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1
NO_ANSWER_SCORE = 0.0

# The training sources' default reward families (``families.register_source``); each evaluation benchmark
# registers its own with its record (``verl_personadual.data.benchmarks``).
register_source(DataSource.ULTRAMEDICAL, TaskFamily.MULTIPLE_CHOICE)
register_source(DataSource.FLAN, TaskFamily.FREE_TEXT)
register_source(DataSource.ALIGNX, TaskFamily.PREFERENCE)
register_source(DataSource.TOY, TaskFamily.FREE_TEXT)

_SETTING_CODE = {setting: float(i) for i, setting in enumerate(PersonaSetting)}
_MODE_KEYS = {Mode.GENERAL: "acc_general", Mode.PERSONALIZED: "acc_personalized"}
_SETTING_KEYS = {setting: f"acc_persona_{setting.value}" for setting in PersonaSetting}
RESULT_KEYS: tuple[str, ...] = (
    "score",
    "acc",
    "correct",
    "format_ok",
    "has_answer",
    "mode",
    "personalized",
    "persona_setting",
    *_MODE_KEYS.values(),
    *_SETTING_KEYS.values(),
    "pred",
    RESPONSE_LENGTH_FIELD,
)
#: Keywords verl's reward managers may pass that this reward does not use.
_VERL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})

logger = logging.getLogger(__name__)


def resolve_family(data_source: Any, extra_info: Mapping[str, Any]) -> str:
    """The reward family of a row (see the module docstring); raises RewardInputError naming the field."""
    raw = extra_info.get("task_family")
    if raw is not None and raw != "":
        if not isinstance(raw, str) or raw not in family_names():
            raise RewardInputError(f"extra_info['task_family']={raw!r} is not one of {family_names()}")
        return raw
    family = source_family(data_source) if isinstance(data_source, str) else None
    if family is None:
        raise RewardInputError(
            f"data_source={data_source!r} is not one of {source_names()} and the row has no extra_info['task_family']"
        )
    if data_source == DataSource.FLAN and extra_info.get("choices") is not None:
        return TaskFamily.OPTION_TEXT.value
    return family


def _mode(extra_info: Mapping[str, Any]) -> Mode | None:
    try:
        return Mode.parse(extra_info.get(MODE_FIELD))
    except (ValueError, TypeError):
        return None


def _setting(extra_info: Mapping[str, Any]) -> PersonaSetting | None:
    try:
        return PersonaSetting(extra_info.get("persona_setting"))
    except (ValueError, TypeError):
        return None


def _response_length(extra_info: Mapping[str, Any]) -> float:
    value = extra_info.get(RESPONSE_LENGTH_FIELD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return -1.0
    return float(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"reward keyword {name}={value!r} must be a number")
    return float(value)


def _grade(
    solution_str: Any, gold: Gold, question: str, math_timeout_s: float, judge: LLMJudge | None
) -> tuple[Extraction, Verdict]:
    """Extraction and verdict of one response; an unexpected error on model output scores as no answer."""
    try:
        found = extract_answer(solution_str)
        if found.answer is None:
            return found, Verdict(None, False)
        verdict = score(gold, found.answer, math_timeout_s)
        # No valid answer (a hedge, "B" to a yes/no question, nothing left after normalisation) is wrong without
        # asking anyone.
        if judge is not None and gold.family in judge.families and not verdict.correct and verdict.pred is not None:
            if judge.judge(question, gold.value, found.answer):
                verdict = Verdict(verdict.pred or found.answer[:100], True)
        return found, verdict
    except MathServerError:
        raise
    except Exception:
        logger.exception("reward: error while scoring a %s response; scored as no answer", gold.family)
        return NOTHING, Verdict(None, False)


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    correct_weight: float = CORRECT_WEIGHT,
    format_weight: float = FORMAT_WEIGHT,
    no_answer_score: float = NO_ANSWER_SCORE,
    math_timeout_s: float = DEFAULT_TIMEOUT_S,
    judge: LLMJudge | None = None,
    llm_judge: bool = False,
    judge_families: Iterable[str] | None = None,
    **reward_kwargs: Any,
) -> dict[str, Any]:
    """Reward of one response (see the module docstring for the families, the shape and the keys).

    Args:
        data_source: the row's ``data_source`` (a ``prompts.DataSource`` value).
        solution_str: the decoded response (special tokens, hence single-token mode prefixes, already stripped).
        ground_truth: ``reward_model["ground_truth"]`` in the family's encoding (``scorers`` docstring).
        extra_info: the row's ``extra_info`` merged with the agent loop's extra fields.
        math_timeout_s: limit of one symbolic math check, in CPU seconds of the math child (``mathcheck``).
        judge: optional :class:`LLMJudge`, consulted for its families when the rules say "incorrect".
        llm_judge: without ``judge``, use :func:`judge.default_judge` (the project's LLM client configured from
            the environment) for ``judge_families`` (default: free_text).
    """
    unknown = set(reward_kwargs) - _VERL_KWARGS
    if unknown:
        raise TypeError(f"unknown reward keyword(s) {sorted(unknown)}")
    cw = _number("correct_weight", correct_weight)
    fw = _number("format_weight", format_weight)
    empty = _number("no_answer_score", no_answer_score)
    info: Mapping[str, Any] = extra_info if isinstance(extra_info, Mapping) else {}
    if judge is None and llm_judge:
        judge = default_judge(None if judge_families is None else tuple(str(f) for f in judge_families))
    timeout_s = _number("math_timeout_s", math_timeout_s)
    if not timeout_s > 0:
        raise TypeError(f"reward keyword math_timeout_s={math_timeout_s!r} must be a positive number of seconds")
    gold = parse_gold(resolve_family(data_source, info), ground_truth, dict(info))
    found, verdict = _grade(solution_str, gold, str(info.get("question", "")), timeout_s, judge)
    correct = 1.0 if verdict.correct else 0.0
    format_ok = 1.0 if found.format_ok else 0.0
    mode, setting = _mode(info), _setting(info)
    result: dict[str, Any] = {
        "score": cw * correct + fw * format_ok if found.answer is not None else empty,
        "acc": correct,
        "correct": correct,
        "format_ok": format_ok,
        "has_answer": 1.0 if verdict.pred is not None else 0.0,
        "mode": float(UNKNOWN_MODE if mode is None else int(mode)),
        "personalized": 1.0 if mode is Mode.PERSONALIZED else 0.0,
        "persona_setting": -1.0 if setting is None else _SETTING_CODE[setting],
    }
    for m, key in _MODE_KEYS.items():
        result[key] = correct if mode is m else None
    for s, key in _SETTING_KEYS.items():
        result[key] = correct if setting is s else None
    result["pred"] = verdict.pred or ""
    result[RESPONSE_LENGTH_FIELD] = _response_length(info)
    return result
