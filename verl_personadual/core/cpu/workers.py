"""verl's Ray workers with their process group on plain ``gloo``.

verl's ``TrainingWorker`` starts torch.distributed with the backend string ``cpu:gloo,<device>:<ccl>``
(``utils/distributed.py``), which on the CPU platform is ``cpu:gloo,cpu:gloo``: torch refuses it ("Duplicate
device type cpu"). verl skips its own initialisation when a process group already exists, so these subclasses
start one on ``gloo`` first, through verl's own ``initialize_global_process_group_ray``, and are otherwise
verl's classes unchanged. The hybrid ``ActorRolloutRefWorker`` builds its actor and reference through the class
attributes ``actor_worker_cls`` / ``ref_worker_cls``; the trainers of :mod:`verl_personadual.core.trainer` put these
classes into verl's role -> worker mapping when ``trainer.device=cpu``.

verl's ``separate_async`` trainer uses ``DetachActorWorker`` instead, which keeps copies of the actor's FSDP2
shards as the proximal policy of decoupled PPO (``save_model_to_cpu`` / ``restore_model_from_cpu``). Its copy is
``tensor.detach().cpu()``, which on CPU returns the parameter itself, not a copy: the "saved" policy would follow
every optimizer step. :class:`CPUDetachActorWorker` clones the saved shards.
"""

from __future__ import annotations

from typing import Any, Callable

from verl.experimental.separation.engine_workers import DetachActorWorker
from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

__all__ = ["GlooTrainingWorker", "CPUActorRolloutRefWorker", "CPUDetachActorWorker", "FSDP2_STRATEGIES"]

#: Actor strategies whose saved state is verl's FSDP2 ``(shards, spec)`` pair (the only ones that run on CPU).
FSDP2_STRATEGIES = ("fsdp2", "veomni")


class GlooTrainingWorker(TrainingWorker):
    """verl's ``TrainingWorker`` whose process group is started on ``gloo`` before verl's constructor runs."""

    def __init__(self, config: Any) -> None:
        initialize_global_process_group_ray(timeout_second=None, backend="gloo")
        super().__init__(config)


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor / rollout / reference worker whose inner training workers start on ``gloo``."""

    actor_worker_cls = GlooTrainingWorker
    ref_worker_cls = GlooTrainingWorker


class CPUDetachActorWorker(DetachActorWorker):
    """verl's ``DetachActorWorker`` (separate_async) whose inner training workers start on ``gloo`` and whose saved
    copies of the actor are copies (see the module docstring)."""

    actor_worker_cls = GlooTrainingWorker
    ref_worker_cls = GlooTrainingWorker

    @property
    def copy_handler(self) -> Callable:
        save = super().copy_handler
        if self.config.actor.strategy not in FSDP2_STRATEGIES:
            return save

        def save_copy(module: Any) -> tuple[dict, Any]:
            shards, spec = save(module)
            return {name: (tensor.clone(), shard_spec) for name, (tensor, shard_spec) in shards.items()}, spec

        return save_copy
