"""Atomic writes: the target is either the old or the new content, never partial; no temp file is left."""

from __future__ import annotations

import pytest

from verl_personadual.utils.atomic import atomic_write, atomic_write_text


def test_success_replaces_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two ✓")
    assert path.read_text(encoding="utf-8") == "two ✓"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_previous_content_and_cleans_up(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    """Not the owner-only 0o600 of the temp file: 0o666 minus the umask, exactly what open() gives."""
    import os

    from verl_personadual.utils import atomic

    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "out.txt"
    atomic_write_text(path, "x")
    assert path.stat().st_mode & 0o777 == atomic._FILE_MODE == 0o666 & ~mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
