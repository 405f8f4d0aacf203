"""Atomic file writes and the append-only predictions JSONL that makes runs resumable.

``predictions.jsonl`` holds one JSON object per line, keyed by ``(row_id, decoding)`` (``row_id`` is item id +
persona setting). :class:`PredictionStore` reads the completed keys on open, so a resumed run skips them; it
appends whole lines and fsyncs after each batch. A crash can leave at most a torn last line (no trailing newline
or not valid JSON): it is cut off on open, with a warning. Any other bad line is an error naming the line.

A key that occurs twice (two processes appended to one file, as before ``eval run`` locked its ``--out``): identical
records are read once, and :class:`PredictionStore` rewrites the file without the repeats on open (atomically, with
a warning), so the folder is repaired by rerunning its command; two *different* records of one key are an error
naming both lines and the fix (delete the line that should not count, then rerun).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from verl_personadual.utils.atomic import atomic_write_text
from verl_personadual.utils.errors import UserError

__all__ = ["PredictionStore", "StoreError", "read_predictions"]

logger = logging.getLogger(__name__)


class StoreError(UserError, ValueError):
    """A predictions file is corrupt beyond a torn last line; the message names file and line."""


def _key(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record["row_id"]), str(record["decoding"])


def _scan(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Records of ``path`` with their 1-based line numbers, and the byte length of its intact part: every line but
    the last ends with a newline, and the part after the last newline (empty after a clean write) is a torn line,
    excluded."""
    with open(path, "rb") as f:
        data = f.read()
    *complete, _torn = data.split(b"\n")
    records: list[tuple[int, dict[str, Any]]] = []
    good = 0
    for lineno, raw in enumerate(complete, start=1):
        good += len(raw) + 1
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict) or "row_id" not in rec or "decoding" not in rec:
                raise ValueError("not an object with 'row_id' and 'decoding'")
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError(f"{path}, line {lineno}: {err}") from None
        records.append((lineno, rec))
    return records, good


def _unique(path: Path, records: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``records`` with each repeated identical record once (module docstring); StoreError on a key with two
    different records."""
    first: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for lineno, rec in records:
        key = _key(rec)
        if key not in first:
            first[key] = (lineno, rec)
            out.append(rec)
        elif first[key][1] != rec:
            raise StoreError(
                f"{path}, lines {first[key][0]} and {lineno}: two different records of key {key} (two processes "
                "wrote this file at once); delete the line that should not count, then rerun"
            )
    return out


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """All intact records of a predictions file (a torn last line ignored, identical repeats once); StoreError on
    a key with two different records."""
    path = Path(path)
    records, _ = _scan(path)
    return _unique(path, records)


class PredictionStore:
    """Append-only predictions file with its completed-key set (module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.completed: set[tuple[str, str]] = set()
        if self.path.exists():
            records, good = _scan(self.path)
            size = self.path.stat().st_size
            if good < size:
                logger.warning(
                    "%s: cutting a torn last line (%d bytes) left by an interrupted run", self.path, size - good
                )
                with open(self.path, "r+b") as f:
                    f.truncate(good)
            records, _ = _scan(self.path)
            unique = _unique(self.path, records)
            if len(unique) < len(records):
                logger.warning(
                    "%s: removing %d repeated identical record(s) left by two runs writing it at once",
                    self.path,
                    len(records) - len(unique),
                )
                atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in unique))
            self.completed = {_key(r) for r in unique}
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.completed

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append ``records`` (each a new key) as whole lines, then fsync."""
        batch = list(records)
        keys = [_key(r) for r in batch]
        dup = [k for k in keys if k in self.completed]
        if dup or len(set(keys)) != len(keys):
            raise StoreError(f"{self.path}: refusing to append already present key(s) {dup[:3] or keys[:3]}")
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        self.completed.update(keys)
