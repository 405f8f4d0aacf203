"""verl entry-point target (group ``verl.plugins``): registers the plugin's names with verl, lazily.

verl imports this module inside ``import verl``. It imports nothing heavy and resolves no platform: it registers
the CPU platform (verl's ``PlatformRegistry`` needs the class, and lives in a module ``import verl`` has
already loaded) and, for every other registry, defers the registration until verl itself imports the module
that holds that registry (:data:`DEFERRED`). Those registry modules cost 40 to 130 verl modules each and some
fix verl's platform as they import, so even the registries that accept a lazy value (a dotted path, a
factory) are not touched before then. Nobody can look a name up in a registry that is not imported yet, so
every name is in place before its first use.

verl loads entry points inside a bare ``except Exception`` that logs at DEBUG. Here any failure of a
registration is logged at ERROR, naming the module; a deferred one then leaves verl's import alone (like verl's
own policy for a broken plugin) and the name is missing, e.g. "Unknown trainer 'persona_dual_sync'". To make it
raise instead, set ``VERL_USE_EXTERNAL_MODULES=verl_personadual.core.plugin`` (verl imports those modules without
catching; the plugin then re-raises every failure, deferred ones out of the import of verl's registry module).
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Callable

from verl_personadual.core.import_hooks import when_imported

logger = logging.getLogger("verl_personadual")

#: Imported by the entry point itself: the CPU platform (``verl.plugin.platform``, already loaded by
#: ``import verl``; verl resolves its platform once, at the first ``get_platform()``, so it must be in first).
EAGER: tuple[str, ...] = ("verl_personadual.core.cpu.platform",)

#: verl module holding a registry -> the plugin module whose import registers there, imported right after verl
#: imports the registry module.
DEFERRED: dict[str, str] = {
    "verl.trainer.ppo.core_algos": "verl_personadual.core.advantage",  # ADV_ESTIMATOR_REGISTRY: dual_grpo
    "verl.trainer.ppo.v1": "verl_personadual.core.trainer",  # TRAINER_REGISTRY: persona_dual_sync, cpu_sync
    "verl.experimental.agent_loop": "verl_personadual.core.rollout",  # agent loops: the forced / free mode loops
    "verl.workers.engine": "verl_personadual.core.cpu.engine",  # EngineRegistry: FSDP engine on device cpu
    "verl.workers.rollout": "verl_personadual.core.cpu.backend",  # hf_cpu: replica factory, adapter class path
    "verl.checkpoint_engine": "verl_personadual.core.cpu.checkpoint_engine",  # CheckpointEngineRegistry: gloo
}

#: Every plugin module whose import registers something with verl.
REGISTERING_MODULES: tuple[str, ...] = EAGER + tuple(DEFERRED.values())

_FAIL_LOUD_ENV = "VERL_USE_EXTERNAL_MODULES"


def fail_loud() -> bool:
    """True when verl imports this module as an external module (``VERL_USE_EXTERNAL_MODULES``)."""
    return __name__ in {m.strip() for m in os.environ.get(_FAIL_LOUD_ENV, "").split(",")}


def register(name: str, *, raise_errors: bool) -> None:
    """Import the registering module ``name``; log at ERROR on failure and re-raise if ``raise_errors``."""
    try:
        importlib.import_module(name)
    except Exception:
        logger.exception(
            "verl_personadual: failed to import %s; its registrations are missing from verl. "
            "Run `python -m verl_personadual.check` for a diagnosis.",
            name,
        )
        if raise_errors:
            raise


def _deferred(name: str) -> Callable[[ModuleType], None]:
    """The hook that imports registering module ``name`` once verl has imported its registry module."""

    def callback(_registry_module: ModuleType) -> None:
        register(name, raise_errors=fail_loud())

    return callback


def load() -> None:
    """Register the eager modules now and the deferred ones for when verl imports their registries."""
    for name in EAGER:
        register(name, raise_errors=True)
    for registry_module, name in DEFERRED.items():
        when_imported(registry_module, _deferred(name))


load()
