"""verl's Ray workers with their process group on plain ``gloo``.

verl's ``TrainingWorker`` starts torch.distributed with the backend string ``cpu:gloo,<device>:<ccl>``
(``utils/distributed.py``), which on the CPU platform is ``cpu:gloo,cpu:gloo``: torch refuses it ("Duplicate
device type cpu"). verl skips its own initialisation when a process group already exists, so these subclasses
start one on ``gloo`` first, through verl's own ``initialize_global_process_group_ray``, and are otherwise
verl's classes unchanged. The hybrid ``ActorRolloutRefWorker`` builds its actor and reference through the class
attributes ``actor_worker_cls`` / ``ref_worker_cls``; the trainers of :mod:`verl_personadual.core.trainer` put these
classes into verl's role -> worker mapping when ``trainer.device=cpu``.
"""

from __future__ import annotations

from typing import Any

from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

__all__ = ["GlooTrainingWorker", "CPUActorRolloutRefWorker"]


class GlooTrainingWorker(TrainingWorker):
    """verl's ``TrainingWorker`` whose process group is started on ``gloo`` before verl's constructor runs."""

    def __init__(self, config: Any) -> None:
        initialize_global_process_group_ray(timeout_second=None, backend="gloo")
        super().__init__(config)


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor / rollout / reference worker whose inner training workers start on ``gloo``."""

    actor_worker_cls = GlooTrainingWorker
    ref_worker_cls = GlooTrainingWorker
