"""UltraMedical (``TsinghuaC3I/UltraMedical``, split ``train``) -> multiple-choice items.

Row schema: ``id`` str ("<Source>,<n>": ``MedQA,1592``, ``PubMedQA,<pmid>`` ...), ``type`` str (one of
:data:`TYPES`: ``Exam`` for MedQA / MedMCQA / MedQA-Evol / TextBookQA, ``Literature`` for PubMedQA, ``Open-End``
for the instruction sources), ``conversations`` list of {``from``, ``value``} (the ``human`` turn is the
question), ``answer`` str or null, ``score`` str (unused).

- ``Open-End`` items have no rule-checkable gold and are skipped as ``open_ended``; a ``type`` outside
  :data:`TYPES` is skipped as ``unknown_type``.
- An ``Exam`` / ``Literature`` item is multiple choice when its ``answer`` is a single letter and the human turn
  ends with a block of lettered options ``A. ...`` / ``B. ...`` (one per line, consecutive letters from A);
  otherwise it is skipped as ``no_options``. PubMedQA items inside UltraMedical are of this form (options yes /
  no / maybe, in that order or yes / maybe / no) and stay lettered multiple choice. The question is re-rendered
  as the stem plus ``prompts.format_choices(options)``; the gold is the letter.

The stratification task is the id's source prefix ("MedQA", "PubMedQA", ...). :func:`pubmed_id` reads the
PubMed id of a PubMedQA item (the PubMedQA overlap filter matches it against PubMedQA's ``pubid``).
"""

from __future__ import annotations

import re
from pathlib import Path

from verl_personadual.core.prompts import (
    LETTERS,
    DataSource,
    TaskFamily,
    format_choices,
)
from verl_personadual.data.common import (
    Item,
    LoadedSource,
    Record,
    SchemaError,
    SourceSpec,
    iter_records,
    require,
)

HUB_ID = "TsinghuaC3I/UltraMedical"
HUB_CONFIG: str | None = None
HUB_SPLIT = "train"

#: UltraMedical's ``type`` values.
TYPES = ("Exam", "Literature", "Open-End")
OPEN_ENDED_TYPE = "Open-End"
PUBMEDQA_ID_PREFIX = "PubMedQA,"

_OPTION = re.compile(r"^([A-J])\.\s+(\S.*)$")


def pubmed_id(source_id: str) -> str | None:
    """The PubMed id of a ``PubMedQA,<pmid>`` item id (digits without leading zeros), else None."""
    if not source_id.startswith(PUBMEDQA_ID_PREFIX):
        return None
    pmid = source_id[len(PUBMEDQA_ID_PREFIX) :].strip()
    return str(int(pmid)) if pmid.isdigit() else pmid or None


def spec(path: Path | None = None, revision: str | None = None) -> SourceSpec:
    return SourceSpec(HUB_ID, HUB_CONFIG, HUB_SPLIT, path, revision)


def split_options(text: str) -> tuple[str, list[str]] | None:
    """``(stem, options)`` when ``text`` ends with a lettered option block starting at "A.", else None."""
    lines = text.strip().splitlines()
    for start, line in enumerate(lines):
        m = _OPTION.match(line.strip())
        if not m or m.group(1) != "A":
            continue
        options: list[str] = []
        for rest in lines[start:]:
            if not rest.strip():
                continue
            m = _OPTION.match(rest.strip())
            if not m or m.group(1) != LETTERS[len(options)]:
                options = []
                break
            options.append(m.group(2).strip())
        stem = "\n".join(lines[:start]).strip()
        if len(options) >= 2 and stem:
            return stem, options
    return None


def _human_turn(rec: Record) -> str:
    turns = require(rec, "conversations", list)
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise SchemaError(f"{rec.where(f'conversations[{k}]')}: expected an object with 'from' and 'value'")
        for key in ("from", "value"):
            if not isinstance(turn.get(key), str):
                raise SchemaError(f"{rec.where(f'conversations[{k}].{key}')}: missing or not a str")
        if turn["from"] == "human":
            return turn["value"]
    raise SchemaError(f"{rec.where('conversations')}: no turn with from='human'")


def load(source: SourceSpec, progress: bool = False) -> LoadedSource:
    """All multiple-choice items of the source (first occurrence of each id); skips counted by reason."""
    out = LoadedSource("ultramedical", [])
    seen: set[str] = set()
    for rec in iter_records(source, progress):
        out.rows_read += 1
        uid = require(rec, "id", str).strip()
        kind = require(rec, "type", str).strip()
        answer = require(rec, "answer", str, nullable=True)
        text = _human_turn(rec)
        if not uid:
            raise SchemaError(f"{rec.where('id')}: empty id")
        if uid in seen:
            out.skipped["duplicate_id"] += 1
            continue
        seen.add(uid)
        if kind not in TYPES:
            out.skipped["unknown_type"] += 1
            continue
        if kind == OPEN_ENDED_TYPE:
            out.skipped["open_ended"] += 1
            continue
        letter = (answer or "").strip()
        parsed = split_options(text) if len(letter) == 1 and letter in LETTERS else None
        if parsed is None:
            out.skipped["no_options"] += 1
            continue
        stem, options = parsed
        if LETTERS.index(letter) >= len(options):
            out.skipped["gold_not_in_options"] += 1
            continue
        out.items.append(
            Item(
                source=DataSource.ULTRAMEDICAL,
                source_id=uid,
                task=uid.split(",", 1)[0],
                family=TaskFamily.MULTIPLE_CHOICE,
                question=f"{stem}\n\n{format_choices(options)}",
                gold=letter,
                choices=tuple(options),
            )
        )
    return out
