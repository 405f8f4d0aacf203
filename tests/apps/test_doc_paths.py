"""Every repository path the docs name exists: README.md, recipes/README.md, docs/ (prose, code spans, code blocks
and link targets) and the comments and docstrings of the project's Python and recipe YAML files.

A path is a token that starts at one of the repository's top-level folders (``tests/``, ``verl_personadual/``, ...)
and is not the tail of a longer path (``apps/recipes/launch.py`` is a package-relative name, not ``recipes/...``).
A glob (``*``) must match a file, ``{a,b}`` names both; a ``<placeholder>`` part stands for a user's value, so a
path holding one is only checked up to it. A link target is relative to its Markdown file, as GitHub reads it. No
exceptions: a path that names no file of this repository is a stale one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("tests", "verl_personadual", "recipes", "benchmarks", "scripts", "docs", "data_preprocess", "packaging")
_PATH = re.compile(r"(?<![\w./-])(?:\./)?((?:" + "|".join(ROOTS) + r")/[\w./*<>{},-]*)")
_LINK = re.compile(r"\]\(([^)\s#]+)")


def _docs() -> list[Path]:
    return [REPO / "README.md", REPO / "recipes" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _sources() -> list[Path]:
    roots = ("verl_personadual", "benchmarks", "scripts", "data_preprocess", "tests")
    py = [p for root in roots for p in sorted((REPO / root).rglob("*.py")) if p != Path(__file__).resolve()]
    return py + sorted((REPO / "recipes" / "config").rglob("*.yaml"))


def _expand(path: str) -> list[str]:
    """``a/{b,c}/d`` -> ``a/b/d``, ``a/c/d``."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [x for alt in m.group(1).split(",") for x in _expand(path[: m.start()] + alt + path[m.end() :])]


def _tokens(text: str) -> list[str]:
    return [m.group(1).rstrip(".,:;") for m in _PATH.finditer(text)]


def named_paths() -> list[tuple[str, str]]:
    """(where, path relative to the repository) for every path named, in file order."""
    found = []
    for doc in _docs():
        rel = doc.relative_to(REPO)
        for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            found += [(f"{rel}:{no}", p) for p in _tokens(line)]
            for target in _LINK.findall(line):
                if "://" not in target:
                    p = (doc.parent / target).resolve().relative_to(REPO).as_posix()
                    found.append((f"{rel}:{no}", p))
    for src in _sources():
        rel = src.relative_to(REPO)
        for no, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
            found += [(f"{rel}:{no}", p) for p in _tokens(line)]
    return found


def _exists(path: str) -> bool:
    if "<" in path:  # checked up to the placeholder
        path = path[: path.index("<")].rpartition("/")[0]
    return all(any(REPO.glob(p)) if "*" in p else (REPO / p).exists() for p in _expand(path.rstrip("/")))


def test_the_scan_finds_the_paths_it_is_meant_to_find():
    text = "see `verl_personadual/core/x.py`, apps/recipes/launch.py and [a](docs/b.md) `recipes/config/{a,b}.yaml`."
    assert _tokens(text) == ["verl_personadual/core/x.py", "docs/b.md", "recipes/config/{a,b}.yaml"]
    assert _expand("recipes/config/{a,b}_backbone/x.yaml") == [
        "recipes/config/a_backbone/x.yaml",
        "recipes/config/b_backbone/x.yaml",
    ]
    assert _exists("recipes/config/{rl,sft}_backbone/cpu_tiny.yaml")
    assert not _exists("recipes/config/{rl,gpu}_backbone/cpu_tiny.yaml")
    assert _exists("tests/apps/test_*.py") and not _exists("tests/test_*.py")
    assert _exists("tests/<your test>.py") and not _exists("nowhere/<x>.py")


@pytest.mark.parametrize("where,path", [pytest.param(w, p, id=f"{w}:{p}") for w, p in named_paths()])
def test_named_path_exists(where: str, path: str):
    assert _exists(path), f"{where} names {path}, which is not in the repository"
