"""Answer extraction from a raw model response (any string, never raises), read as a careful grader would.

The response format is defined in :mod:`verl_personadual.core.prompts`: free reasoning, then a final JSON object
``{"answer": ...}`` (key ``prompts.ANSWER_KEY``) on the last line.

**What counts as the final answer.**

1. The mode prefix (plain text when it is not a special token) is removed from the head.
2. Think blocks: only the text after the last ``</think>`` counts, so a draft answer inside
   ``<think>…</think>`` never outranks the final one. If that text still holds ``<think>`` (a think block was
   opened and never closed: the response was cut off while thinking) there is no answer, whatever the draft
   says. (A chat template that opens the think block in the prompt leaves only ``</think>`` in the response;
   that is read the same way.)
3. Sources, by priority:

   1. ``json``: the last JSON object holding the answer key with a usable value (str, number, bool, list of
      those). Several objects -> the last one wins; a broken or valueless object after a good one is skipped.
      ``format_ok`` is True only for this source, when the object is followed by nothing but whitespace, a
      closing code fence or a closing ``</answer>`` tag.
   2. ``loose_json``: a JSON-like object with the answer key that ``json`` rejects (single quotes, unquoted
      value, trailing comma), e.g. ``{'answer': 'B'}``.
   3. ``boxed``: the content of the last ``\\boxed{...}`` (balanced braces).
   4. ``phrase``: the last "answer is X" / "answer: X" (X up to the end of its line, markdown and a final
      period stripped), e.g. "So, the answer is (B)." -> "(B)".
   5. ``bare``: the whole (remaining) response when it is one short line (at most ``BARE_MAX_CHARS``) without
      a ``{`` (a broken JSON object is not an answer), e.g. "B".

   Sources 2-5 give ``format_ok = False``.
4. A lead-in inside the value is dropped: "The answer is C", "Final answer: C", "So the answer is: C" -> "C".

**JSON as models write it.** The object is read by a small bounded reader, not :mod:`json`:

- Strings are JSON strings, except that a backslash starting a LaTeX command is literal. Models write
  ``{"answer": "\\frac{3}{4}"}`` with one backslash, which strict JSON reads as a form feed + "rac{3}{4}".
  A backslash followed by letters is a LaTeX command when it is not a JSON escape (``\\sqrt``, ``\\pi``,
  ``\\cdot``, ``\\underline``), or when the escape letter b / f / n / r / t starts a word in
  ``LATEX_WORDS`` or a ``\\text...`` command (``\\frac``, ``\\times``, ``\\theta``, ``\\neq``, ``\\right``,
  ``\\binom``, ``\\beta``); otherwise it is the JSON escape (``"line\\nnext"`` keeps its newline). Any other
  backslash that is not a JSON escape (``\\{``, ``\\,``, ``\\$``) is literal; ``\\\\``, ``\\"``, ``\\/`` and
  ``\\uXXXX`` are JSON escapes. Raw control characters inside strings are accepted.
- The answer object is the nearest object start before the key: a ``{`` followed by optional whitespace and
  ``"``. Braces of LaTeX in an earlier string value (``"explanation": "$\\frac{a}{b}$ and \\{1,2\\}"``) are
  therefore never candidates.
- Nesting deeper than ``MAX_JSON_DEPTH`` is not an answer object (a repetition loop ``[[[[...`` costs a few
  steps, never recursion).

Cost is bounded for huge inputs: the JSON search tries at most ``MAX_JSON_PROBES`` object starts, scanning
from the end, and fallbacks 2-4 only look at the last ``FALLBACK_WINDOW`` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from verl_personadual.core.modes import PREFIX_TEXT
from verl_personadual.core.prompts import ANSWER_KEY

__all__ = [
    "Extraction",
    "extract_answer",
    "strip_mode_prefix",
    "strip_lead_in",
    "NOTHING",
    "THINK_OPEN",
    "THINK_CLOSE",
    "LATEX_WORDS",
    "MAX_JSON_PROBES",
    "MAX_JSON_DEPTH",
    "FALLBACK_WINDOW",
    "BARE_MAX_CHARS",
    "MAX_ANSWER_CHARS",
]

#: Object starts (``{`` + whitespace + ``"``) tried in total, per response.
MAX_JSON_PROBES = 24
#: Object starts tried per occurrence of the answer key.
_STARTS_PER_KEY = 6
#: Deepest nesting of objects / arrays an answer object may have.
MAX_JSON_DEPTH = 16
#: Fallback sources 2-4 search only this many trailing characters.
FALLBACK_WINDOW = 4000
#: A response of at most this many characters on one line is taken whole as its answer (source ``bare``).
BARE_MAX_CHARS = 200
#: Extracted answers are cut to this many characters (scorers never need more).
MAX_ANSWER_CHARS = 1000
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: LaTeX command names that begin with a JSON escape letter (b f n r t); ``\\text...`` commands count too.
LATEX_WORDS = frozenset(
    """
    backslash bar barwedge bbox because beta beth bf big bigcap bigcirc bigcup bigg bigl bigr bigoplus
    bigotimes bigsqcup bigstar bigtriangledown bigtriangleup biguplus bigvee bigwedge binom blacksquare bm
    bmod boldsymbol bot bowtie boxed boxdot boxminus boxplus boxtimes brace bracket breve bullet
    fbox flat forall frac frak frown
    nabla natural ne nearrow neg neq newline nexists ngeq ngtr ni nleq nless nmid nolimits not notin nparallel
    nrightarrow nsubseteq nsupseteq nu nwarrow
    rangle rbrace rbrack rceil rfloor rho right rightarrow rightharpoonup rightleftharpoons rm rmoustache root
    rtimes rvert
    tan tanh tau tbinom tfrac therefore theta thicksim thinspace tilde times tiny to top triangle triangledown
    triangleleft triangleq triangleright tt
    """.split()
)

_QUOTED_KEY = f'"{ANSWER_KEY}"'
_PREFIX_RE = re.compile(r"\A\s*(?:" + "|".join(re.escape(p) for p in PREFIX_TEXT.values()) + r")")
_TRAILER_RE = re.compile(r"\s*(?:```|</answer>)?\s*\Z", re.IGNORECASE)
# An object start read backwards: '"', optional whitespace, '{' (searched in the reversed text).
_REV_OBJECT_START_RE = re.compile(r'"[ \t\r\n]*\{')
# The common shape {"answer": "..."} alone, read without the general reader (same result, faster).
_SIMPLE_OBJECT_RE = re.compile(
    r'\{[ \t\r\n]*"' + re.escape(ANSWER_KEY) + r'"[ \t\r\n]*:[ \t\r\n]*"((?:[^"\\]|\\.)*)"[ \t\r\n]*\}', re.DOTALL
)
_WS_RE = re.compile(r"[ \t\r\n]*")
_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ESCAPE_RE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([A-Za-z]+)|(.))", re.DOTALL)
_CONTROL_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_LITERALS = (("true", True), ("false", False), ("null", None))
_LOOSE_RE = re.compile(
    r"\{\s*['\"]?" + re.escape(ANSWER_KEY) + r"['\"]?\s*:\s*"
    r"(?:\"([^\"\n]{0,500})\"|'([^'\n]{0,500})'|([^,{}\[\]\"'\s][^,}\n]{0,499}?))\s*[,}]",
    re.IGNORECASE,
)
_PHRASE_RE = re.compile(r"answer\s*(?:is|:)\s*:?[ \t]*([^\n]{1,300})", re.IGNORECASE)
_PHRASE_STRIP = " \t*_`\"'$"
_LEAD_IN_RE = re.compile(
    r"\A[\s*_]*(?:(?:so|thus|therefore|hence)\b[,:]?\s*)?(?:the\s+|my\s+)?(?:final\s+|correct\s+|best\s+)?"
    r"answer\s*(?:is\b|:)\s*:?[\s*_]*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extraction:
    """What was found in a response.

    Attributes:
        answer: the extracted answer text (stripped, at most ``MAX_ANSWER_CHARS``), or None if nothing found.
        format_ok: the response ends with the ``{"answer": ...}`` JSON object, as the prompt asks.
        source: ``json`` | ``loose_json`` | ``boxed`` | ``phrase`` | ``bare`` | ``none``.
        span: for source ``json``, (start, end) of the answer object in the response; else None. Not compared.
    """

    answer: str | None
    format_ok: bool
    source: str
    span: tuple[int, int] | None = field(default=None, compare=False)


NOTHING = Extraction(None, False, "none")


def strip_mode_prefix(text: str) -> str:
    """``text`` without a leading mode prefix (plain-text prefixes survive decoding; special ones do not)."""
    m = _PREFIX_RE.match(text)
    return text[m.end() :] if m else text


def strip_lead_in(answer: str) -> str:
    """``answer`` without a leading "The answer is" / "Final answer:" (unchanged when nothing follows it)."""
    m = _LEAD_IN_RE.match(answer)
    rest = answer[m.end() :] if m else ""
    return rest if rest.strip() else answer


class _NotJSON(Exception):
    """Internal: the text at a candidate position is not a (lenient) JSON value."""


def _escape(m: re.Match[str]) -> str:
    hex_digits, word, other = m.groups()
    if hex_digits is not None:
        return chr(int(hex_digits, 16))
    if word is not None:
        control = _CONTROL_ESCAPES.get(word[0])
        if control is not None and not (word in LATEX_WORDS or word.startswith("text")):
            return control + word[1:]
        return "\\" + word
    return other if other in '"\\/' else "\\" + other


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body
    text = _ESCAPE_RE.sub(_escape, body)
    # \uD83D\uDE00 pairs decode to lone surrogates: join them; a lone one becomes U+FFFD.
    if _SURROGATE_RE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _skip_ws(text: str, i: int) -> int:
    return _WS_RE.match(text, i).end()  # type: ignore[union-attr]  # always matches (possibly empty)


def _string(text: str, i: int) -> tuple[str, int]:
    m = _STRING_RE.match(text, i)
    if m is None:
        raise _NotJSON
    return _unescape(m.group(1)), m.end()


def _value(text: str, i: int, depth: int) -> tuple[Any, int]:
    """(value, end) of the lenient JSON value at ``i``; numbers are kept as their literal text."""
    c = text[i : i + 1]
    if c == '"':
        return _string(text, i)
    if c == "{" or c == "[":
        if depth >= MAX_JSON_DEPTH:
            raise _NotJSON
        return (_object if c == "{" else _array)(text, i, depth + 1)
    m = _NUMBER_RE.match(text, i)
    if m is not None:
        return m.group(), m.end()
    for word, value in _LITERALS:
        if text.startswith(word, i):
            return value, i + len(word)
    raise _NotJSON


def _array(text: str, i: int, depth: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    i = _skip_ws(text, i + 1)
    if text[i : i + 1] == "]":
        return items, i + 1
    while True:
        value, i = _value(text, i, depth)
        items.append(value)
        i = _skip_ws(text, i)
        c = text[i : i + 1]
        if c == "]":
            return items, i + 1
        if c != ",":
            raise _NotJSON
        i = _skip_ws(text, i + 1)


def _object(text: str, i: int, depth: int = 1) -> tuple[dict[str, Any], int]:
    obj: dict[str, Any] = {}
    i = _skip_ws(text, i + 1)
    if text[i : i + 1] == "}":
        return obj, i + 1
    while True:
        key, i = _string(text, i)
        i = _skip_ws(text, i)
        if text[i : i + 1] != ":":
            raise _NotJSON
        obj[key], i = _value(text, _skip_ws(text, i + 1), depth)
        i = _skip_ws(text, i)
        c = text[i : i + 1]
        if c == "}":
            return obj, i + 1
        if c != ",":
            raise _NotJSON
        i = _skip_ws(text, i + 1)


def _finish(text: str | None) -> str | None:
    """An extracted value as an answer: lead-in dropped, stripped, cut; None when empty."""
    if text is None:
        return None
    answer = strip_lead_in(text.strip()).strip()
    return answer[:MAX_ANSWER_CHARS] if answer else None


def _value_text(value: Any) -> str | None:
    """The answer value of a decoded object as text; None when it cannot be an answer."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return _finish(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return _finish(", ".join(v.strip() for v in value))
    return None


