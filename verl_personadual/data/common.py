"""What every source module shares: the normalised item, source loading (hub id or local file), schema errors,
skip counters, stable ids, and the question normalisation used by overlap filters.

Loading contract: a source is read either from the Hugging Face hub (``datasets.load_dataset(hub_id, config,
split=..., revision=...)``) or from a local ``.jsonl`` / ``.json`` (JSON lines) or ``.parquet`` file in the hub's
schema. Local JSONL is read line by line so that errors name the file and the 1-based line; parquet errors name
the file and the 0-based row.

Bad input policy (documented once, here):

- a hub source that cannot be loaded -> :class:`SourceUnavailableError` (use a local file), also when the pinned
  revision is one that ``datasets`` can no longer load (a dataset *script* revision);
- a missing field or a field of the wrong type -> :class:`SchemaError` naming file, row and field (its
  ``field`` attribute names the field); a loader may instead skip such a row, count it under
  ``bad_row:<field>`` and log it (AlignX does unless ``strict``: :func:`skip_bad_row`);
- bytes that are not UTF-8 -> :class:`SchemaError` naming file and row;
- a source that yields no usable item when items are requested -> :class:`SchemaError`;
- an item-level problem that the data legitimately contains (duplicate id, empty or over-long persona, an
  open-ended item with no rule-checkable gold, a gold not among the options) -> the item is skipped and counted
  in :class:`SkipCounts` under a fixed reason name; the counts go to the manifest.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from tqdm.auto import tqdm

from verl_personadual.core.prompts import (
    DataSource,
    TaskFamily,
    build_preference_question,
    render_persona,
)
from verl_personadual.utils.errors import UserError

__all__ = [
    "MAX_PERSONA_CHARS",
    "Item",
    "Record",
    "BuildError",
    "SchemaError",
    "SourceUnavailableError",
    "SkipCounts",
    "SourceSpec",
    "LoadedSource",
    "iter_records",
    "require",
    "skip_bad_row",
    "stable_id",
    "has_content",
    "normalize_question",
    "question_segments",
]

#: Personas longer than this (characters, after whitespace normalisation) are skipped as over-long.
MAX_PERSONA_CHARS = 2000
#: Skipped bad rows logged one by one per source; the rest are only counted.
MAX_LOGGED_BAD_ROWS = 20
#: The message of the RuntimeError ``datasets`` (>= 4) raises for a revision that is a loading script.
_SCRIPT_REVISION_ERROR = "Dataset scripts are no longer supported"

logger = logging.getLogger(__name__)


class SchemaError(UserError, ValueError):
    """Input that does not match the documented schema; the message names file, row and field, and ``field``
    names the field (list indices dropped: ``User-Generated Content.comment``) when one is at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BuildError(UserError, ValueError):
    """The inputs cannot produce the requested data (the message says what to change)."""


class SourceUnavailableError(UserError, ValueError):
    """A source cannot be loaded from the hub (offline, unknown id / config / split / revision, or a revision
    that is a loading script)."""


@dataclass(frozen=True)
class Item:
    """One normalised question, whatever its source.

    ``gold`` is in the reward encoding of ``family`` (``verl_personadual.core.rewards.scorers``); ``choices`` are the
    options in display order ([] when none); ``task`` is the stratum used for stratified sampling; ``persona`` /
    ``persona_id`` are set only for sources that carry their own user (AlignX).
    """

    source: str  # a ``DataSource`` or a registered benchmark's name
    source_id: str
    task: str
    family: str  # a registered reward family (``TaskFamily`` for the built-in ones)
    question: str
    gold: str
    choices: tuple[str, ...] = ()
    persona: str | None = None
    persona_id: str | None = None


