"""Rule scorers, one per ``prompts.TaskFamily``: extracted answer text + gold -> :class:`Verdict`.

Gold encodings (``reward_model.ground_truth`` of a row; data builders follow these):

- ``multiple_choice``: one letter ("B"). Options, when given in ``extra_info["choices"]`` (list of str in
  original order, MMLU-Pro "N/A" padding allowed), restrict the valid letters to the non-"N/A" ones and let an
  answer that repeats an option's text count as that option's letter. Without them the letters A-J are valid.
- ``option_text``: the text of the correct option (FLAN "OPTIONS:" items); options in ``extra_info["choices"]``
  when known.
- ``free_text``: a short reference text.
- ``yes_no_maybe``: "yes", "no" or "maybe".
- ``open_qa``: the list of accepted aliases, as a list of str (a JSON string of a list, or a single str, is
  accepted too).
- ``math``: the answer in LaTeX or plain text, without ``\\boxed``.
- ``preference``: "A" or "B", the letter of the response this user prefers.

Matching rules (text is normalised by :func:`normalize.normalize_text`):

- Letters: "B", "(B)", "b", "B.", "B) text", "B: text", "**B**", "Option B", "Response (A)"; then, with known
  options, an answer equal to exactly one option's text; then an upper-case letter followed by a space or
  punctuation ("B because ..."). A letter outside the valid ones is not a valid answer.
- ``option_text``: correct when the answer equals the gold text. With known options it is also correct when
  it names the gold option by letter (A = first option, when no option's text is itself that letter), or when
  the gold option is the *only* option whose tokens occur in it ("Yes, it is." -> "yes"). An answer that
  matches no option is invalid.
- ``free_text``: correct on equality, or when the gold's tokens occur contiguously in an answer of at most
  ``2 * len(gold) + 5`` tokens (so listing many candidates does not pay).
- ``yes_no_maybe``: the one of yes/no/maybe that the answer contains; hedging ("yes and no") is invalid.
- ``open_qa``: equality with any alias (TriviaQA exact match).
- ``math``: :func:`mathcheck.math_equal` (exact/numeric fast path, then math-verify).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from verl_personadual.prompts import LETTERS, TaskFamily
from verl_personadual.rewards.mathcheck import DEFAULT_TIMEOUT_S, math_equal
from verl_personadual.rewards.normalize import contains_tokens, normalize_text, tokens

__all__ = [
    "RewardInputError",
    "Verdict",
    "DEFAULT_LETTERS",
    "YES_NO_MAYBE",
    "PREFERENCE_LETTERS",
    "parse_letter",
    "parse_gold",
    "score",
]

#: Valid letters of a multiple-choice item whose options are not given.
DEFAULT_LETTERS = LETTERS[:10]
#: Letters of a preference item.
PREFERENCE_LETTERS = "AB"
YES_NO_MAYBE = ("yes", "no", "maybe")
_PRED_MAX_CHARS = 100


class RewardInputError(ValueError):
    """A row's gold or ``extra_info`` is unusable (a data bug, not a model error); the message names the field."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of one scorer call.

    Attributes:
        pred: the canonical prediction (letter, option text, yes/no/maybe, normalised text, LaTeX), at most 100
            characters; None when the answer is not valid for the family (then ``correct`` is False).
        correct: the prediction matches the gold.
    """

    pred: str | None
    correct: bool


_DECOR = " \t\n*_`\"'"
_SINGLE_RE = re.compile(r"\A[\(\[]?([A-Za-z])[\)\]]?\.?\Z")
_NAMED_RE = re.compile(r"\A(?:option|choice|answer|response)\s*[\(\[]?([A-Za-z])[\)\]]?(?:\W.*)?\Z", re.I | re.S)
_LEADING_RE = re.compile(r"\A[\(\[]?([A-Z])(?:[\)\]]|(?=[\s.:,;\-]))", re.S)


def parse_letter(answer: str, letters: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter ``answer`` names (rules in the module docstring), or None. ``letters``: valid ones."""
    text = answer.strip(_DECOR)
    m = _SINGLE_RE.match(text) or _NAMED_RE.match(text)
    letter = m.group(1).upper() if m else None
    if letter is None and choices:
        norm = normalize_text(text)
        hits = [i for i, c in enumerate(choices) if norm and normalize_text(c) == norm]
        if len(hits) == 1:
            letter = LETTERS[hits[0]]
    if letter is None:
        m = _LEADING_RE.match(text)
        letter = m.group(1) if m else None
    return letter if letter is not None and letter in letters else None


def _choices(extra_info: dict[str, Any]) -> list[str] | None:
    raw = extra_info.get("choices")
    if raw is None:
        return None
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) for c in raw):
        raise RewardInputError(f"extra_info['choices'] must be a list of str, got {type(raw).__name__}: {raw!r:.200}")
    return list(raw)


def _valid_letters(choices: list[str] | None) -> str:
    if not choices:
        return DEFAULT_LETTERS
    return "".join(LETTERS[i] for i, c in enumerate(choices[: len(LETTERS)]) if c.strip() != "N/A")


def _gold_letter(gold: Any, letters: str, family: TaskFamily) -> str:
    text = gold.strip().upper() if isinstance(gold, str) else None
    if not text or len(text) != 1 or text not in letters:
        raise RewardInputError(f"ground_truth of a {family.value} item must be one of {letters!r}, got {gold!r:.200}")
    return text


