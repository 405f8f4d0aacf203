"""Evaluation question lists for overlap filtering: UltraMedical items that overlap PubMedQA and FLAN items that
overlap TriviaQA are removed from the RL and SFT data (paper, Table 5). Which benchmark filters which training
source is its registration's ``overlap`` rule (``verl_personadual.data.benchmarks.OverlapRule``).

The lists are the benchmarks exactly as the evaluation harness loads them (``qiaojin/PubMedQA`` ``pqa_labeled``
train, ``mandarjoshi/trivia_qa`` ``rc.nocontext`` validation; field ``question``): from a local file in that
schema when one is given, else from the hub. An item overlaps when a key matches:

- ``text``: one of the item's question forms equals the normal form of an evaluation question. The forms are
  ``common.question_segments(item.question)`` and, for FLAN items, the questions recovered by undoing the
  task's QA templates (``flan.template_questions``: all ten ``trivia_qa`` templates, whatever their lead-in);
- ``id`` (where the benchmark's rule names an id the item carries, ``OverlapRule.id_field``): exact equality, e.g.
  the PubMed id of UltraMedical's ``PubMedQA,<pmid>`` items and PubMedQA's ``pubid``.

Whether each filter ran, on what input, how many items it removed and by which key (``text``, ``id`` or
``id_and_text``) goes to the manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from verl_personadual.core.prompts import DataSource
from verl_personadual.data import flan
from verl_personadual.data.benchmarks import OverlapRule, benchmarks, get_benchmark
from verl_personadual.data.common import (
    Item,
    SourceSpec,
    iter_records,
    normalize_question,
    question_segments,
    require,
)

#: The keys an item can be removed by, as the manifest names them.
KEYS = ("text", "id", "id_and_text")


def hub_source(name: str) -> SourceSpec:
    """The hub source of an evaluation benchmark, as the harness loads it (one source of truth)."""
    spec = get_benchmark(name).spec
    return SourceSpec(spec.hub_id, spec.config, spec.split)


def filter_rules() -> dict[str, OverlapRule]:
    """Filter name (the benchmark's) -> its rule, for every registered benchmark with one, by name (the build's
    ``--<name>`` option gives its question list as a local file)."""
    rules = {b.name: b.overlap for b in benchmarks() if b.overlap is not None}
    return {name: rules[name] for name in sorted(rules)}


def _id_rule(name: str) -> OverlapRule | None:
    rule = get_benchmark(name).overlap
    return rule if rule is not None and rule.id_field is not None and rule.item_id is not None else None


def item_questions(item: Item) -> set[str]:
    """The normal forms an item's question is matched on (module docstring, key ``text``)."""
    forms = question_segments(item.question)
    if item.source == DataSource.FLAN:
        forms |= {normalize_question(q) for q in flan.template_questions(item.task, item.question)} - {""}
    return forms


@dataclass(frozen=True)
class FilterResult:
    """The items a filter kept and removed (input order) and how many it removed by each key."""

    kept: list[Item]
    removed: list[Item]
    removed_by: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OverlapFilter:
    name: str
    questions: frozenset[str]
    origin: dict[str, str]
    #: The benchmark's ids (empty when the filter matches on text only).
    ids: frozenset[str] = frozenset()

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this filter matches on."""
        return ("text", "id") if _id_rule(self.name) is not None else ("text",)

    def match(self, item: Item) -> str | None:
        """The key ``item`` overlaps by (one of :data:`KEYS`), or None."""
        by_text = not item_questions(item).isdisjoint(self.questions)
        by_id = False
        rule = _id_rule(self.name)
        if rule is not None and rule.item_id is not None:
            item_id = rule.item_id(item.source_id)
            by_id = item_id is not None and item_id in self.ids
        if by_id and by_text:
            return "id_and_text"
        return "id" if by_id else "text" if by_text else None

    def split(self, items: list[Item]) -> FilterResult:
        """Kept and removed items in input order, with the count of removals per key."""
        kept, removed = [], []
        by_key = Counter(dict.fromkeys(KEYS if "id" in self.keys else ("text",), 0))
        for item in items:
            key = self.match(item)
            if key is None:
                kept.append(item)
            else:
                removed.append(item)
                by_key[key] += 1
        return FilterResult(kept, removed, dict(by_key))


def _benchmark_id(value: int | str) -> str:
    """An id as compared: digits without leading zeros, else the stripped text."""
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def load_filter(name: str, hub: SourceSpec, path: Path | None = None, revision: str | None = None) -> OverlapFilter:
    """Normalised questions (and, for a rule with an ``id_field``, ids) of the evaluation benchmark ``name``, read
    from ``path`` (a local file in its hub schema) or, when ``path`` is None, from ``hub`` at ``revision``;
    ``SourceUnavailableError`` when the hub cannot serve it."""
    source = SourceSpec(hub.hub_id, hub.config, hub.split, path, None if path is not None else revision)
    rule = _id_rule(name)
    id_field = rule.id_field if rule is not None else None
    questions, ids = set(), set()
    for rec in iter_records(source):
        norm = normalize_question(require(rec, "question", str))
        if norm:
            questions.add(norm)
        if id_field is not None:
            ids.add(_benchmark_id(require(rec, id_field, (int, str))))
    return OverlapFilter(name, frozenset(questions), source.describe(), frozenset(ids))
