"""Small text helpers shared by every layer (no imports of the project)."""

from __future__ import annotations

import difflib
from typing import Sequence


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known name most similar to ``name`` (difflib ratio >= 0.6), or None."""
    hits = difflib.get_close_matches(name, list(known), n=1)
    return hits[0] if hits else None
