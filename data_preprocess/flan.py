"""FLAN 2021 (``Muennighoff/flan``, the ``_10templates`` copy) -> items.

Row schema: ``inputs`` str, ``targets`` str, ``task`` str (e.g. ``bool_q_10templates``).

Family rules (the question is ``inputs`` verbatim, the gold is ``targets``):

- ``inputs`` with an ``OPTIONS:`` line followed by ``- option`` lines -> ``OPTION_TEXT`` (gold = the option text;
  an item whose target is not among its options is skipped as ``gold_not_in_options``);
- task ``math_dataset_*`` -> ``MATH``;
- everything else, including ``trivia_qa_*`` and ``natural_questions_*`` -> ``FREE_TEXT``: FLAN gives one target
  string, not an alias list, so these are graded by normalised match / containment rather than ``OPEN_QA``.

``FREE_TEXT`` items whose target is longer than ``MAX_FREE_TEXT_GOLD_WORDS`` words (summaries, translations,
generated paragraphs) are skipped as ``long_free_text_gold``: normalised match / containment cannot grade them,
so in RL they would only add zero-reward groups.

FLAN rows have no id; ``source_id`` is ``<task>:<hash of inputs and targets>``, so exact duplicate rows are
skipped as ``duplicate_id``. Empty ``inputs`` / ``targets`` are skipped as ``empty_question`` / ``empty_gold``.
The stratification task is ``task``.
"""

from __future__ import annotations

from pathlib import Path

from data_preprocess.common import (
    Item,
    LoadedSource,
    SourceSpec,
    iter_records,
    require,
    stable_id,
)
from verl_personadual.prompts import DataSource, TaskFamily

HUB_ID = "Muennighoff/flan"
HUB_CONFIG: str | None = None
HUB_SPLIT = "train"
OPTIONS_MARKER = "OPTIONS:"
#: Longest free-text target (in words) kept; longer ones cannot be graded by rules.
MAX_FREE_TEXT_GOLD_WORDS = 10


def spec(path: Path | None = None, revision: str | None = None, split: str = HUB_SPLIT) -> SourceSpec:
    return SourceSpec(HUB_ID, HUB_CONFIG, split, path, revision)


def parse_options(inputs: str) -> list[str] | None:
    """The ``- option`` lines right after the last ``OPTIONS:`` line, or None when there is no such block."""
    lines = inputs.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == OPTIONS_MARKER]
    if not marks:
        return None
    options = []
    for line in lines[marks[-1] + 1 :]:
        if not line.startswith("- "):
            break
        options.append(line[2:].strip())
    return options or None


def family_of(task: str, options: list[str] | None) -> TaskFamily:
    if options is not None:
        return TaskFamily.OPTION_TEXT
    if task.startswith("math_dataset"):
        return TaskFamily.MATH
    return TaskFamily.FREE_TEXT


def load(source: SourceSpec, progress: bool = False) -> LoadedSource:
    out = LoadedSource("flan", [])
    seen: set[str] = set()
    for rec in iter_records(source, progress):
        out.rows_read += 1
        inputs = require(rec, "inputs", str).strip()
        targets = require(rec, "targets", str).strip()
        task = require(rec, "task", str).strip()
        if not inputs:
            out.skipped["empty_question"] += 1
            continue
        if not targets:
            out.skipped["empty_gold"] += 1
            continue
        uid = stable_id(task, inputs, targets)
        if uid in seen:
            out.skipped["duplicate_id"] += 1
            continue
        seen.add(uid)
        options = parse_options(inputs)
        if options is not None and targets not in options:
            out.skipped["gold_not_in_options"] += 1
            continue
        family = family_of(task, options)
        if family is TaskFamily.FREE_TEXT and len(targets.split()) > MAX_FREE_TEXT_GOLD_WORDS:
            out.skipped["long_free_text_gold"] += 1
            continue
        out.items.append(
            Item(
                source=DataSource.FLAN,
                source_id=uid,
                task=task,
                family=family,
                question=inputs,
                gold=targets,
                choices=tuple(options or ()),
            )
        )
    return out