def _decode_at(text: str, start: int) -> tuple[dict[str, Any], int]:
    """(object, end) of the object starting at ``start``; ({}, start) when there is none."""
    simple = _SIMPLE_OBJECT_RE.match(text, start)
    if simple is not None:
        return {ANSWER_KEY: _unescape(simple.group(1))}, simple.end()
    try:
        return _object(text, start)
    except _NotJSON:
        return {}, start


def _last_json(text: str) -> tuple[str, int, int] | None:
    """(answer, start, end) of the last JSON object holding the answer key with a usable value."""
    n = len(text)
    k = text.rfind(_QUOTED_KEY)
    if k < 0:
        return None
    # Most responses end with a plain {"answer": "..."}: read it without reversing the text.
    brace = text.rfind("{", 0, k)
    simple = _SIMPLE_OBJECT_RE.match(text, brace) if brace >= 0 else None
    if simple is not None and simple.end() > k:
        answer = _finish(_unescape(simple.group(1)))
        if answer is not None:
            return answer, brace, simple.end()
    rev = text[::-1]
    probes = 0
    while probes < MAX_JSON_PROBES and k >= 0:
        # Object starts at or before the key, nearest first: the key's own quote may be the start's '"'.
        for tries, m in enumerate(_REV_OBJECT_START_RE.finditer(rev, n - 1 - k), 1):
            probes += 1
            start = n - m.end()
            obj, end = _decode_at(text, start)
            if end > k and ANSWER_KEY in obj:
                answer = _value_text(obj[ANSWER_KEY])
                if answer is not None:
                    return answer, start, end
                break
            if tries >= _STARTS_PER_KEY or probes >= MAX_JSON_PROBES:
                break
        k = text.rfind(_QUOTED_KEY, 0, k)
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
                            return content
                        break
                j += 1
        start = tail.rfind("\\boxed", 0, start)
    return None


