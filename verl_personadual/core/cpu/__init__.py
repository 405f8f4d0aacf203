"""Running verl's real trainers on CPU: a platform, an engine, worker classes and a rollout backend.

Selected by configuration alone (the ``cpu_tiny`` recipe backbones set all of it): ``trainer.device=cpu``,
``actor_rollout_ref.rollout.name=hf_cpu``, ``actor_rollout_ref.actor.strategy=fsdp2``, Ray started with logical
GPUs, and ``VERL_PLATFORM=cpu`` for the Ray workers. What it is for: trying, debugging and testing recipes
end to end without a GPU, on tiny models. It is not a way to train real models.

- :mod:`.platform` - verl platform ``cpu`` (registered by the plugin entry point inside ``import verl``; see its
  docstring for why a plain ``python -m verl.trainer.main_ppo`` sees it in time);
- :mod:`.engine` - verl's FSDP engine registered for device ``cpu`` (when verl imports ``verl.workers.engine``);
- :mod:`.workers` - verl's workers with their process group on ``gloo`` (picked by the plugin's trainers);
- :mod:`.checkpoint_engine` - the ``gloo`` checkpoint engine: the actor's weights to standalone rollout replicas
  (``separate_async``), registered when verl imports ``verl.checkpoint_engine``;
- :mod:`.generation` / :mod:`.rollout` - the ``hf_cpu`` rollout backend (batched ``transformers`` generation),
  registered by name by :mod:`.backend` when verl imports ``verl.workers.rollout``;
- :mod:`.sft` - verl's SFT trainer launched on ``gloo``;
- ``verl_personadual.core.verl_private`` - the only place that touches private verl names.
"""