def _gold_text(gold: Any, family: TaskFamily) -> str:
    if not isinstance(gold, str) or not gold.strip():
        raise RewardInputError(f"ground_truth of a {family.value} item must be a non-empty str, got {gold!r:.200}")
    return gold


def _gold_aliases(gold: Any) -> list[str]:
    value = gold.tolist() if hasattr(gold, "tolist") else gold
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except ValueError as err:
                raise RewardInputError(f"ground_truth of an open_qa item is not a JSON list: {gold!r:.200}") from err
        else:
            value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(a, str) for a in value):
        raise RewardInputError(f"ground_truth of an open_qa item must be a non-empty list of str, got {gold!r:.200}")
    return list(value)


def parse_gold(family: TaskFamily, gold: Any, extra_info: dict[str, Any]) -> Any:
    """Validate and canonicalise the gold of one row (see the module docstring); raises RewardInputError."""
    if family is TaskFamily.MULTIPLE_CHOICE:
        return _gold_letter(gold, _valid_letters(_choices(extra_info)), family)
    if family is TaskFamily.PREFERENCE:
        return _gold_letter(gold, PREFERENCE_LETTERS, family)
    if family is TaskFamily.YES_NO_MAYBE:
        text = gold.strip().lower() if isinstance(gold, str) else None
        if text not in YES_NO_MAYBE:
            raise RewardInputError(f"ground_truth of a yes_no_maybe item must be yes/no/maybe, got {gold!r:.200}")
        return text
    if family is TaskFamily.OPEN_QA:
        return _gold_aliases(gold)
    return _gold_text(gold, family)


def _short(text: str) -> str:
    return text[:_PRED_MAX_CHARS]


def _multiple_choice(answer: str, gold: str, extra_info: dict[str, Any], _: float) -> Verdict:
    choices = _choices(extra_info)
    letter = parse_letter(answer, _valid_letters(choices), choices)
    return Verdict(letter, letter == gold)


def _preference(answer: str, gold: str, extra_info: dict[str, Any], _: float) -> Verdict:
    letter = parse_letter(answer, PREFERENCE_LETTERS)
    return Verdict(letter, letter == gold)


def _option_text(answer: str, gold: str, extra_info: dict[str, Any], _: float) -> Verdict:
    pred = normalize_text(answer)
    target = normalize_text(gold)
    if pred == target:
        return Verdict(_short(gold.strip()), True)
    choices = _choices(extra_info)
    if not choices:
        return _free_text(answer, gold, extra_info, _)
    norms = [normalize_text(c) for c in choices]
    if pred in norms:
        return Verdict(_short(choices[norms.index(pred)].strip()), False)
    single = _SINGLE_RE.match(answer.strip(_DECOR))
    index = LETTERS.find(single.group(1).upper()) if single else -1
    if 0 <= index < len(choices):
        chosen = choices[index]
        return Verdict(_short(chosen.strip()), normalize_text(chosen) == target)
    pred_tokens = tokens(answer)
    hits = {n for n in norms if contains_tokens(pred_tokens, n.split())}
    if len(hits) == 1:
        (hit,) = hits
        return Verdict(_short(choices[norms.index(hit)].strip()), hit == target)
    return Verdict(None, False)


def _free_text(answer: str, gold: str, extra_info: dict[str, Any], _: float) -> Verdict:
    pred_tokens, gold_tokens = tokens(answer), tokens(gold)
    if not pred_tokens:
        return Verdict(None, False)
    correct = pred_tokens == gold_tokens or (
        len(pred_tokens) <= 2 * len(gold_tokens) + 5 and contains_tokens(pred_tokens, gold_tokens)
    )
    return Verdict(_short(" ".join(pred_tokens)), correct)


def _yes_no_maybe(answer: str, gold: str, extra_info: dict[str, Any], _: float) -> Verdict:
    found = {w for w in tokens(answer) if w in YES_NO_MAYBE}
    pred = found.pop() if len(found) == 1 else None
    return Verdict(pred, pred == gold)


def _open_qa(answer: str, gold: list[str], extra_info: dict[str, Any], _: float) -> Verdict:
    pred = normalize_text(answer)
    if not pred:
        return Verdict(None, False)
    return Verdict(_short(pred), any(normalize_text(a) == pred for a in gold))


def _math(answer: str, gold: str, extra_info: dict[str, Any], timeout_s: float) -> Verdict:
    return Verdict(_short(answer.strip()), math_equal(gold, answer, timeout_s))


_SCORERS: dict[TaskFamily, Callable[[str, Any, dict[str, Any], float], Verdict]] = {
    TaskFamily.MULTIPLE_CHOICE: _multiple_choice,
    TaskFamily.OPTION_TEXT: _option_text,
    TaskFamily.FREE_TEXT: _free_text,
    TaskFamily.YES_NO_MAYBE: _yes_no_maybe,
    TaskFamily.OPEN_QA: _open_qa,
    TaskFamily.MATH: _math,
    TaskFamily.PREFERENCE: _preference,
}


def score(
    family: TaskFamily,
    answer: str,
    gold: Any,
    extra_info: dict[str, Any],
    math_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Verdict:
    """Score one extracted ``answer`` against an already :func:`parse_gold`-checked ``gold``."""
    return _SCORERS[family](answer, gold, extra_info, math_timeout_s)
