"""Atomic file writes: write to a temporary file in the target's directory, then ``os.replace`` it.

A reader never sees a half-written file, and an interrupted write leaves the previous file (or none) in place.
The file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus the process umask, read
once at import), not the owner-only ``0o600`` of the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "output_dir", "write_json"]


def _read_umask() -> int:
    """The process umask (reading it means setting it; it is set straight back, at import, before any thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the content, then move it onto ``path`` (parents are created) with
    the umask's permissions (module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, fsync'ed before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` atomically as UTF-8 JSON (indent 2, non-ASCII kept, trailing newline); returns the path."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")
    return Path(path)


@contextlib.contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """Create the directory ``path`` (and missing parents) for the block; when the block raises, the directories
    this call created are removed again if they are still empty, so a run that failed before writing anything
    leaves no empty output directory behind (one that wrote something keeps it, for a resume)."""
    path = Path(path)
    created: list[Path] = []  # deepest first
    missing = path.absolute()
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for d in created:
            try:
                d.rmdir()
            except OSError:  # not empty (or gone): keep it and its parents
                break
        raise
