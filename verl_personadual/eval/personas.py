"""The eval set: each sampled item under each persona setting, with its persona, saved so runs are comparable.

Assignment (deterministic for a given input, seed and LLM cache):

- objective items get one row per requested setting: ``none`` (no persona), ``unaligned`` (PersonaHub, drawn by
  ``data_preprocess.personas.unaligned_personas`` over all objective items in benchmark then item order) and
  ``aligned`` (generated from the question by ``data_preprocess.personas.aligned_personas_llm`` through the shared
  ``LLMClient``, whose on-disk cache answers repeated requests);
- personalized items (PersonaFeedback, FSPO) get one ``aligned`` row with their own user persona.

The set is written once, atomically, as ``eval_set.jsonl`` (one :class:`EvalRow` per line); a run that finds it
loads it instead of rebuilding it (no persona request is repeated), and other models are evaluated on the same
file with ``--eval-set``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.errors import UserError
from data_preprocess.common import Item, SchemaError, iter_jsonl
from data_preprocess.personahub import Persona
from data_preprocess.personas import aligned_personas_llm, unaligned_personas
from verl_personadual.atomic import atomic_write_text
from verl_personadual.sample_replies import MISS_HINT
from verl_personadual.llm import LLMBatchError, LLMClient, LLMOfflineMissError
from verl_personadual.prompts import (
    PERSONALIZED_SOURCES,
    DataSource,
    PersonaSetting,
    TaskFamily,
    render_persona,
)

__all__ = ["EvalRow", "build_eval_set", "write_eval_set", "read_eval_set", "PersonaAssignmentError"]


class PersonaAssignmentError(UserError, RuntimeError):
    """Personas cannot be assigned as requested (the message says what to configure)."""


@dataclass(frozen=True)
class EvalRow:
    """One item under one persona setting; ``row_id`` = ``"<item_id>|<setting>"`` is its key in every output."""

    row_id: str
    item_id: str
    benchmark: str
    task: str
    family: str
    setting: str
    question: str
    gold: str
    choices: list[str]
    persona: str | None
    persona_id: str | None

    @property
    def source(self) -> DataSource:
        return DataSource(self.benchmark)


def _row(item: Item, setting: PersonaSetting, persona: Persona | None) -> EvalRow:
    return EvalRow(
        row_id=f"{item.source_id}|{setting.value}",
        item_id=item.source_id,
        benchmark=item.source.value,
        task=item.task,
        family=item.family.value,
        setting=setting.value,
        question=item.question,
        gold=item.gold,
        choices=list(item.choices),
        persona=None if persona is None else persona.text,
        persona_id=None if persona is None else persona.persona_id,
    )


def build_eval_set(
    items: Sequence[Item],
    settings: Sequence[PersonaSetting],
    pool: Sequence[Persona],
    seed: int,
    client: LLMClient | None,
) -> list[EvalRow]:
    """Rows in item order, settings in the order given (module docstring).

    Raises:
        PersonaAssignmentError: aligned personas are needed but ``client`` is None, some persona requests
            failed (the others are cached), an offline client has no recorded reply for some, or unaligned
            personas are needed and ``pool`` is empty.
    """
    objective = [it for it in items if it.source not in PERSONALIZED_SOURCES]
    personas: dict[PersonaSetting, list[Persona | None]] = {PersonaSetting.NONE: [None] * len(objective)}
    if PersonaSetting.UNALIGNED in settings and objective:
        if not pool:
            raise PersonaAssignmentError("the unaligned setting needs a non-empty PersonaHub pool (--personahub)")
        personas[PersonaSetting.UNALIGNED] = list(unaligned_personas(pool, len(objective), seed))
    if PersonaSetting.ALIGNED in settings and objective:
        if client is None:
            raise PersonaAssignmentError(
                "the aligned setting generates personas with an LLM: set PERSONADUAL_LLM_BASE_URL and "
                "PERSONADUAL_LLM_MODEL (or --llm-base-url / --llm-model), or drop 'aligned' from --settings"
            )
        try:
            personas[PersonaSetting.ALIGNED] = list(aligned_personas_llm(objective, client))
        except LLMOfflineMissError as err:
            raise PersonaAssignmentError(f"aligned personas: {err}; {MISS_HINT}") from err
        except LLMBatchError as err:
            shown = "; ".join(f"{objective[i].source_id}: {msg}" for i, msg in sorted(err.failures.items())[:5])
            raise PersonaAssignmentError(
                f"{len(err.failures)} of {len(objective)} aligned-persona requests failed ({shown}); the successful "
                "replies are cached, re-run to retry only the failed ones"
            ) from err
    index = {it.source_id: i for i, it in enumerate(objective)}
    rows: list[EvalRow] = []
    for item in items:
        if item.source in PERSONALIZED_SOURCES:
            if item.persona is None:
                raise PersonaAssignmentError(f"{item.source_id}: a personalized item without its user persona")
            rows.append(_row(item, PersonaSetting.ALIGNED, Persona(item.persona_id or "", item.persona)))
            continue
        for setting in settings:
            rows.append(_row(item, setting, personas[setting][index[item.source_id]]))
    return rows


def write_eval_set(path: Path, rows: Sequence[EvalRow]) -> None:
    """Write ``rows`` as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rows))


_FIELDS = {f.name for f in fields(EvalRow)}


def _usable_persona(persona: Any) -> bool:
    """A persona text the prompt templates can render (not empty once "I am" and the final period are cut)."""
    try:
        return isinstance(persona, str) and bool(render_persona(persona))
    except ValueError:
        return False


def _check_row(data: Mapping[str, Any], where: str) -> EvalRow:
    missing = _FIELDS - set(data)
    if missing:
        raise SchemaError(f"{where}: missing field(s) {sorted(missing)}")
    for name in ("row_id", "item_id", "benchmark", "task", "family", "setting", "question", "gold"):
        if not isinstance(data[name], str):
            raise SchemaError(f"{where}, field {name!r}: expected str")
    for name, kind in (("benchmark", DataSource), ("family", TaskFamily), ("setting", PersonaSetting)):
        try:
            kind(data[name])
        except ValueError:
            raise SchemaError(f"{where}, field {name!r}: {data[name]!r} is not a valid {kind.__name__}") from None
    if data["setting"] != PersonaSetting.NONE.value and not _usable_persona(data["persona"]):
        raise SchemaError(
            f"{where} (row_id {data['row_id']!r}), field 'persona': setting {data['setting']!r} needs a non-empty "
            "persona text"
        )
    return EvalRow(**{k: data[k] for k in _FIELDS})


def read_eval_set(path: Path) -> list[EvalRow]:
    """Rows of an ``eval_set.jsonl``; SchemaError naming the line and field on bad input or a repeated row id."""
    rows: list[EvalRow] = []
    seen: set[str] = set()
    for rec in iter_jsonl(Path(path)):
        where = f"{path}, line {rec.row}"
        row = _check_row(dict(rec.data), where)
        if row.row_id in seen:
            raise SchemaError(f"{where}: row_id {row.row_id!r} repeated")
        seen.add(row.row_id)
        rows.append(row)
    if not rows:
        raise SchemaError(f"{path}: no rows")
    return rows
