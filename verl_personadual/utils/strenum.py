"""The one base of the project's string enums (data sources, task families, persona settings, decodings, ...)."""

from __future__ import annotations

import enum

__all__ = ["StrEnum"]


class StrEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and f-string form is its value (argparse choices, file names, JSON keys)."""

    def __str__(self) -> str:
        return self.value
