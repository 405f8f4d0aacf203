"""Every use of a private verl 0.9.1 name by the plugin, in one place.

verl has no public way to register the worker-side adapter of a rollout backend (the replica side has
``RolloutReplicaRegistry.register``): ``get_rollout_class`` reads the module-level dict ``_ROLLOUT_REGISTRY`` of
``verl/workers/rollout/base.py``. And the plugin's subclasses override some of verl's underscore methods.
The plugin also relies on where verl defines the registries it registers with: it registers when verl imports
the module that holds a registry (``verl_personadual.core.plugin.DEFERRED``), so a registry moved elsewhere would be
imported without our names in it (:data:`REGISTRY_HOLDERS`). ``tests/core/test_verl_private.py`` checks every name
below against the installed verl, so an upgrade that moves one fails loudly in CI instead of silently skipping an
override or a registration.

verl has no public listing of the registered agent loops either: :func:`agent_loop_names` reads the module-level
dict ``_agent_loop_registry`` of ``verl/experimental/agent_loop/agent_loop.py`` (the preflight checks an RL file's
``agent_name`` against it).

The vLLM worker extension of the CPU path (``cpu/vllm_worker.py``) also uses private names of vLLM 0.24.0 and of
verl's vLLM extension: :data:`VLLM_PRIVATE_NAMES`, :data:`VLLM_EXTENSION_OVERRIDES`, checked by
``tests/core/test_vllm_path.py`` in the CPU vLLM environment (strings here: this module never imports vLLM).
"""

from __future__ import annotations

__all__ = [
    "ROLLOUT_MODE",
    "agent_loop_names",
    "register_rollout_adapter",
    "OVERRIDDEN_METHODS",
    "REGISTRY_HOLDERS",
    "VLLM_PRIVATE_NAMES",
    "VLLM_EXTENSION_OVERRIDES",
]

#: verl's rollout mode key of server-based backends (``RolloutConfig.mode``).
ROLLOUT_MODE = "async"

#: ``(module, class, method)`` of each verl method a plugin subclass overrides.
OVERRIDDEN_METHODS: tuple[tuple[str, str, str], ...] = (
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine", "_build_fsdp_module"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_init_resource_pool_mgr"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_build_replay_buffer"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_init_tokenizer"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_compute_advantage"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_compute_ref_log_prob"),
    ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer", "_val_metrics_update"),
    ("verl.trainer.ppo.v1.trainer_separate_async", "PPOTrainerSeparateAsync", "_setup"),
)


#: verl module whose import the plugin waits for -> the registries (``module.attribute``) the plugin registers
#: with there, each defined in that module or one of its submodules.
REGISTRY_HOLDERS: dict[str, tuple[str, ...]] = {
    "verl.trainer.ppo.core_algos": ("verl.trainer.ppo.core_algos.ADV_ESTIMATOR_REGISTRY",),
    "verl.trainer.ppo.v1": ("verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY",),
    "verl.experimental.agent_loop": ("verl.experimental.agent_loop.agent_loop._agent_loop_registry",),
    "verl.workers.engine": ("verl.workers.engine.base.EngineRegistry",),
    "verl.workers.rollout": (
        "verl.workers.rollout.replica.RolloutReplicaRegistry",
        "verl.workers.rollout.base._ROLLOUT_REGISTRY",
    ),
    "verl.checkpoint_engine": ("verl.checkpoint_engine.base.CheckpointEngineRegistry",),
}


#: ``(module, name)`` of the private vLLM functions that put a pre-packed CPU layer back in checkpoint format (its
#: layer-wise reload machinery), and of the record type whose ``restore_metadata`` field they read.
VLLM_PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("vllm.model_executor.model_loader.reload.layerwise", "get_layerwise_info"),
    ("vllm.model_executor.model_loader.reload.meta", "restore_layer_on_meta"),
    ("vllm.model_executor.model_loader.reload.meta", "materialize_layer"),
    ("vllm.model_executor.model_loader.reload.types", "LayerReloadingInfo"),
)

#: ``(module, class, method)`` of verl's vLLM worker extension that the CPU extension overrides.
VLLM_EXTENSION_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension", "update_weights_from_ipc"),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension", "_update_weights"),
)


def register_rollout_adapter(name: str, dotted_path: str) -> None:
    """Make ``get_rollout_class(name)`` return the class at ``dotted_path`` (imported lazily by verl)."""
    # imported here, not at the top: importing verl.workers.rollout is what runs the plugin's deferred registration
    # of the hf_cpu backend (plugin.DEFERRED), which calls this function, so a top-level import would be circular
    from verl.workers.rollout import base as rollout_base

    rollout_base._ROLLOUT_REGISTRY[(name, ROLLOUT_MODE)] = dotted_path


def agent_loop_names() -> list[str]:
    """The names in verl's agent-loop registry (sorted), including the plugin's once it has registered them."""
    from verl.experimental.agent_loop import agent_loop

    return sorted(agent_loop._agent_loop_registry)
