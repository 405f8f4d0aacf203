"""Atomic writes: the target is either the old or the new content, never partial; no temp file is left."""

from __future__ import annotations

import pytest

from verl_personadual.atomic import atomic_write, atomic_write_text


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
