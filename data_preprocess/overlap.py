"""Evaluation question lists for overlap filtering: UltraMedical items that overlap PubMedQA and FLAN items that
overlap TriviaQA are removed from the RL data.

Inputs are optional local files in the hub schemas (``qiaojin/PubMedQA`` ``pqa_labeled``: field ``question``;
``mandarjoshi/trivia_qa``: field ``question``). An item overlaps when one of
``common.question_segments(item.question)`` equals the normal form of an evaluation question. Whether each
filter ran and how many items it removed goes to the manifest.
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

PUBMEDQA = SourceSpec("qiaojin/PubMedQA", "pqa_labeled", "train")
TRIVIAQA = SourceSpec("mandarjoshi/trivia_qa", "rc.nocontext", "validation")


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


def load_filter(name: str, hub: SourceSpec, path: Path) -> OverlapFilter:
    """Normalised questions of an evaluation set read from a local file in its hub schema."""
    source = SourceSpec(hub.hub_id, hub.config, hub.split, path)
    questions = frozenset(
        n for n in (normalize_question(require(rec, "question", str)) for rec in iter_records(source)) if n
    )
    return OverlapFilter(name, questions, source.describe())
