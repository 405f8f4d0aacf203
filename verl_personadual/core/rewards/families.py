"""The registry of reward families, and of the reward family each data source defaults to.

A reward family is how an item's gold answer is encoded and graded: one :class:`RewardFamily` record, added by
one :func:`register_family` call, holds its name (the ``extra_info["task_family"]`` value of its rows), the
answer-format clause of its prompts (``prompts.answer_instruction``), its gold parser and its scorer. The built-in
families (``prompts.TaskFamily``) are registered in ``verl_personadual.core.rewards.scorers``; the worked example
of a new one is in ``docs/extending.md``.

A row without ``extra_info["task_family"]`` is graded by the default family of its ``data_source``
(:func:`source_family`), registered with :func:`register_source`: the training sources in
``verl_personadual.core.rewards.dispatch``, each evaluation benchmark by its registration in
``verl_personadual.data.benchmarks``. Every row this project writes names its family, so the default is a
fallback for rows written elsewhere.

Registering a name twice with another record is a ``ValueError`` (a bug in the registering code); registering
the same record again is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from verl_personadual.core.prompts import register_answer_format

__all__ = [
    "RewardFamily",
    "register_family",
    "reward_family",
    "family_names",
    "register_source",
    "source_family",
    "source_names",
]


@dataclass(frozen=True)
class RewardFamily:
    """One reward family.

    Attributes:
        name: the family's ``task_family`` value.
        instruction: what the final answer must be, the clause after "with the key "answer": " in every prompt,
            e.g. ``'one of yes or no, e.g. {"answer": "yes"}'``.
        parse_gold: ``(ground_truth, choices) -> canonical gold`` (``Gold.value``); raises
            ``scorers.RewardInputError`` naming what is wrong with a bad gold. ``choices`` is the row's
            ``extra_info["choices"]`` as a tuple of str (empty when absent).
        score: ``(extracted answer, scorers.Gold, math timeout in s) -> scorers.Verdict``; must not raise on any
            answer text.
    """

    name: str
    instruction: str
    parse_gold: Callable[[Any, tuple[str, ...]], Any]
    score: Callable[[str, Any, float], Any]


_FAMILIES: dict[str, RewardFamily] = {}
_SOURCE_FAMILY: dict[str, str] = {}


def register_family(family: RewardFamily) -> RewardFamily:
    """Add ``family`` to the registry (and its answer-format clause to ``prompts``); returns it."""
    name = str(family.name)
    known = _FAMILIES.get(name)
    if known is not None and known != family:
        raise ValueError(f"reward family {name!r} is already registered with another record")
    register_answer_format(name, family.instruction)
    _FAMILIES[name] = family
    return family


def reward_family(name: Any) -> RewardFamily:
    """The registered family called ``name``; ValueError naming the registered ones."""
    try:
        return _FAMILIES[str(name)]
    except KeyError:
        raise ValueError(f"{name!r} is not a registered reward family ({family_names()})") from None


def family_names() -> list[str]:
    """The registered families' names, in registration order."""
    return list(_FAMILIES)


def register_source(source: str, family: str) -> None:
    """Rows of ``data_source == source`` without a ``task_family`` are graded as ``family`` (a registered one)."""
    name, fam = str(source), str(family)
    if fam not in _FAMILIES:
        raise ValueError(f"data source {name!r}: {fam!r} is not a registered reward family ({family_names()})")
    if _SOURCE_FAMILY.get(name, fam) != fam:
        raise ValueError(f"data source {name!r} is already registered with reward family {_SOURCE_FAMILY[name]!r}")
    _SOURCE_FAMILY[name] = fam


def source_family(source: Any) -> str | None:
    """The default reward family of a data source, None when the source is not registered."""
    return _SOURCE_FAMILY.get(str(source))


def source_names() -> list[str]:
    """The registered data sources, in registration order."""
    return list(_SOURCE_FAMILY)