@dataclass(frozen=True)
class Record:
    """One raw row and where it came from (for error messages)."""

    origin: str  # file path or hub id
    row: int  # 1-based line for JSONL, 0-based row index otherwise
    data: Mapping[str, Any]

    def where(self, fieldname: str | None = None) -> str:
        unit = "line" if self.origin.endswith((".jsonl", ".json")) else "row"
        suffix = f", field {fieldname!r}" if fieldname else ""
        return f"{self.origin}, {unit} {self.row}{suffix}"


class SkipCounts(collections.Counter):
    """Skipped items per reason (a Counter with a plain-dict view for the manifest)."""

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.items()))


@dataclass(frozen=True)
class SourceSpec:
    """Where a source is read from: a local file, or the hub id/config/split at an optional revision."""

    hub_id: str
    config: str | None
    split: str
    path: Path | None = None
    revision: str | None = None

    def describe(self) -> dict[str, str]:
        """Provenance for the manifest: local file + SHA-256, or hub id + config + split + revision."""
        if self.path is not None:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            return {"file": str(self.path), "sha256": digest}
        return {
            "hub_id": self.hub_id,
            "config": self.config or "default",
            "split": self.split,
            "revision": self.revision or "main (unpinned)",
        }


@dataclass
class LoadedSource:
    """The items of one source plus what was skipped and why."""

    name: str
    items: list[Item]
    skipped: SkipCounts = field(default_factory=SkipCounts)
    rows_read: int = 0


def iter_jsonl(path: Path) -> Iterator[Record]:
    """The JSON objects of a JSONL file with their 1-based line numbers (blank lines skipped); SchemaError naming
    file and line for non-UTF-8 bytes, invalid JSON or a non-object line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SchemaError(
                    f"{path}, line {lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise SchemaError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(data, dict):
                raise SchemaError(f"{path}, line {lineno}: expected a JSON object, got {type(data).__name__}")
            yield Record(str(path), lineno, data)


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:
        raise SchemaError(f"{path}: not a readable parquet file ({err})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        try:
            rows = batch.to_pylist()
        except Exception as err:  # invalid UTF-8 in a string column surfaces here
            raise SchemaError(f"{path}, rows {row}-{row + batch.num_rows - 1}: cannot decode ({err})") from None
        for data in rows:
            yield Record(str(path), row, data)
            row += 1


def _iter_hub(spec: SourceSpec) -> Iterator[Record]:
    import datasets

    origin = f"{spec.hub_id}[{spec.config or 'default'}/{spec.split}]"
    at = f" at revision {spec.revision}" if spec.revision else ""
    try:
        ds = datasets.load_dataset(spec.hub_id, spec.config, split=spec.split, revision=spec.revision)
    except (OSError, ValueError) as err:  # ConnectionError (offline / unreachable), missing repo, config or split
        raise SourceUnavailableError(
            f"cannot load {origin}{at} from the Hugging Face hub ({type(err).__name__}: {str(err)[:300]}); "
            "pass a local file in the same schema instead"
        ) from err
    except RuntimeError as err:
        if _SCRIPT_REVISION_ERROR not in str(err):
            raise
        raise SourceUnavailableError(
            f"cannot load {origin}{at}: that revision is a dataset loading script, which datasets "
            f"{datasets.__version__} no longer runs ({str(err)[:200]}); pin a revision that holds data files "
            "(parquet / JSON), or pass a local file in the same schema instead"
        ) from err
    for i, data in enumerate(ds):
        yield Record(origin, i, data)


def _records(spec: SourceSpec) -> Iterator[Record]:
    if spec.path is None:
        yield from _iter_hub(spec)
        return
    path = Path(spec.path)
    if not path.is_file():
        raise SchemaError(f"{path}: no such file")
    if path.suffix in (".jsonl", ".json"):
        yield from iter_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path)
    else:
        raise SchemaError(f"{path}: unsupported file type {path.suffix!r} (expected .jsonl, .json or .parquet)")


def iter_records(spec: SourceSpec, progress: bool = False) -> Iterator[Record]:
    """Raw rows of a source, from its local file when ``spec.path`` is set, else from the hub; ``progress``
    shows a tqdm bar (rows read)."""
    name = spec.path.name if spec.path is not None else spec.hub_id
    with tqdm(desc=f"reading {name}", unit=" rows", disable=not progress, mininterval=0.5) as bar:
        for rec in _records(spec):
            bar.update(1)
            yield rec


def require(rec: Record, name: str, kind: type | tuple[type, ...], nullable: bool = False) -> Any:
    """Field ``name`` of ``rec``, checked against ``kind``; raises :class:`SchemaError` naming file/row/field."""
    if name not in rec.data:
        raise SchemaError(f"{rec.where(name)}: missing field", name)
    value = rec.data[name]
    if value is None and nullable:
        return None
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SchemaError(f"{rec.where(name)}: expected {expected}, got {type(value).__name__}", name)
    return value


def skip_bad_row(err: SchemaError, skipped: SkipCounts, strict: bool) -> None:
    """Count a row that ``err`` rejected under ``bad_row:<field>`` and log it (the first
    :data:`MAX_LOGGED_BAD_ROWS` of a source one by one, naming file, row and field); re-raises ``err`` when
    ``strict`` or when no field is at fault (a file-level error such as invalid JSON)."""
    if strict or err.field is None:
        raise err
    logged = sum(n for reason, n in skipped.items() if reason.startswith("bad_row:"))
    skipped[f"bad_row:{err.field}"] += 1
    if logged < MAX_LOGGED_BAD_ROWS:
        logger.warning("skipped bad row: %s", err)
    elif logged == MAX_LOGGED_BAD_ROWS:
        logger.warning("more than %d bad rows: the rest are only counted (manifest 'skipped')", MAX_LOGGED_BAD_ROWS)


def has_content(persona: str) -> bool:
    """True when ``prompts.render_persona`` leaves some text (so the persona can go into a prompt)."""
    try:
        render_persona(persona)
    except ValueError:
        return False
    return True


def stable_id(prefix: str, *parts: str) -> str:
    """``prefix:<12 hex>`` from the SHA-1 of ``parts``: an id that depends only on content."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]
    return f"{prefix}:{digest}"


