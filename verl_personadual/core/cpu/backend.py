"""Registers the ``hf_cpu`` rollout backend with verl (imported when verl imports ``verl.workers.rollout``).

The rollout classes are registered by name (a factory for the replica, a dotted path for the worker-side
adapter) and imported by verl only when a run selects ``hf_cpu``: a Ray worker that unpickles one of them
imports verl, hence this plugin, while the rollout module is still half-imported.
"""

from __future__ import annotations

import importlib

from verl.workers.rollout.replica import RolloutReplicaRegistry

from verl_personadual.core.names import CPU_ROLLOUT
from verl_personadual.core.verl_private import register_rollout_adapter

__all__ = ["ROLLOUT_MODULE"]

ROLLOUT_MODULE = "verl_personadual.core.cpu.rollout"

RolloutReplicaRegistry.register(CPU_ROLLOUT, lambda: importlib.import_module(ROLLOUT_MODULE).HFRolloutReplica)
register_rollout_adapter(CPU_ROLLOUT, f"{ROLLOUT_MODULE}.HFRolloutAdapter")
