"""The package keeps its layers (docs/architecture.md): imports point down only (utils < core < data < eval < apps),
no import cycle between sibling modules, the eval harness never imports its analyses (import-linter contracts in
pyproject.toml), and no module imports another module's private (``_name``) names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "verl_personadual"


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("lint-imports not installed: pip install -e '.[test]' (import-linter is a test dependency)")
    return found


def test_import_contracts_are_kept():
    proc = subprocess.run(
        [_lint_imports(), "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        # core imports an app: the layers contract
        (
            "core/names.py",
            "from verl_personadual.apps import cost",
            "verl_personadual.core.names -> verl_personadual.apps.cost",
        ),
        # the algorithm imports the CPU backend
        (
            "core/advantage.py",
            "from verl_personadual.core.cpu import platform",
            "verl_personadual.core.advantage -> verl_personadual.core.cpu.platform",
        ),
        # the CPU backend imports the algorithm
        (
            "core/cpu/platform.py",
            "from verl_personadual.core import advantage",
            "verl_personadual.core.cpu.platform -> verl_personadual.core.advantage",
        ),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path, module, planted, broken):
    """The contracts can fail: a copy of the package with one forbidden import planted is refused, naming it."""
    copy = tmp_path / "verl_personadual"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "samples", "config"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa: E402,F401\n")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    proc = subprocess.run(
        [_lint_imports(), "--config", str(tmp_path / "pyproject.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert broken in proc.stdout


def _private_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("verl_personadual"):
                found += [
                    f"{path.relative_to(root.parent)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    return found


def test_no_private_name_is_imported_across_modules():
    assert _private_imports(PACKAGE) == []
    assert _private_imports(REPO / "tests") == []
    assert _private_imports(REPO / "docs") == []
