"""Answer extraction from a raw model response (any string, never raises).

The response format is defined in :mod:`verl_personadual.prompts`: free reasoning, then a final JSON object
``{"answer": ...}`` (key ``prompts.ANSWER_KEY``) on the last line. Extraction, by priority:

1. ``json``: the last *valid* JSON object that has the answer key. Several objects -> the last valid one wins;
   a broken object after a valid one is skipped. ``format_ok`` is True only for this source, when the object
   is followed by nothing but whitespace, a closing code fence or a closing ``</answer>`` tag.
2. ``loose_json``: a JSON-like object with the answer key that ``json`` rejects (single quotes, unquoted
   value), e.g. ``{'answer': 'B'}``.
3. ``boxed``: the content of the last ``\\boxed{...}`` (balanced braces).
4. ``phrase``: the last "answer is X" / "answer: X" (X up to the end of its line, markdown and a final period
   stripped), e.g. "So, the answer is (B)." -> "(B)".
5. ``bare``: the whole response when it is one short line (at most ``BARE_MAX_CHARS``) without a ``{`` (a
   broken JSON object is not an answer), e.g. "B".

Sources 2-5 give ``format_ok = False``. The mode prefix (plain text when it is not a special token) is removed
from the head. Cost is bounded for huge inputs: the JSON search probes at most ``MAX_JSON_PROBES`` candidate
objects scanning from the end with ``str.rfind``, and fallbacks 2-4 only look at the last
``FALLBACK_WINDOW`` characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from verl_personadual.modes import PREFIX_TEXT
from verl_personadual.prompts import ANSWER_KEY

__all__ = [
    "Extraction",
    "extract_answer",
    "strip_mode_prefix",
    "MAX_JSON_PROBES",
    "FALLBACK_WINDOW",
    "BARE_MAX_CHARS",
    "MAX_ANSWER_CHARS",
]

#: Candidate ``{`` positions tried with the JSON decoder, in total, per response.
MAX_JSON_PROBES = 24
#: Candidate ``{`` positions tried per occurrence of the answer key.
_BRACES_PER_KEY = 4
#: Fallback sources 2-4 search only this many trailing characters.
FALLBACK_WINDOW = 4000
#: A response of at most this many characters on one line is taken whole as its answer (source ``bare``).
BARE_MAX_CHARS = 200
#: Extracted answers are cut to this many characters (scorers never need more).
MAX_ANSWER_CHARS = 1000

_DECODER = json.JSONDecoder()
_QUOTED_KEY = f'"{ANSWER_KEY}"'
_PREFIX_RE = re.compile(r"\A\s*(?:" + "|".join(re.escape(p) for p in PREFIX_TEXT.values()) + r")")
_TRAILER_RE = re.compile(r"\s*(?:```|</answer>)?\s*\Z", re.IGNORECASE)
_LOOSE_RE = re.compile(
    r"\{\s*['\"]?" + re.escape(ANSWER_KEY) + r"['\"]?\s*:\s*"
    r"(?:\"([^\"\n]{0,500})\"|'([^'\n]{0,500})'|([^,{}\[\]\"'\s][^,}\n]{0,499}?))\s*[,}]",
    re.IGNORECASE,
)
_PHRASE_RE = re.compile(r"answer\s*(?:is|:)\s*:?[ \t]*([^\n]{1,300})", re.IGNORECASE)
_PHRASE_STRIP = " \t*_`\"'$"


@dataclass(frozen=True)
class Extraction:
    """What was found in a response.

    Attributes:
        answer: the extracted answer text (stripped, at most ``MAX_ANSWER_CHARS``), or None if nothing found.
        format_ok: the response ends with a valid ``{"answer": ...}`` JSON object, as the prompt asks.
        source: ``json`` | ``loose_json`` | ``boxed`` | ``phrase`` | ``bare`` | ``none``.
    """

    answer: str | None
    format_ok: bool
    source: str


NOTHING = Extraction(None, False, "none")


def strip_mode_prefix(text: str) -> str:
    """``text`` without a leading mode prefix (plain-text prefixes survive decoding; special ones do not)."""
    m = _PREFIX_RE.match(text)
    return text[m.end() :] if m else text


def _value_text(value: Any) -> str | None:
    """The answer value of a decoded JSON object as text; None when it cannot be an answer."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, (int, float)):
        text = json.dumps(value)
    elif isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        text = ", ".join(v.strip() if isinstance(v, str) else json.dumps(v) for v in value)
    else:
        return None
    return text[:MAX_ANSWER_CHARS] if text else None


def _last_json(text: str) -> tuple[str, int] | None:
    """(answer, end index) of the last valid JSON object holding the answer key, scanning from the end."""
    probes = 0
    key_end = len(text)
    while probes < MAX_JSON_PROBES:
        k = text.rfind(_QUOTED_KEY, 0, key_end)
        if k < 0:
            return None
        key_end = k
        brace_end = k
        for _ in range(_BRACES_PER_KEY):
            b = text.rfind("{", 0, brace_end)
            if b < 0 or probes >= MAX_JSON_PROBES:
                break
            probes += 1
            brace_end = b
            try:
                obj, end = _DECODER.raw_decode(text, b)
            except ValueError:
                continue
            if isinstance(obj, dict) and end > k and ANSWER_KEY in obj:
                answer = _value_text(obj[ANSWER_KEY])
                if answer is not None:
                    return answer, end
                break
    return None


def _last_boxed(tail: str) -> str | None:
    start = tail.rfind("\\boxed")
    while start >= 0:
        i = start + len("\\boxed")
        while i < len(tail) and tail[i] == " ":
            i += 1
        if i < len(tail) and tail[i] == "{":
            depth, j = 0, i
            while j < len(tail):
                c = tail[j]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        content = tail[i + 1 : j].strip()
                        if content:
                            return content[:MAX_ANSWER_CHARS]
                        break
                j += 1
        start = tail.rfind("\\boxed", 0, start)
    return None


def _last_match(pattern: re.Pattern[str], tail: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(tail):
        pass
    return last


def extract_answer(response: str) -> Extraction:
    """Extract the final answer of ``response`` (see the module docstring for the rules). Never raises."""
    if not isinstance(response, str):
        return NOTHING
    text = strip_mode_prefix(response)
    found = _last_json(text)
    if found is not None:
        answer, end = found
        return Extraction(answer, _TRAILER_RE.match(text, end) is not None, "json")
    tail = text[-FALLBACK_WINDOW:]
    loose = _last_match(_LOOSE_RE, tail)
    if loose is not None:
        value = next(g for g in loose.groups() if g is not None).strip()
        if value:
            return Extraction(value[:MAX_ANSWER_CHARS], False, "loose_json")
    boxed = _last_boxed(tail)
    if boxed is not None:
        return Extraction(boxed, False, "boxed")
    phrase = _last_match(_PHRASE_RE, tail)
    if phrase is not None:
        value = phrase.group(1).strip(_PHRASE_STRIP).rstrip(".").strip(_PHRASE_STRIP)
        if value:
            return Extraction(value[:MAX_ANSWER_CHARS], False, "phrase")
    bare = text.strip()
    if bare and len(bare) <= BARE_MAX_CHARS and "\n" not in bare and "{" not in bare:
        return Extraction(bare, False, "bare")
    return NOTHING
