"""FLAN 2021 (``Muennighoff/flan``, the ``_10templates`` copy) -> items.

Row schema: ``inputs`` str, ``targets`` str, ``task`` str (``<name>_10templates``, e.g. ``bool_q_10templates``).
FLAN renders each example through one of ten templates of its task (google-research/FLAN ``flan/templates.py``);
classification templates end with an options block, ``OPTIONS:`` then one ``- option`` line per option.

Gradability decides what is kept (the question is ``inputs`` verbatim, the gold is ``targets``):

- ``inputs`` with an options block -> ``OPTION_TEXT`` (gold = the option text); an item whose target is not among
  its options is skipped as ``gold_not_in_options``;
- no options block, task in :data:`SHORT_ANSWER_TASKS` (closed-book QA and arithmetic, whose ten templates all
  ask a question and target its short answer): ``math_dataset`` -> ``MATH``, ``trivia_qa`` /
  ``natural_questions`` -> ``FREE_TEXT`` (FLAN gives one target string, not an alias list, so these are graded by
  normalised match / containment rather than ``OPEN_QA``);
- anything else has no rule-checkable gold and is skipped as ``ungradable_no_options``: the "inverse" templates
  of classification tasks, which ask the model to *produce* text and show no options ("Write a sentence.",
  "Write a {answer} tweet.", "Generate a context and a hypothesis."; 46 of the 330 templates of FLAN's 33
  option-showing tasks), and the generation tasks (summaries, translations, data-to-text, reading comprehension
  whose templates include question writing).

``FREE_TEXT`` items whose target is longer than ``MAX_FREE_TEXT_GOLD_WORDS`` words are skipped as
``long_free_text_gold``: normalised match / containment cannot grade them, so in RL they would only add
zero-reward groups.

FLAN rows have no id; ``source_id`` is ``<task>:<hash of inputs and targets>``, so exact duplicate rows are
skipped as ``duplicate_id``. Empty ``inputs`` / ``targets`` are skipped as ``empty_question`` / ``empty_gold``.
The stratification task is ``task``.

:func:`template_questions` undoes the QA templates (:data:`QA_TEMPLATES`, FLAN's ten ``trivia_qa`` and ten
``natural_questions`` templates): the overlap filter uses it to find the evaluation question inside ``inputs``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from verl_personadual.core.prompts import DataSource, TaskFamily
from verl_personadual.data.common import (
    Item,
    LoadedSource,
    SourceSpec,
    iter_records,
    require,
    stable_id,
)

HUB_ID = "Muennighoff/flan"
HUB_CONFIG: str | None = None
HUB_SPLIT = "train"
OPTIONS_MARKER = "OPTIONS:"
TASK_SUFFIX = "_10templates"
#: Longest free-text target (in words) kept; longer ones cannot be graded by rules.
MAX_FREE_TEXT_GOLD_WORDS = 10
#: Tasks (name without ``TASK_SUFFIX``) whose items are gradable without an options block, and their family.
SHORT_ANSWER_TASKS: dict[str, TaskFamily] = {
    "math_dataset": TaskFamily.MATH,
    "trivia_qa": TaskFamily.FREE_TEXT,
    "natural_questions": TaskFamily.FREE_TEXT,
}
#: FLAN's question-answering templates (inputs side), ``{question}`` standing for the dataset's question.
QA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "trivia_qa": (
        "Please answer this question: {question}",
        "{question}",
        "Write the answer: {question}",
        "What is the answer: {question}",
        "Answer this question.\n\n{question}",
        "Answer the following question. {question}",
        "Question: {question}\nAnswer:",
        "{question}???",
        "Trivia question: {question}\nAnd the answer is?",
        "{question}\nWhat is the answer?",
    ),
    "natural_questions": (
        "Question: {question}?\nAnswer:",
        "{question}?",
        "Answer the following question:\n\n{question}",
        "Answer this question:\n\n{question}?",
        "Please answer this question: {question}",
        "Answer the question...{question}?",
        "What is the answer to this question? {question}",
        "Can you tell me the answer to {question}?",
        "Next question: {question}",
        "Q: {question} A:",
    ),
}


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


def base_task(task: str) -> str:
    """The FLAN task name without its ``_10templates`` suffix."""
    return task.removesuffix(TASK_SUFFIX)


def family_of(task: str, options: list[str] | None) -> TaskFamily | None:
    """The family of an item of ``task`` with ``options`` (None: no block), or None when it is not gradable."""
    if options is not None:
        return TaskFamily.OPTION_TEXT
    return SHORT_ANSWER_TASKS.get(base_task(task))


@lru_cache(maxsize=None)
def _template_patterns(task: str) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for template in QA_TEMPLATES.get(task, ()):
        head, _, tail = template.partition("{question}")
        patterns.append(re.compile(rf"\A\s*{re.escape(head.strip())}\s*(.+?)\s*{re.escape(tail.strip())}\s*\Z", re.S))
    return tuple(patterns)


def template_questions(task: str, inputs: str) -> set[str]:
    """The questions ``inputs`` would have been rendered from by one of the QA templates of ``task``
    (:data:`QA_TEMPLATES`; empty for other tasks). Whitespace at the template's joins is not significant."""
    found = set()
    for pattern in _template_patterns(base_task(task)):
        match = pattern.match(inputs)
        if match is not None:
            found.add(match.group(1))
    return found


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
        if family is None:
            out.skipped["ungradable_no_options"] += 1
            continue
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
