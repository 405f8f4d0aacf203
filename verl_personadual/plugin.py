"""verl entry-point target (group ``verl.plugins``): importing it registers everything the plugin provides.

verl loads entry points inside a bare ``except Exception`` that logs at DEBUG, so a broken install would
otherwise surface much later as "Unknown advantage estimator". Here any failure is logged at ERROR, naming
the module, and re-raised. To make ``import verl`` itself fail on it, set
``VERL_USE_EXTERNAL_MODULES=verl_personadual.plugin`` (verl imports those modules without catching).
"""

from __future__ import annotations

import importlib
import logging
import warnings

logger = logging.getLogger("verl_personadual")

#: Modules whose import registers something with verl, in import order. The CPU platform comes first: verl
#: resolves its platform once per process, at the first ``get_platform()`` (the other modules' imports reach one).
REGISTERING_MODULES: tuple[str, ...] = (
    "verl_personadual.cpu.platform",
    "verl_personadual.advantage",
    "verl_personadual.trainer",
    "verl_personadual.rollout",
    "verl_personadual.cpu.backend",
)

#: verl warns at import about every optional training engine whose package is not installed (torchtitan,
#: veomni, megatron, ...). Those are expected; a broken install (any other error) still warns.
_OPTIONAL_ENGINE_WARNING = r".* engine is not available: ModuleNotFoundError"


def load() -> None:
    """Import every registering module; log at ERROR and re-raise on the first failure."""
    for name in REGISTERING_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_OPTIONAL_ENGINE_WARNING, category=UserWarning)
                importlib.import_module(name)
        except Exception:
            logger.exception(
                "verl_personadual: failed to import %s; its registrations are missing from verl. "
                "Run `python -m verl_personadual.check` for a diagnosis.",
                name,
            )
            raise


load()
