"""One owner per output folder: which build a command's ``--out`` holds, who writes it now, and how it is replaced.

Every command that writes an output folder opens it with :func:`claim_output` for the whole time it writes:

1. **Lock.** An exclusive ``flock`` on ``<parent>/.<name>.lock`` (the holder writes its pid and host in it), held
   until the block ends; the kernel drops it when the process dies, even by SIGKILL. A second process refuses at
   once: :class:`OutputInUse` (a user error) naming the holder's pid and host. The lock file is removed on release
   (a killed holder's is reused by the next run).
2. **Stale temporaries.** With the lock held no other command writes the folder, so what a killed run left is
   removed: atomic-write temporaries (``.<file>.<8 characters>.tmp``, ``utils.atomic``) and staged folders
   (``.<name>.staging-*`` / ``.tmp-*`` / ``.old-*``) anywhere in the folder except inside a sub-folder that is
   another command's output (it has its own marker), and the staging / old siblings ``.<name>.staging-*`` /
   ``.<name>.old-*`` of the folder itself.
3. **Ownership.** ``<out>/`` :data:`MARKER` records the command, the kind of build and its inputs (a JSON object of
   the settings that define the build) with their SHA-256 fingerprint. A non-empty folder is resumed (written
   again in place) when its marker names the same command, kind and fingerprint; any other non-empty folder
   (another command's, another kind, other inputs, or no marker) is refused with :class:`OutputMismatch`, one line
   naming what differs, unless ``overwrite``.
4. **Replacing** (``overwrite`` on a non-empty folder) is never in place: the command writes into
   ``.<name>.staging-<random>/<name>`` next to the folder; when the block ends without error the old folder is
   renamed to ``.<name>.old-<random>``, the new one renamed to ``<name>`` and the old one deleted. A failure or a
   kill before that leaves the old folder whole (and the next run removes the staging folder).
5. **Written whole** (``staged=True``: a checkpoint): always written into ``.<name>.staging-<random>/<name>``
   (yielded *not* yet created: the command makes it, and may put its own temporaries next to it) and renamed into
   place at the end; a folder whose marker matches is up to date (``Claim.done``) and is not rebuilt.

A claim that fails before its command wrote anything removes the folder (and parents) it created, so bad input
leaves no empty output folder behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from verl_personadual.utils.errors import UserError

__all__ = [
    "MARKER",
    "OVERWRITE_HELP",
    "Build",
    "Claim",
    "OutputInUse",
    "OutputMismatch",
    "claim_output",
    "inputs_from",
    "lock_path",
    "read_marker",
]

logger = logging.getLogger(__name__)

#: The ownership marker inside every claimed output folder.
MARKER = ".personadual-output.json"

#: ``--help`` of every command's ``--overwrite``.
OVERWRITE_HELP = (
    "replace an --out that holds another build (another command, kind or inputs); the old folder stays whole "
    "until the new one is complete (built next to it, then swapped in)"
)

#: Temporary files of ``utils.atomic.atomic_write`` (``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``).
_TMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: Temporary folders of a staged write (``.<name>.staging-*``, ``.<name>.tmp-*``) or of a replaced one (``.old-*``).
_TMP_DIR = re.compile(r"^\..+\.(staging|tmp|old)-[A-Za-z0-9_]+$")


class OutputInUse(UserError):
    """Another live process holds the output folder's lock."""


class OutputMismatch(UserError):
    """The output folder holds another build (another command, kind or inputs, or no marker)."""


@dataclass(frozen=True)
class Build:
    """What a command writes: ``command`` (its module name, e.g. ``build_rl``), ``kind`` (the kind of build, e.g.
    ``rl-data``) and ``inputs`` (JSON-able settings that define the output; never secrets)."""

    command: str
    kind: str
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.inputs, sort_keys=True, default=str, ensure_ascii=False)
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        return {"command": self.command, "kind": self.kind, "inputs": self.inputs, "fingerprint": self.fingerprint}


@dataclass
class Claim:
    """A held output folder: ``dir`` is where to write (the folder itself, or its staging sibling when replacing
    or ``staged``); ``out`` the folder; ``done``: ``staged`` and already built with the same inputs."""

    out: Path
    dir: Path
    done: bool = False


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of the output folder ``out``: ``<parent>/.<name>.lock``."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def read_marker(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of ``out`` (None when there is none or it is not a JSON object)."""
    try:
        data = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(folder: Path, build: Build) -> None:
    from verl_personadual.utils.atomic import write_json

    write_json(folder / MARKER, build.record(), sort_keys=True)