def _last_match(pattern: re.Pattern[str], tail: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(tail):
        pass
    return last


def _final_text(response: str) -> tuple[str, int] | None:
    """(text, offset in ``response``) of the part that may hold the final answer (rules 1-2 of the module
    docstring); None when there is none."""
    text = strip_mode_prefix(response)
    offset = len(response) - len(text)
    if "think>" not in text:
        return text, offset
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        text, offset = text[close + len(THINK_CLOSE) :], offset + close + len(THINK_CLOSE)
    return None if THINK_OPEN in text else (text, offset)


def extract_answer(response: str) -> Extraction:
    """Extract the final answer of ``response`` (see the module docstring for the rules). Never raises."""
    if not isinstance(response, str):
        return NOTHING
    final = _final_text(response)
    if final is None:
        return NOTHING
    text, offset = final
    found = _last_json(text)
    if found is not None:
        answer, start, end = found
        return Extraction(answer, _TRAILER_RE.match(text, end) is not None, "json", (offset + start, offset + end))
    tail = text[-FALLBACK_WINDOW:]
    loose = _last_match(_LOOSE_RE, tail)
    if loose is not None:
        value = _finish(next(g for g in loose.groups() if g is not None))
        if value is not None:
            return Extraction(value, False, "loose_json")
    boxed = _finish(_last_boxed(tail))
    if boxed is not None:
        return Extraction(boxed, False, "boxed")
    phrase = _last_match(_PHRASE_RE, tail)
    if phrase is not None:
        value = _finish(phrase.group(1).strip(_PHRASE_STRIP).rstrip(".").strip(_PHRASE_STRIP))
        if value is not None:
            return Extraction(value, False, "phrase")
    bare = text.strip()
    if len(bare) <= BARE_MAX_CHARS and "\n" not in bare and "{" not in bare:
        value = _finish(bare)
        if value is not None:
            return Extraction(value, False, "bare")
    return NOTHING
