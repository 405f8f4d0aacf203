"""Names under which the plugin registers itself in verl, and the config keys it reads.

Recipes, data rows, the self-check and the tests import these; no other module spells them.
"""

from __future__ import annotations

#: ``algorithm.adv_estimator`` value of the DualGRPO estimator.
ESTIMATOR = "dual_grpo"

#: verl 0.9.1's own v1 trainer modes (``trainer.v1.trainer_mode`` of plain verl): ``sync`` generates, then trains;
#: ``colocate_async`` overlaps the next batch's generation with training on the same devices; ``separate_async``
#: generates on a rollout pool of its own while the trainer trains.
VERL_TRAINER_MODES = ("sync", "colocate_async", "separate_async")

#: ``trainer.v1.trainer_mode`` of the trainer glue that hands per-row modes to the estimator, one per verl mode:
#: ``persona_dual_<verl mode>`` (``verl_personadual.core.trainer``). The recipes select one with this one key.
TRAINER_MODES = {mode: f"persona_dual_{mode}" for mode in VERL_TRAINER_MODES}

#: The recipes' default: the glue over verl's sync trainer.
TRAINER_MODE = TRAINER_MODES["sync"]

#: Agent-loop names (verl's agent-loop registry; written into each data row's ``agent_name``).
AGENT_LOOP_FORCED = "personadual_forced"  # training rows: n/2 rollouts per mode, prefix forced
AGENT_LOOP_FREE = "personadual_free"  # validation rows: the model picks its own prefix

#: Config namespace of every DualGRPO switch: ``algorithm.dual_grpo.<key>``.
CONFIG_NAMESPACE = "dual_grpo"

#: ``reward.custom_reward_function.path`` / ``.name`` of the persona-aware reward.
REWARD_FN_PATH = "pkg://verl_personadual.core.rewards"
REWARD_FN_NAME = "compute_score"

#: Key of the agent loop's extra fields (and so of the reward's ``extra_info``) that holds the mode name.
MODE_FIELD = "persona_mode"

#: Key of the agent loop's extra fields (and so of the reward's ``extra_info``) that holds the number of response
#: tokens (mode prefix included); the reward returns it under the same key, which verl hands to the trainer's
#: validation metrics (per-mode response lengths).
RESPONSE_LENGTH_FIELD = "response_length"

#: ``actor_rollout_ref.rollout.name`` of the CPU rollout backend (``verl_personadual.core.cpu.rollout``).
CPU_ROLLOUT = "hf_cpu"

#: ``actor_rollout_ref.rollout.checkpoint_engine.backend`` of the CPU weight transfer from the actor to standalone
#: rollout replicas (``separate_async``; ``verl_personadual.core.cpu.checkpoint_engine``).
CPU_CHECKPOINT_ENGINE = "gloo"

#: ``trainer.v1.trainer_mode`` of verl's sync trainer with nothing of PersonaDual but the CPU worker classes
#: (``verl_personadual.core.trainer.CPUSyncTrainer``): plain verl recipes (e.g. ``grpo``) on CPU.
CPU_SYNC_TRAINER_MODE = "cpu_sync"

#: Config section of the settings of all the plugin's trainers above: ``trainer.v1.<TRAINER_SETTINGS>.<key>``.
TRAINER_SETTINGS = "persona_dual"

#: verl platform name (``VERL_PLATFORM``), ``trainer.device`` and torch device type of the CPU path.
CPU_DEVICE = "cpu"
