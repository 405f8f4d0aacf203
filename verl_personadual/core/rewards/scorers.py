"""Rule scorers, one per ``prompts.TaskFamily``: extracted answer text + validated gold -> :class:`Verdict`. Each
built-in family is registered at the end of this module (``families.register_family``: its answer-format clause,
gold parser and scorer); :func:`parse_gold` and :func:`score` dispatch through that registry, so a family registered
elsewhere is graded the same way.

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
- ``preference``: "A" or "B", the letter of the response this user prefers; ``extra_info["choices"]`` may hold
  the two response texts [A, B] (empty or absent: unknown).

:func:`parse_gold` validates a row once (a bad row raises :class:`RewardInputError`); :func:`score` then never
raises on any answer text. For every family but ``math``, LaTeX wrappers are dropped first
(``\\text{C}``, ``\\textbf{C}``, ``\\mathrm{C}``, ``\\boxed{C}``, ``$``, ``\\(``), text is normalised by
:func:`normalize.normalize_text` (contractions written out, so gold and answer may differ by a contraction or
by punctuation: "It is impossible to say" = "It's impossible to say"; "isn't" stays a negation).

**Letters** (multiple choice, preference), in order:

1. A lead-in is dropped: "I prefer", "I would choose", "I think", "My choice is", "The correct option is".
2. A lone letter: "B", "b", "(B)", "B.".
3. A *hedge* names two or more distinct letters and is no answer: "C or D", "C/D", "A and B", "both A and B",
   "neither A nor B", "Response A or Response B"; and so is a letter answer that goes on to offer another one
   after "or" / "/" ("B (or possibly C)", "Response A, or maybe B").
4. A named letter: "Option B", "Response (A) is better", "Answer: C".
5. The text of exactly one option (normalised equality). For preferences also a quote: the answer is a run of
   at least ``QUOTE_MIN_TOKENS`` tokens found in exactly one response, or holds exactly one response whole.
6. A leading letter: "(B) because ...", "B. Vitamin C", "B) ...", "B: ...", "B - ...", "B because ...".
   The words "A" and "I" followed by a lower-case word are the article and the pronoun ("A strong response
   ...", "I think ..."), not letters, unless that word is one that follows a letter ("A is better", "A
   because", see ``LETTER_FOLLOWERS``).

A letter outside the valid ones is no answer.

**Other families**:

- ``option_text``: correct when the answer equals the gold text. With known options it is also correct when
  it names the gold option by letter (rules 2-4 above; A = first option) or when the gold option is the
  *only* option whose tokens occur in it ("Yes, it is." -> "yes"; "yes or no" names two: no answer). An
  answer that matches no option is no answer.
- ``free_text`` (number words count as digits, "four" = "4"): correct on equality, or when the gold's tokens
  occur contiguously in an answer of at most ``2 * len(gold) + 5`` tokens. A *hedge* is no answer: the answer
  splits at "or" / "nor" / "either" / "and/or" / ";" / "/" / "|" (or at commas into three or more parts)
  into parts of which one holds the gold and another is a distinct candidate (neither holding the gold nor
  part of it): "Paris or Lyon", "Bush, Clinton, Obama". Two comma parts are a qualifier, not a hedge
  ("Paris, France"). Golds that themselves hold such a separator ("Trick or Treat") skip this check.
- ``yes_no_maybe``: an answer starting with a label takes it ("yes, although no difference was found" ->
  yes) unless another label follows right after it, joined at most by or / and / nor / either ("yes or no",
  "maybe yes": no answer); otherwise the label the answer contains, when it contains only one.
- ``open_qa``: equality with any alias (TriviaQA exact match).
- ``math``: :func:`mathcheck.math_equal` (exact/numeric fast path, then math-verify in a child process).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from verl_personadual.core.prompts import LETTERS, TaskFamily, answer_format
from verl_personadual.core.rewards.families import RewardFamily, register_family, reward_family
from verl_personadual.core.rewards.mathcheck import DEFAULT_TIMEOUT_S, math_equal
from verl_personadual.core.rewards.normalize import (
    contains_tokens,
    normalize_text,
    number_tokens,
    tokens,
)
from verl_personadual.utils.errors import UserError

__all__ = [
    "RewardInputError",
    "Verdict",
    "Gold",
    "DEFAULT_LETTERS",
    "YES_NO_MAYBE",
    "PREFERENCE_LETTERS",
    "LETTER_FOLLOWERS",
    "QUOTE_MIN_TOKENS",
    "parse_letter",
    "parse_gold",
    "score",
]

#: Valid letters of a multiple-choice item whose options are not given.
DEFAULT_LETTERS = LETTERS[:10]
#: Letters of a preference item.
PREFERENCE_LETTERS = "AB"
YES_NO_MAYBE = ("yes", "no", "maybe")
#: Words after which a leading "A" / "I" is a letter, not the article / pronoun.
LETTER_FOLLOWERS = (
    "is",
    "was",
    "because",
    "since",
    "as",
    "seems",
    "fits",
    "would",
    "matches",
    "aligns",
    "better",
    "best",
    "reflects",
    "suits",
    "and",
    "or",
    "nor",
    "vs",
    "versus",
    "which",
    "wins",
)
#: Shortest quote of a response (in tokens) that names it.
QUOTE_MIN_TOKENS = 4
_PRED_MAX_CHARS = 100


class RewardInputError(UserError, ValueError):
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


@dataclass(frozen=True)
class Gold:
    """A validated row (:func:`parse_gold`).

    Attributes:
        family: the reward family's name (``families.RewardFamily.name``).
        value: the canonical gold: a letter, a text, "yes"/"no"/"maybe", or a tuple of aliases (``open_qa``).
        choices: the options / response texts in order; empty when unknown.
    """

    family: str
    value: Any
    choices: tuple[str, ...] = ()


_DECOR = " \t\n*_`\"'"
_LATEX_WRAPPER_RE = re.compile(
    r"\\(?:text(?:bf|it|rm|sf|tt|normal)?|math(?:rm|bf|it|sf|tt)|mbox|emph|boxed|fbox)\s*\{([^{}]*)\}"
)
_LATEX_DELIMITER_RE = re.compile(r"\$|\\[()\[\]]")
_NAMES = r"(?i:option|choice|answer|response|candidate)"
_FOLLOWERS = "|".join(LETTER_FOLLOWERS)
# One upper-case letter, not the article "A" / pronoun "I" before a lower-case word (LETTER_FOLLOWERS aside).
_LETTER = rf"(?:[B-HJ-Z]|[AI](?!\s+(?!(?i:{_FOLLOWERS})\b)[a-z]))"
# A letter mention: named ("Response A") or in brackets ("(A)"): any capital; bare: _LETTER. Groups: 3 alternatives.
_MENTION = rf"(?:{_NAMES}s?\s*[:\-]?\s*[\(\[]?([A-Z])|[\(\[]([A-Z])|({_LETTER}))[\)\]]?(?![\w'’])"
_MENTION_RE = re.compile(_MENTION)
_SEP = r"\s*(?:[,/&]|(?i:or|and|nor|vs\.?|versus)\b)\s*(?i:either\s+)?"
_LIST_RE = re.compile(rf"\A(?i:(?:either|both|neither)\s+)?{_MENTION}(?:{_SEP}{_MENTION})+")
_OR_MENTION_RE = re.compile(rf"(?i:\bor\b|/)\s*(?i:(?:possibly|maybe|perhaps|even|else|alternatively)\s+)?{_MENTION}")
_SINGLE_RE = re.compile(r"\A[\(\[]?([A-Za-z])[\)\]]?\.?\Z")
_NAMED_ONLY_RE = re.compile(rf"\A{_NAMES}\s*[:\-]?\s*[\(\[]?([A-Za-z])[\)\]]?\.?\Z")
_NAMED_RE = re.compile(rf"\A{_NAMES}\s*[:\-]?\s*[\(\[]?([A-Z])[\)\]]?(?![\w'’])")
_LEADING_RE = re.compile(rf"\A(?:[\(\[]([A-Z])[\)\]]|({_LETTER})(?=[\)\]:.,;]|\s*[-–—]\s|\s+\S))")
_LETTER_LEAD_IN_RE = re.compile(
    r"\A(?:I\s*(?:would|'d|’d)?\s*(?:prefer|choose|pick|select|go\s+with|think|believe|say)\b"
    r"|(?:my\s+)?(?:final\s+)?(?:choice|preference|pick|selection)\s*(?:is\b|:)"
    r"|(?:the\s+)?(?:correct|best|right|preferred)\s+(?:option|choice|response|answer)\s+is\b)"
    r"\s*:?\s*(?:that\s+)?(?:the\s+answer\s+is\s*:?\s*)?",
    re.IGNORECASE,
)
_HEDGE_SPLIT_RE = re.compile(r"[,;/|]|\b(?:and/or|or|nor|either)\b", re.IGNORECASE)
_HEDGE_ALT_RE = re.compile(r"[;/|]|\b(?:or|nor|either)\b", re.IGNORECASE)
_HEDGE_FILLERS = frozenset({"and", "maybe", "possibly", "perhaps", "probably", "also"})
_YNM_CONNECTORS = frozenset({"or", "and", "nor", "either", "andor"})


def _mentioned(match: re.Match[str]) -> str:
    """The letter of a match of a pattern that ends with ``_MENTION`` (its last three groups)."""
    return next(g for g in match.groups()[-3:] if g)


def _plain(answer: str) -> str:
    """``answer`` without LaTeX text wrappers and math delimiters (non-math families)."""
    if "\\" not in answer and "$" not in answer:
        return answer.strip()
    text = answer
    for _ in range(3):  # nested wrappers, e.g. \boxed{\text{C}}
        unwrapped = _LATEX_WRAPPER_RE.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    return _LATEX_DELIMITER_RE.sub("", text).strip()


@lru_cache(maxsize=4096)
def _normalized(texts: tuple[str, ...]) -> tuple[str, ...]:
    """``normalize_text`` of each option or alias (they repeat across the rollouts of a prompt)."""
    return tuple(normalize_text(t) for t in texts)


@lru_cache(maxsize=4096)
def _gold_words(gold_text: str) -> list[str]:
    """Free-text gold tokens with numbers as digits (read only)."""
    return number_tokens(tokens(gold_text))


@lru_cache(maxsize=4096)
def _tokenized(choices: tuple[str, ...]) -> tuple[list[str], ...]:
    """``tokens`` of each option (read only)."""
    return tuple(tokens(c) for c in choices)


def _quoted_option(answer: str, choices: tuple[str, ...]) -> int | None:
    """Index of the one response ``answer`` quotes (rule 5 of the module docstring), else None."""
    said = tokens(answer)
    if not said:
        return None
    texts = _tokenized(choices)
    if len(said) >= QUOTE_MIN_TOKENS:
        hits = [i for i, t in enumerate(texts) if contains_tokens(t, said)]
        if len(hits) == 1:
            return hits[0]
    whole = [i for i, t in enumerate(texts) if contains_tokens(said, t)]
    return whole[0] if len(whole) == 1 else None


def parse_letter(
    answer: str,
    letters: str,
    choices: tuple[str, ...] = (),
    *,
    quotes: bool = False,
    leading: bool = True,
) -> str | None:
    """The option letter ``answer`` names (rules in the module docstring), or None.

    Args:
        letters: the valid letters.
        choices: option texts in letter order (rule 5); empty when unknown.
        quotes: also map a quote of one option's text to its letter (preferences).
        leading: apply rule 6 (a leading letter followed by more text).
    """
    text = _plain(answer).strip(_DECOR)
    lead_in = _LETTER_LEAD_IN_RE.match(text)
    if lead_in is not None and text[lead_in.end() :].strip(_DECOR):
        text = text[lead_in.end() :].strip(_DECOR)
    single = _SINGLE_RE.match(text) or _NAMED_ONLY_RE.match(text)
    if single is not None:
        letter = single.group(1).upper()
        return letter if letter in letters else None
    listed = _LIST_RE.match(text)
    if listed is not None and len({_mentioned(m) for m in _MENTION_RE.finditer(listed.group())}) >= 2:
        return None
    letter, rest = None, text
    named = _NAMED_RE.match(text)
    if named is not None:
        letter, rest = named.group(1), text[named.end() :]
    elif choices:
        norm = normalize_text(text)
        hits = [i for i, c in enumerate(_normalized(choices)) if norm and c == norm]
        index = hits[0] if len(hits) == 1 else _quoted_option(text, choices) if quotes else None
        if index is not None:
            letter = LETTERS[index] if index < len(LETTERS) else None
            return letter if letter is not None and letter in letters else None
    if letter is None and leading:
        m = _LEADING_RE.match(text)
        if m is not None:
            letter, rest = m.group(1) or m.group(2), text[m.end() :]
    if letter is None or letter not in letters:
        return None
    if any(_mentioned(m) != letter for m in _OR_MENTION_RE.finditer(rest)):
        return None
    return letter


def _choices(extra_info: dict[str, Any]) -> tuple[str, ...]:
    raw = extra_info.get("choices")
    if raw is None:
        return ()
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) for c in raw):
        raise RewardInputError(f"extra_info['choices'] must be a list of str, got {type(raw).__name__}: {raw!r:.200}")
    return tuple(raw)


@lru_cache(maxsize=4096)
def _valid_letters(choices: tuple[str, ...]) -> str:
    if not choices:
        return DEFAULT_LETTERS
    return "".join(LETTERS[i] for i, c in enumerate(choices[: len(LETTERS)]) if c.strip() != "N/A")


def _gold_letter(gold: Any, letters: str, family: str) -> str:
    text = gold.strip().upper() if isinstance(gold, str) else None
    if not text or len(text) != 1 or text not in letters:
        raise RewardInputError(f"ground_truth of a {family} item must be one of {letters!r}, got {gold!r:.200}")
    return text


def _gold_text(gold: Any, family: str) -> str:
    if not isinstance(gold, str) or not gold.strip():
        raise RewardInputError(f"ground_truth of a {family} item must be a non-empty str, got {gold!r:.200}")
    return gold


def _gold_aliases(gold: Any, _: tuple[str, ...]) -> tuple[str, ...]:
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
    return tuple(value)


def _gold_choice_letter(gold: Any, choices: tuple[str, ...]) -> str:
    return _gold_letter(gold, _valid_letters(choices), TaskFamily.MULTIPLE_CHOICE.value)


def _gold_preference(gold: Any, choices: tuple[str, ...]) -> str:
    if len(choices) not in (0, len(PREFERENCE_LETTERS)):
        raise RewardInputError(f"extra_info['choices'] of a preference item must hold 2 responses, got {len(choices)}")
    return _gold_letter(gold, PREFERENCE_LETTERS, TaskFamily.PREFERENCE.value)


def _gold_label(gold: Any, _: tuple[str, ...]) -> str:
    text = gold.strip().lower() if isinstance(gold, str) else None
    if text not in YES_NO_MAYBE:
        raise RewardInputError(f"ground_truth of a yes_no_maybe item must be yes/no/maybe, got {gold!r:.200}")
    return text


def _text_gold(family: TaskFamily) -> Callable[[Any, tuple[str, ...]], str]:
    def parse(gold: Any, _: tuple[str, ...]) -> str:
        return _gold_text(gold, family.value)

    return parse


def parse_gold(family: TaskFamily | str, gold: Any, extra_info: dict[str, Any]) -> Gold:
    """Validate and canonicalise the gold and options of one row with its registered family's gold parser (see
    the module docstring); raises RewardInputError naming the field (or the family, when it is not registered)."""
    try:
        parser = reward_family(family).parse_gold
    except ValueError as err:
        raise RewardInputError(str(err)) from None
    choices = _choices(extra_info)
    return Gold(str(family), parser(gold, choices), choices)


def _short(text: str) -> str:
    return text[:_PRED_MAX_CHARS]


def _multiple_choice(answer: str, gold: Gold, _: float) -> Verdict:
    letter = parse_letter(answer, _valid_letters(gold.choices), gold.choices)
    return Verdict(letter, letter == gold.value)


def _preference(answer: str, gold: Gold, _: float) -> Verdict:
    letter = parse_letter(answer, PREFERENCE_LETTERS, gold.choices, quotes=True)
    return Verdict(letter, letter == gold.value)


def _option_text(answer: str, gold: Gold, timeout_s: float) -> Verdict:
    text = _plain(answer)
    pred = normalize_text(text)
    target = normalize_text(gold.value)
    if pred == target:
        return Verdict(_short(gold.value.strip()), True)
    choices = gold.choices
    if not choices:
        return _free_text(answer, gold, timeout_s)
    norms = _normalized(choices)
    if pred in norms:
        return Verdict(_short(choices[norms.index(pred)].strip()), False)
    letter = parse_letter(text, LETTERS[: len(choices)], leading=False)
    if letter is not None:
        chosen = choices[LETTERS.index(letter)]
        return Verdict(_short(chosen.strip()), normalize_text(chosen) == target)
    pred_tokens = tokens(text)
    hits = {n for n in norms if contains_tokens(pred_tokens, n.split())}
    if len(hits) == 1:
        (hit,) = hits
        return Verdict(_short(choices[norms.index(hit)].strip()), hit == target)
    return Verdict(None, False)


def _hedged(text: str, gold_text: str, gold_tokens: list[str]) -> bool:
    """Does free-text ``text`` offer the gold and another distinct candidate (module docstring)?"""
    if _HEDGE_SPLIT_RE.search(text) is None or _HEDGE_SPLIT_RE.search(gold_text) is not None:
        return False
    parts = []
    for piece in _HEDGE_SPLIT_RE.split(text):
        words = number_tokens(tokens(piece))
        while words and words[0] in _HEDGE_FILLERS:
            words = words[1:]
        if words:
            parts.append(words)
    if len(parts) < 2 or (len(parts) < 3 and not _HEDGE_ALT_RE.search(text)):
        return False
    holds_gold = any(contains_tokens(p, gold_tokens) for p in parts)
    other = any(not contains_tokens(p, gold_tokens) and not contains_tokens(gold_tokens, p) for p in parts)
    return holds_gold and other


def _free_text(answer: str, gold: Gold, _: float) -> Verdict:
    text = _plain(answer)
    pred_tokens, gold_tokens = number_tokens(tokens(text)), _gold_words(gold.value)
    if not pred_tokens or _hedged(text, gold.value, gold_tokens):
        return Verdict(None, False)
    correct = pred_tokens == gold_tokens or (
        len(pred_tokens) <= 2 * len(gold_tokens) + 5 and contains_tokens(pred_tokens, gold_tokens)
    )
    return Verdict(_short(" ".join(pred_tokens)), correct)


def _yes_no_maybe(answer: str, gold: Gold, _: float) -> Verdict:
    words = tokens(_plain(answer))
    labels = {w for w in words if w in YES_NO_MAYBE}
    if not labels:
        return Verdict(None, False)
    if words[0] in YES_NO_MAYBE:
        after = next((w for w in words[1:] if w not in _YNM_CONNECTORS), None)
        pred = None if after in YES_NO_MAYBE and after != words[0] else words[0]
    else:
        pred = labels.pop() if len(labels) == 1 else None
    return Verdict(pred, pred == gold.value)


def _open_qa(answer: str, gold: Gold, _: float) -> Verdict:
    pred = normalize_text(_plain(answer))
    if not pred:
        return Verdict(None, False)
    return Verdict(_short(pred), pred in _normalized(gold.value))


def _math(answer: str, gold: Gold, timeout_s: float) -> Verdict:
    return Verdict(_short(answer.strip()), math_equal(gold.value, answer, timeout_s))


def score(gold: Gold, answer: str, math_timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """Score one extracted ``answer`` against a :func:`parse_gold`-checked ``gold`` with its family's scorer."""
    return reward_family(gold.family).score(answer, gold, math_timeout_s)


