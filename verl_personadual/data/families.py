"""Task families of eval rows and runs: which rows are objective (``general``) and which personalized, by
benchmark / data source (:class:`Selector` overrides the default split).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Iterable, Mapping

from verl_personadual.data.benchmarks import is_personalized

PERSONALIZED = "personalized"


GENERAL = "general"


_SOURCE_FIELDS = ("benchmark", "data_source")


@dataclass(frozen=True)
class Selector:
    """``FIELD=V1,V2,...``: a row matches when its ``FIELD`` is one of the values (compared as strings)."""

    field: str
    values: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> "Selector":
        """``"task=helpful"`` -> Selector; ValueError naming the expected form."""
        name, sep, values = text.partition("=")
        vals = frozenset(v.strip() for v in values.split(",") if v.strip())
        if not sep or not name.strip() or not vals:
            raise ValueError(f"bad selector {text!r}: expected FIELD=VALUE[,VALUE...], e.g. task=helpful")
        return cls(name.strip(), vals)

    def __str__(self) -> str:
        return f"{self.field}={','.join(sorted(self.values))}"

    def matches(self, row: Any) -> bool:
        value = _lookup(row, self.field)
        return value is not None and str(value) in self.values


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if is_dataclass(row) and not isinstance(row, type):
        return asdict(row)
    return row


def _lookup(row: Any, name: str) -> Any:
    data = _as_mapping(row)
    if name in data:
        return data[name]
    extra = data.get("extra_info")
    return extra.get(name) if isinstance(extra, Mapping) else None


def family_of(row: Any, selector: Selector | None = None) -> str:
    """:data:`PERSONALIZED` or :data:`GENERAL` (module docstring)."""
    if selector is not None:
        return PERSONALIZED if selector.matches(row) else GENERAL
    data = _as_mapping(row)
    source = next((data[f] for f in _SOURCE_FIELDS if f in data), None)
    return PERSONALIZED if isinstance(source, str) and is_personalized(source) else GENERAL


def split_families(rows: Iterable[Any], selector: Selector | None = None) -> dict[str, list[Any]]:
    """``{"general": [...], "personalized": [...]}`` in input order."""
    out: dict[str, list[Any]] = {GENERAL: [], PERSONALIZED: []}
    for row in rows:
        out[family_of(row, selector)].append(row)
    return out
