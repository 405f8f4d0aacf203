"""Text normalisation shared by the rule scorers (pure functions, never raise on str input).

``normalize_text`` is the usual open-QA normalisation (as in SQuAD / TriviaQA exact match): Unicode NFKC,
lower case, punctuation deleted (ASCII and common Unicode quotes, dashes and ellipses), the articles
"a", "an", "the" removed, whitespace collapsed.
"""

from __future__ import annotations

import re
import string
import unicodedata

__all__ = ["normalize_text", "tokens", "contains_tokens"]

_PUNCT = string.punctuation + "‘’‚‛“”„‟«»‹›–—―‐‑‒…·•¡¿、。，．：；！？（）［］｛｝《》〈〉「」『』【】"
_PUNCT_TABLE = str.maketrans("", "", _PUNCT)
_ARTICLES = frozenset({"a", "an", "the"})
_SPACE_RE = re.compile(r"\s+")


def tokens(text: str) -> list[str]:
    """Normalised word tokens of ``text`` (see the module docstring)."""
    cleaned = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT_TABLE)
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
