"""PersonaHub (``proj-persona/PersonaHub``, config ``persona``, split ``train``) -> the unaligned persona pool.

Row schema: ``persona`` str. Empty personas (nothing left after ``prompts.render_persona``, e.g. "..." ) are skipped as
``empty_persona``, personas longer than
``common.MAX_PERSONA_CHARS`` as ``overlong_persona``, repeated texts as ``duplicate_persona``.
``persona_id`` = ``personahub:<hash of the whitespace-normalised text>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from verl_personadual.data.common import (
    MAX_PERSONA_CHARS,
    LoadedSource,
    SourceSpec,
    has_content,
    iter_records,
    require,
    stable_id,
)

HUB_ID = "proj-persona/PersonaHub"
HUB_CONFIG = "persona"
HUB_SPLIT = "train"


@dataclass(frozen=True)
class Persona:
    persona_id: str
    text: str


def spec(path: Path | None = None, revision: str | None = None) -> SourceSpec:
    return SourceSpec(HUB_ID, HUB_CONFIG, HUB_SPLIT, path, revision)


def load(source: SourceSpec, progress: bool = False) -> tuple[list[Persona], LoadedSource]:
    """The persona pool in file order, and the load report (its ``items`` list stays empty)."""
    report = LoadedSource("personahub", [])
    pool: list[Persona] = []
    seen: set[str] = set()
    for rec in iter_records(source, progress):
        report.rows_read += 1
        text = " ".join(require(rec, "persona", str).split())
        if not has_content(text):
            report.skipped["empty_persona"] += 1
            continue
        if len(text) > MAX_PERSONA_CHARS:
            report.skipped["overlong_persona"] += 1
            continue
        pid = stable_id("personahub", text)
        if pid in seen:
            report.skipped["duplicate_persona"] += 1
            continue
        seen.add(pid)
        pool.append(Persona(pid, text))
    return pool, report
