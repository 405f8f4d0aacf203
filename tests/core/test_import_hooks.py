"""Post-import hooks (verl_personadual.core.import_hooks) on throw-away modules written to a temporary directory."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType

import pytest

from verl_personadual.core.import_hooks import when_imported


@pytest.fixture
def tmp_modules(tmp_path, monkeypatch):
    """Write modules under tmp_path (importable); the ones imported are dropped from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        written.append(name)
        importlib.invalidate_caches()

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_hook_runs_after_the_module_body_with_the_real_loader(tmp_modules):
    tmp_modules("ph_registry", "REGISTRY = {'theirs': 1}\n")
    seen: list[tuple] = []

    def register(module: ModuleType) -> None:
        seen.append((dict(module.REGISTRY), type(module.__loader__), type(module.__spec__.loader)))
        module.REGISTRY["ours"] = 2

    when_imported("ph_registry", register)
    when_imported("ph_registry", lambda m: seen.append("second"))
    assert seen == []
    import ph_registry

    loader = importlib.machinery.SourceFileLoader
    assert seen == [({"theirs": 1}, loader, loader), "second"]
    assert ph_registry.REGISTRY == {"theirs": 1, "ours": 2}


def test_hook_on_an_imported_module_runs_at_once(tmp_modules):
    tmp_modules("ph_loaded", "X = 1\n")
    import ph_loaded  # noqa: F401 (imported before the hook is registered)

    seen: list[int] = []
    when_imported("ph_loaded", lambda m: seen.append(m.X))
    assert seen == [1]


def test_hook_waits_for_an_import_that_succeeds(tmp_modules):
    tmp_modules("ph_flaky", "raise RuntimeError('first try')\n")
    seen: list[int] = []
    when_imported("ph_flaky", lambda m: seen.append(m.X))
    with pytest.raises(RuntimeError, match="first try"):
        importlib.import_module("ph_flaky")
    assert seen == []
    tmp_modules("ph_flaky", "X = 7\n")
    importlib.import_module("ph_flaky")
    assert seen == [7]
    importlib.reload(sys.modules["ph_flaky"])  # a hook runs once
    assert seen == [7]


def test_a_failing_hook_fails_the_import(tmp_modules):
    tmp_modules("ph_broken_hook", "X = 1\n")

    def broken(module: ModuleType) -> None:
        raise ImportError("registration failed")

    when_imported("ph_broken_hook", broken)
    with pytest.raises(ImportError, match="registration failed"):
        importlib.import_module("ph_broken_hook")
    assert "ph_broken_hook" not in sys.modules