# The built-in reward families, one registration each (``families.register_family``; their answer-format clauses
# are the prompt texts of ``prompts.answer_format``).
register_family(
    RewardFamily(
        TaskFamily.MULTIPLE_CHOICE, answer_format(TaskFamily.MULTIPLE_CHOICE), _gold_choice_letter, _multiple_choice
    )
)
register_family(
    RewardFamily(
        TaskFamily.OPTION_TEXT, answer_format(TaskFamily.OPTION_TEXT), _text_gold(TaskFamily.OPTION_TEXT), _option_text
    )
)
register_family(
    RewardFamily(
        TaskFamily.FREE_TEXT, answer_format(TaskFamily.FREE_TEXT), _text_gold(TaskFamily.FREE_TEXT), _free_text
    )
)
register_family(
    RewardFamily(TaskFamily.YES_NO_MAYBE, answer_format(TaskFamily.YES_NO_MAYBE), _gold_label, _yes_no_maybe)
)
register_family(RewardFamily(TaskFamily.OPEN_QA, answer_format(TaskFamily.OPEN_QA), _gold_aliases, _open_qa))
register_family(RewardFamily(TaskFamily.MATH, answer_format(TaskFamily.MATH), _text_gold(TaskFamily.MATH), _math))
register_family(
    RewardFamily(TaskFamily.PREFERENCE, answer_format(TaskFamily.PREFERENCE), _gold_preference, _preference)
)