@contextlib.contextmanager
def _locked(out: Path, flag: str) -> Iterator[None]:
    """Hold the exclusive lock of ``out`` for the block (module docstring, 1)."""
    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process (pid not yet written)"
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise OutputInUse(
                f"{flag} {out}: in use by {holder} (lock {path}); wait for it to finish or use another {flag}"
            ) from None
        try:  # the file may have been removed by the holder that just released it: lock the one at the path
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _remove_stale(out: Path) -> list[Path]:
    """Remove what a killed run of the lock holder's command left (module docstring, 2); returns the paths."""
    removed: list[Path] = []
    for sibling in out.parent.glob(f".{glob.escape(out.name)}.*"):
        tail = sibling.name[len(out.name) + 2 :]
        if not tail.startswith(("staging-", "old-")):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    if out.is_dir():
        stack = [out]
        while stack:
            folder = stack.pop()
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    if _TMP_DIR.match(entry.name):
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
                    elif not (entry / MARKER).exists():
                        stack.append(entry)
                elif _TMP_FILE.match(entry.name):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
    return removed


def _describe(marker: Mapping[str, Any]) -> str:
    return f"`{marker.get('command')}` ({marker.get('kind')})"


def _mismatch(out: Path, flag: str, marker: Mapping[str, Any] | None, build: Build, fix: str) -> str | None:
    """Why ``out`` (non-empty) is not ``build``'s own folder, or None when it is; ``fix`` ends the message."""
    if marker is None:
        return f"{flag} {out}: holds files that are not an output of this project's commands (no {MARKER}); {fix}"
    if (marker.get("command"), marker.get("kind")) != (build.command, build.kind):
        return f"{flag} {out}: holds the output of {_describe(marker)}, not of `{build.command}` ({build.kind}); {fix}"
    if marker.get("fingerprint") == build.fingerprint:
        return None
    saved = marker.get("inputs") if isinstance(marker.get("inputs"), dict) else {}
    diff = sorted(k for k in set(saved) | set(build.inputs) if saved.get(k) != build.inputs.get(k))
    shown = "; ".join(f"{k}: {_short(saved.get(k))} -> {_short(build.inputs.get(k))}" for k in diff[:4])
    return (
        f"{flag} {out}: holds the output of `{build.command}` ({build.kind}) made with other inputs ({shown}); "
        f"rerun with the same inputs to resume, or {fix}"
    )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _created_dirs(path: Path) -> list[Path]:
    """The directories (deepest first) that ``path.mkdir(parents=True)`` would create."""
    created, missing = [], path
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    return created


@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike[str],
    build: Build,
    *,
    overwrite: bool | None = False,
    staged: bool = False,
    flag: str = "--out",
) -> Iterator[Claim]:
    """Hold the output folder ``out`` for ``build`` during the block (module docstring); ``flag`` names the
    option in error messages; ``overwrite=None``: the command has no ``--overwrite`` (its outputs record their own
    paths, so they cannot be built elsewhere and moved), another build is refused with "remove it" as the fix."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputMismatch(f"{flag} {out}: exists and is not a directory")
    created = _created_dirs(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out, flag):
            for path in _remove_stale(out):
                logger.info("removed %s, left by a killed run", path)
            occupied = out.is_dir() and any(out.iterdir())
            marker = read_marker(out) if occupied else None
            fix = f"use another {flag}, or " + ("remove it" if overwrite is None else "--overwrite to replace it")
            why = _mismatch(out, flag, marker, build, fix) if occupied else None
            if why is not None and not overwrite:
                raise OutputMismatch(why)
            if staged and occupied and why is None and not overwrite:
                yield Claim(out=out, dir=out, done=True)
                return
            if staged or (occupied and overwrite):
                yield from _replace(out, build, staged)
                return
            out.mkdir(parents=True, exist_ok=True)
            fresh = not occupied
            if marker is None:
                _write_marker(out, build)
            try:
                yield Claim(out=out, dir=out)
            except BaseException:
                if fresh and [p.name for p in out.iterdir()] == [MARKER]:
                    (out / MARKER).unlink()
                    out.rmdir()
                raise
    except BaseException:
        for d in created:
            try:
                d.rmdir()
            except OSError:  # not empty (or gone): keep it and its parents
                break
        raise


def _replace(out: Path, build: Build, staged: bool) -> Iterator[Claim]:
    """Write into ``<staging sibling>/<name>``, then swap it in (module docstring, 4 and 5)."""
    root = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    stage = root / out.name
    if not staged:
        stage.mkdir()
        _write_marker(stage, build)
    try:
        yield Claim(out=out, dir=stage)
        if not stage.is_dir():
            raise RuntimeError(f"{stage}: the command wrote no output folder")
        _write_marker(stage, build)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old)
        else:
            os.replace(stage, out)
        logger.info("moved the new output from %s to %s", stage, out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def inputs_from(values: Mapping[str, Any], exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """A command's parsed options as :class:`Build` inputs: every key but ``exclude`` (output, progress, secrets
    and endpoint settings that do not change the output), paths made absolute, other values JSON-able."""
    return {k: _jsonable(v) for k, v in sorted(values.items()) if k not in exclude}


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(Path(value).expanduser().absolute())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))
