"""What model a resumable output was made with, by content rather than by spelling.

:func:`model_identity` resolves a ``--model`` value to the keys a resumable output pins (``run_config.json`` of
``eval run``, the ``*config.json`` of ``mode-probs`` / ``multiturn``):

- ``model``: a local checkpoint's absolute, symlink-free path; a hub id as given;
- ``model_revision``: for a hub id, the commit the hub (or, with ``HF_HUB_OFFLINE``, the local cache) resolves
  ``main`` to; None for a local directory or when it cannot be resolved;
- ``model_fingerprint``: ``sha256:<hex>`` of a local checkpoint (:func:`checkpoint_fingerprint`); for a hub id
  the revision (a git commit names its content); None when neither is known.

The fingerprint is cheap for 8B checkpoints: it reads every top-level file of up to :data:`FULL_HASH_BYTES` whole
(config.json, generation config, tokenizer files, the safetensors index) and, of a larger file (the weight
shards), its name, size and the first and last :data:`EDGE_BYTES` (a safetensors header with every tensor's name,
dtype and offsets, and the tail of the last tensor). It reads about 2 MiB per shard, so it cannot tell two shards
apart that differ only in the middle; every other change (another checkpoint, step, size, tokenizer or config)
changes it. Subdirectories and hidden files are not part of a checkpoint and are ignored.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["model_identity", "checkpoint_fingerprint", "FULL_HASH_BYTES", "EDGE_BYTES"]

#: Files up to this size are hashed whole.
FULL_HASH_BYTES = 32 * 2**20
#: Of a larger file, this many bytes from the start and from the end are hashed (with its size).
EDGE_BYTES = 2**20


def checkpoint_fingerprint(directory: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over the top-level files of a checkpoint directory (module docstring)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= FULL_HASH_BYTES:
                digest.update(f.read())
            else:
                digest.update(f.read(EDGE_BYTES))
                f.seek(size - EDGE_BYTES)
                digest.update(f.read(EDGE_BYTES))
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def _hub_revision(repo_id: str) -> str | None:
    """The commit ``main`` of a hub model resolves to (the cache's when offline); None when unknown."""
    from huggingface_hub import HfApi, constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, timeout=10).sha
        except Exception:  # unreachable hub, gated or unknown model: fall back to the cache
            pass
    try:
        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not in the cache
        return None


def model_identity(spec: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``model`` / ``model_revision`` / ``model_fingerprint`` keys of ``spec`` (module docstring)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        return {"model": str(resolved), "model_revision": None, "model_fingerprint": checkpoint_fingerprint(resolved)}
    revision = _hub_revision(str(spec))
    return {"model": str(spec), "model_revision": revision, "model_fingerprint": revision}
