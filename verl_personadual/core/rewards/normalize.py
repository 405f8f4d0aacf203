"""Text normalisation shared by the rule scorers (pure functions, never raise on str input).

``normalize_text`` is the usual open-QA normalisation (as in SQuAD / TriviaQA exact match): Unicode NFKC,
lower case, punctuation deleted (ASCII and common Unicode quotes, dashes and ellipses), the articles
"a", "an", "the" removed, whitespace collapsed. Before punctuation is deleted, English contractions are written
out (:func:`expand_contractions`), so an answer and a gold that differ only by a contraction or by punctuation
normalise alike ("It is impossible to say." = FLAN's "It's impossible to say"), while a negation stays a word of
its own ("isn't" -> "is not", "can't" / "cannot" -> "can not"): "It isn't possible" never equals "It is
possible".

``number_tokens`` additionally writes number words from zero to ninety-nine as digits ("four" -> "4",
"twenty-one" and "twenty one" -> "21"), for scorers that compare free text.
"""

from __future__ import annotations

import re
import string
import unicodedata

__all__ = ["normalize_text", "tokens", "contains_tokens", "number_tokens", "expand_contractions"]

_PUNCT = string.punctuation + "‘’‚‛“”„‟«»‹›–—―‐‑‒…·•¡¿、。，．：；！？（）［］｛｝《》〈〉「」『』【】"
_PUNCT_TABLE = str.maketrans("", "", _PUNCT)
_ARTICLES = frozenset({"a", "an", "the"})
_SPACE_RE = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})
# Applied in order to lower-case text; "'s" is written out only after pronouns and question words (elsewhere it
# is mostly a possessive: "john's" stays "johns").
_CONTRACTIONS = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"\bcan't\b", "can not"),
        (r"\bcannot\b", "can not"),
        (r"\bwon't\b", "will not"),
        (r"\bshan't\b", "shall not"),
        (r"\blet's\b", "let us"),
        (r"(?<=\w)n't\b", " not"),
        (r"(?<=\w)'re\b", " are"),
        (r"(?<=\w)'m\b", " am"),
        (r"(?<=\w)'ll\b", " will"),
        (r"(?<=\w)'ve\b", " have"),
        (r"(?<=\w)'d\b", " would"),
        (r"\b(it|that|there|here|what|who|where|when|why|how|he|she)'s\b", r"\1 is"),
    )
)
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen"
).split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SMALL = {word: i for i, word in enumerate(_UNITS)}
_NUMBER_WORDS = (
    {word: str(i) for word, i in _SMALL.items()}
    | {tens: str(value) for tens, value in _TENS.items()}
    | {tens + unit: str(value + i) for tens, value in _TENS.items() for unit, i in _SMALL.items() if 1 <= i <= 9}
)


def expand_contractions(text: str) -> str:
    """Lower-case ``text`` with typographic apostrophes made plain and contractions written out ("It’s" -> "it
    is", "won't" -> "will not", "cannot" -> "can not"; possessives kept)."""
    out = text.lower().translate(_APOSTROPHES)
    if "'" not in out and "cannot" not in out:
        return out
    for pattern, repl in _CONTRACTIONS:
        out = pattern.sub(repl, out)
    return out


def tokens(text: str) -> list[str]:
    """Normalised word tokens of ``text`` (see the module docstring)."""
    cleaned = expand_contractions(unicodedata.normalize("NFKC", text)).translate(_PUNCT_TABLE)
    return [t for t in _SPACE_RE.split(cleaned) if t and t not in _ARTICLES]


def normalize_text(text: str) -> str:
    """Normalised ``text``: its tokens joined by single spaces ("The  U.S.A.!" -> "usa")."""
    return " ".join(tokens(text))


def contains_tokens(haystack: list[str], needle: list[str]) -> bool:
    """True when ``needle`` (non-empty) occurs as a contiguous run of whole tokens in ``haystack``."""
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    first = needle[0]
    for i in range(len(haystack) - n + 1):
        if haystack[i] == first and haystack[i : i + n] == needle:
            return True
    return False


def number_tokens(words: list[str]) -> list[str]:
    """``words`` (normalised tokens) with number words written as digits (see the module docstring)."""
    if _TENS.keys().isdisjoint(words):
        return [_NUMBER_WORDS.get(word, word) for word in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _TENS and i + 1 < len(words) and 1 <= _SMALL.get(words[i + 1], 0) <= 9:
            word, i = word + words[i + 1], i + 1
        out.append(_NUMBER_WORDS.get(word, word))
        i += 1
    return out
