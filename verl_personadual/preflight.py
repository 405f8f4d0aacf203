"""Checks the command-line tools run on their arguments before they write or start anything.

Every failure is a :class:`PreflightError` whose message is one line naming the flag, the value and what to do;
the CLIs print it as ``error: <message>`` and exit with status 2.

- :func:`check_model`: a local Hugging Face checkpoint directory (with ``config.json``), or a well-formed hub id
  that the local cache or the hub knows (with ``HF_HUB_OFFLINE`` set only the cache is asked);
- :func:`check_files`: every path is an existing file;
- :func:`check_output_dir`: the directory exists or can be created, and is writable (nothing is created);
- :func:`closest`: the "did you mean" of an unknown name.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from verl_personadual.errors import UserError

__all__ = ["PreflightError", "check_model", "check_files", "check_output_dir", "closest", "looks_local"]


class PreflightError(UserError, ValueError):
    """A command-line argument that cannot work; the message is one line naming flag and value."""


def looks_local(spec: str) -> bool:
    """A value meant as a path rather than a hub id: starts like a path, or its first component is a local dir."""
    if spec.startswith(("/", ".", "~")):
        return True
    head = Path(spec).parts[0] if Path(spec).parts else ""
    return "/" in spec and Path(head).is_dir()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def check_model(spec: str, flag: str = "--model") -> None:
    """``spec`` names a usable model: a local checkpoint directory, or a hub id the cache or the hub has.

    Raises:
        PreflightError: a missing path, a directory without ``config.json``, a malformed hub id, or a hub id that
            neither the local cache nor the hub (when it may be asked) knows.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PreflightError(f"{flag} {spec}: a file, not a checkpoint directory")
        if not (path / "config.json").is_file():
            raise PreflightError(
                f"{flag} {spec}: no config.json in this directory (expected a Hugging Face checkpoint, e.g. one "
                "written by `python -m verl_personadual.tiny_model --out DIR`)"
            )
        return
    if looks_local(spec):
        raise PreflightError(f"{flag} {spec}: no such directory")
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise PreflightError(f"{flag} {spec}: no such directory, and not a Hugging Face hub id (name or namespace/name)") from None
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise PreflightError(f"{flag} {spec}: no such directory, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)")
    try:
        HfApi().model_info(spec, timeout=10)
    except GatedRepoError:
        return  # it exists; loading it needs a token, which the loader reports
    except RepositoryNotFoundError:
        raise PreflightError(f"{flag} {spec}: no such directory, and no such model on the Hugging Face hub") from None
    except Exception as err:  # network errors of any HTTP stack
        raise PreflightError(
            f"{flag} {spec}: no such directory, and the Hugging Face hub cannot be reached to look it up ({_first_line(err)})"
        ) from None


def check_files(paths: Iterable[str | os.PathLike[str]], flag: str) -> None:
    """Every path is an existing file; else PreflightError naming the first one that is not."""
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise PreflightError(f"{flag} {p}: no such file")
        if not path.is_file():
            raise PreflightError(f"{flag} {p}: not a file")


def check_output_dir(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """``path`` is, or can be created as, a writable directory; nothing is left behind (the check creates and
    removes a temporary directory in ``path`` or its nearest existing parent)."""
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise PreflightError(f"{flag} {path}: exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PreflightError(f"{flag} {path}: {parent} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".preflight-"))
    except OSError as err:
        raise PreflightError(f"{flag} {path}: cannot write in {parent} ({err.strerror or _first_line(err)})") from None


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known name most similar to ``name`` (difflib ratio >= 0.6), or None."""
    hits = difflib.get_close_matches(name, list(known), n=1)
    return hits[0] if hits else None
