"""verl entry-point target (group ``verl.plugins``): importing it registers everything the plugin provides.

verl loads entry points inside a bare ``except Exception`` that logs at DEBUG, so a broken install would
otherwise surface much later as "Unknown advantage estimator". Here any failure is logged at ERROR, naming
the module, and re-raised. To make ``import verl`` itself fail on it, set
``VERL_USE_EXTERNAL_MODULES=verl_personadual.plugin`` (verl imports those modules without catching).
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger("verl_personadual")

#: Modules whose import registers something with verl (estimator, trainer glue, agent loops).
REGISTERING_MODULES: tuple[str, ...] = (
    "verl_personadual.advantage",
    "verl_personadual.trainer",
    "verl_personadual.rollout",
)


def load() -> None:
    """Import every registering module; log at ERROR and re-raise on the first failure."""
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            logger.exception(
                "verl_personadual: failed to import %s; its registrations are missing from verl. "
                "Run `python -m verl_personadual.check` for a diagnosis.",
                name,
            )
            raise


load()