_NON_WORD = re.compile(r"[^\w]+")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def normalize_question(text: str) -> str:
    """Overlap-filter normal form: NFKC, lower case, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


_LABEL = re.compile(r"^\s*[A-Za-z][\w ]{0,20}:\s+")


def question_segments(text: str) -> set[str]:
    """Normal forms of the whole text, of each line, of each sentence, and of each line or sentence without a
    leading ``Label:`` ("Question: ..."): an item overlaps an evaluation question when any of these equals the
    evaluation question's normal form (templates wrap questions in extra lines, sentences and labels;
    UltraMedical appends the options)."""
    pieces = {text}
    for line in text.splitlines():
        for piece in {line, *_SENTENCE_END.split(line)}:
            pieces.add(piece)
            pieces.add(_LABEL.sub("", piece, count=1))
    return {n for n in map(normalize_question, pieces) if n}


def preference_item(
    source: DataSource, source_id: str, task: str, post: str, preferred: str, other: str, persona: str, seed: int
) -> Item:
    """A pairwise-preference item (AlignX, PersonaFeedback, FSPO): responses A/B in an order drawn from
    ``random.Random(f"{seed}:{source_id}")`` (< 0.5 -> preferred is A), reproducible and independent of row
    order; gold = the letter of the preferred response; persona id = ``stable_id("<source>-user", persona)``."""
    preferred_is_a = random.Random(f"{seed}:{source_id}").random() < 0.5
    a, b = (preferred, other) if preferred_is_a else (other, preferred)
    return Item(
        source=source,
        source_id=source_id,
        task=task,
        family=TaskFamily.PREFERENCE,
        question=build_preference_question(post, a, b),
        gold="A" if preferred_is_a else "B",
        choices=(a, b),
        persona=persona,
        persona_id=stable_id(f"{source.value}-user", persona),
    )
