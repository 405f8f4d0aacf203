"""AlignX (``JinaLeejnl/AlignX``, split ``train``) -> pairwise-preference items carrying their own user.

Row schema (the AlignX README): ``prompt``, ``chosen``, ``rejected`` str; ``Demographic Information`` str (may be
empty); ``User-Generated Content`` list of {``prompt``, ``comment``, ``Preference Direction``};
``Pair-wise Comparative Feedback`` list of {``prompt``, ``chosen``, ``rejected``, ``Preference Direction``};
``Preference Direction`` list of 90 floats (unused). The three persona fields may be absent (the authors'
AlignX-format files, e.g. their P-Soups benchmark, carry only the pairwise feedback): absent = empty.

Question: ``prompts.build_preference_question(post, A, B)``; whether ``chosen`` is A or B is drawn from a
``random.Random`` seeded with ``(seed, source_id)``, so it is reproducible and independent of row order. Gold: the
letter of ``chosen``; ``choices`` = [response A, response B].

Persona rendering (:func:`render_user`), one string, fields in this order:

1. ``Demographic Information`` as written (``"a user"`` when it has no content);
2. if there is user-generated content: `` Things I wrote: on "<post>" I commented "<comment>"; ...``;
3. if there is pairwise feedback: `` Responses I preferred: to "<post>", "<chosen>" over "<rejected>"; ...``.

Each quoted snippet is whitespace-collapsed and cut to ``SNIPPET_CHARS`` characters (an ellipsis marks a cut); at
most ``MAX_HISTORY`` entries of each list are used. An item with no demographic text and no history is skipped as
``empty_persona``; one whose demographic text exceeds ``common.MAX_PERSONA_CHARS`` as ``overlong_persona``.

The user is part of the item: AlignX repeats the same (prompt, chosen, rejected) for different users, so
``source_id`` hashes (prompt, chosen, rejected, rendered persona) and only rows that are the same post, pair *and*
user (as the prompt shows it) are skipped as ``duplicate_id``. ``persona_id`` = ``alignx-user:<hash of the
rendered persona>``. There are no tasks: the stratum is ``alignx``.

A malformed row (a missing field, a field of the wrong type, a history entry with a null or missing ``prompt`` /
``comment`` / ``chosen`` / ``rejected``) is skipped, counted as ``bad_row:<field>`` and logged naming file, row
and field (``common.skip_bad_row``); with ``strict`` it raises :class:`~verl_personadual.data.common.SchemaError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_personadual.core.prompts import DataSource
from verl_personadual.data.common import (
    MAX_PERSONA_CHARS,
    LoadedSource,
    Record,
    SchemaError,
    SourceSpec,
    has_content,
    iter_records,
    preference_item,
    require,
    skip_bad_row,
    stable_id,
)

HUB_ID = "JinaLeejnl/AlignX"
HUB_CONFIG: str | None = None
HUB_SPLIT = "train"
DEMOGRAPHIC = "Demographic Information"
UGC = "User-Generated Content"
PAIRWISE = "Pair-wise Comparative Feedback"
SNIPPET_CHARS = 120
MAX_HISTORY = 4
NO_DEMOGRAPHIC = "a user"


def spec(path: Path | None = None, revision: str | None = None) -> SourceSpec:
    return SourceSpec(HUB_ID, HUB_CONFIG, HUB_SPLIT, path, revision)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def _persona_field(rec: Record, name: str, kind: type) -> Any:
    """A persona field of ``rec``: None when absent or null (the authors' AlignX-format benchmark files carry
    only some of the three), else checked against ``kind``."""
    return require(rec, name, kind, nullable=True) if name in rec.data else None


def _entries(rec: Record, name: str, keys: tuple[str, ...]) -> list[dict[str, str]]:
    value = _persona_field(rec, name, list) or []
    out = []
    for k, entry in enumerate(value[:MAX_HISTORY]):
        if not isinstance(entry, dict):
            raise SchemaError(f"{rec.where(f'{name}[{k}]')}: expected an object", name)
        for key in keys:
            if not isinstance(entry.get(key), str):
                raise SchemaError(f"{rec.where(f'{name}[{k}].{key}')}: missing or not a str", f"{name}.{key}")
        out.append(entry)
    return out


def render_user(demographic: str, ugc: list[dict[str, Any]], pairwise: list[dict[str, Any]]) -> str:
    """The persona text of one AlignX user (rendering documented in the module docstring)."""
    parts = [" ".join(demographic.split()).rstrip(" .") if has_content(demographic) else NO_DEMOGRAPHIC]
    if ugc:
        wrote = "; ".join(f'on "{_clip(e["prompt"])}" I commented "{_clip(e["comment"])}"' for e in ugc)
        parts.append(f"Things I wrote: {wrote}")
    if pairwise:
        liked = "; ".join(
            f'to "{_clip(e["prompt"])}", "{_clip(e["chosen"])}" over "{_clip(e["rejected"])}"' for e in pairwise
        )
        parts.append(f"Responses I preferred: {liked}")
    return ". ".join(parts)


@dataclass(frozen=True)
class _Row:
    post: str
    chosen: str
    rejected: str
    demographic: str
    ugc: list[dict[str, Any]]
    pairwise: list[dict[str, Any]]


def _parse(rec: Record) -> _Row:
    """The fields of one row; SchemaError (with its field) when the row is malformed."""
    return _Row(
        post=require(rec, "prompt", str).strip(),
        chosen=require(rec, "chosen", str).strip(),
        rejected=require(rec, "rejected", str).strip(),
        demographic=_persona_field(rec, DEMOGRAPHIC, str) or "",
        ugc=_entries(rec, UGC, ("prompt", "comment")),
        pairwise=_entries(rec, PAIRWISE, ("prompt", "chosen", "rejected")),
    )


def load(source: SourceSpec, seed: int, progress: bool = False, strict: bool = False) -> LoadedSource:
    """The preference items of the source (first occurrence of each post + pair + user); skips counted by
    reason, malformed rows skipped unless ``strict`` (module docstring)."""
    out = LoadedSource("alignx", [])
    seen: set[str] = set()
    for rec in iter_records(source, progress):
        out.rows_read += 1
        try:
            row = _parse(rec)
        except SchemaError as err:
            skip_bad_row(err, out.skipped, strict)
            continue
        if not (row.post and row.chosen and row.rejected):
            out.skipped["empty_question"] += 1
            continue
        if not has_content(row.demographic) and not row.ugc and not row.pairwise:
            out.skipped["empty_persona"] += 1
            continue
        if len(" ".join(row.demographic.split())) > MAX_PERSONA_CHARS:
            out.skipped["overlong_persona"] += 1
            continue
        persona = render_user(row.demographic, row.ugc, row.pairwise)
        uid = stable_id("alignx", row.post, row.chosen, row.rejected, persona)
        if uid in seen:
            out.skipped["duplicate_id"] += 1
            continue
        seen.add(uid)
        out.items.append(
            preference_item(DataSource.ALIGNX, uid, "alignx", row.post, row.chosen, row.rejected, persona, seed)
        )
    return out
