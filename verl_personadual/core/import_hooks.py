"""Post-import hooks: run a callback right after a module has finished importing, or at once if it already has.

:func:`when_imported` is how the plugin defers a registration until verl imports the module that holds the
registry (see ``verl_personadual.core.plugin``). A module with pending hooks is found through the other finders on
``sys.meta_path`` as usual; only its loader is wrapped, and only until ``exec_module`` starts: the module's
``__loader__`` and ``__spec__.loader`` are the real loader again before its code runs. The callbacks run, in
the order they were added, after that code has run and while the module is already in ``sys.modules`` (like
code at the very end of the module). If the module's own code raises, its hooks stay pending. A callback's
exception propagates out of the import of the module.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Sequence

__all__ = ["when_imported"]

Callback = Callable[[ModuleType], None]

_lock = threading.RLock()
_pending: dict[str, list[Callback]] = {}


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported: now if it is in ``sys.modules``, else right
    after its import finishes (in the importing thread)."""
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            _install_finder()
            _pending.setdefault(name, []).append(callback)
            return
    callback(module)


def _run_hooks(module: ModuleType) -> None:
    with _lock:
        callbacks = _pending.pop(module.__name__, [])
    for callback in callbacks:
        callback(module)


class _HookedLoader:
    """Delegates to ``loader``; after ``exec_module`` runs the pending hooks of the module."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _run_hooks(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of a module with pending hooks, found by the finders after it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        with _lock:
            if fullname not in _pending:
                return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader)
                return spec
        return None


_FINDER = _Finder()


def _install_finder() -> None:
    if not any(finder is _FINDER for finder in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)
