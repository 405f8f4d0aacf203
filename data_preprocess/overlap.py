"""Evaluation question lists for overlap filtering: UltraMedical items that overlap PubMedQA and FLAN items that
overlap TriviaQA are removed from the RL and SFT data (paper, Table 5).

The lists are the benchmarks exactly as the evaluation harness loads them (``qiaojin/PubMedQA`` ``pqa_labeled``
train, ``mandarjoshi/trivia_qa`` ``rc.nocontext`` validation; field ``question``): from a local file in that
schema when one is given, else from the hub. An item overlaps when one of
``common.question_segments(item.question)`` equals the normal form of an evaluation question. Whether each
filter ran, on what input and how many items it removed goes to the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_preprocess.common import (
    Item,
    SourceSpec,
    iter_records,
    normalize_question,
    question_segments,
    require,
)
from verl_personadual.eval.benchmarks import SPECS
from verl_personadual.prompts import DataSource

def _benchmark(source: DataSource) -> SourceSpec:
    """The hub source of an evaluation benchmark, as the harness loads it (one source of truth)."""
    spec = SPECS[source]
    return SourceSpec(spec.hub_id, spec.config, spec.split)


PUBMEDQA = _benchmark(DataSource.PUBMEDQA)
TRIVIAQA = _benchmark(DataSource.TRIVIAQA)
#: Filter name -> the benchmark's hub source (the build's ``--<name>`` option replaces it with a local file).
FILTERS: dict[str, SourceSpec] = {"pubmedqa": PUBMEDQA, "triviaqa": TRIVIAQA}


@dataclass(frozen=True)
class OverlapFilter:
    name: str
    questions: frozenset[str]
    origin: dict[str, str]

    def split(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """``(kept, removed)`` in input order."""
        kept, removed = [], []
        for item in items:
            (removed if question_segments(item.question) & self.questions else kept).append(item)
        return kept, removed


def load_filter(name: str, hub: SourceSpec, path: Path | None = None, revision: str | None = None) -> OverlapFilter:
    """Normalised questions of an evaluation set, read from ``path`` (a local file in its hub schema) or, when
    ``path`` is None, from ``hub`` at ``revision``; ``SourceUnavailableError`` when the hub cannot serve it."""
    source = SourceSpec(hub.hub_id, hub.config, hub.split, path, None if path is not None else revision)
    questions = frozenset(
        n for n in (normalize_question(require(rec, "question", str)) for rec in iter_records(source)) if n
    )
    return OverlapFilter(name, questions, source.describe())
