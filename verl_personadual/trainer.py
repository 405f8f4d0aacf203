"""Trainer glue: hands each row's mode to the ``dual_grpo`` estimator on verl's default v1 sync path.

verl 0.9.1 passes an advantage estimator only rewards, mask, uid and ``config.algorithm``. This trainer
(``trainer.v1.trainer_mode=persona_dual_sync``) is verl's ``PPOTrainerSync`` with one change: before the
unchanged advantage step it reads every row's mode from the head of its response ids (after verl has
reordered the rows and appended balance-padding rows) and exposes it through ``advantage.row_modes``.

verl compares ``trainer_mode`` with the literal ``"sync"`` in several places; the trainer therefore sets
``config.trainer.v1.trainer_mode = "sync"`` before verl's constructor runs, so every other code path is
exactly verl's sync path.
"""

from __future__ import annotations

import logging
from typing import Any

import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_personadual.advantage import row_modes
from verl_personadual.config import DualGRPOConfig
from verl_personadual.modes import ModePrefixes, resolve_prefixes
from verl_personadual.names import ESTIMATOR, TRAINER_MODE

__all__ = ["PersonaDualSyncTrainer", "read_row_modes"]

logger = logging.getLogger(__name__)


def read_row_modes(batch: KVBatchMeta, prefixes: ModePrefixes) -> tuple[Any, Any]:
    """Modes and prefix lengths of the rows of ``batch``, in ``batch.keys`` order, read from TransferQueue.

    Returns ``(modes, prefix_len)`` as numpy arrays of shape (len(batch),) (see ``ModePrefixes.modes_of``).
    """
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["responses", "response_mask"])
    padded = data.to_padded_tensor()
    return prefixes.modes_of(padded["responses"], padded["response_mask"])


@register_trainer(TRAINER_MODE)
class PersonaDualSyncTrainer(PPOTrainerSync):
    """verl's sync PPO trainer that makes per-row modes visible to the ``dual_grpo`` estimator."""

    def __init__(self, config: DictConfig):
        self.dual_grpo = DualGRPOConfig.from_algorithm(config.algorithm)
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        logger.info(
            "%s: running verl's sync trainer with per-row modes for %s (%s)",
            TRAINER_MODE,
            ESTIMATOR,
            self.dual_grpo.as_dict(),
        )
        super().__init__(config)

    def _init_tokenizer(self) -> None:
        super()._init_tokenizer()
        self.mode_prefixes = resolve_prefixes(self.tokenizer, require_single_token=self.dual_grpo.prefix_requirement)
        logger.info("%s: mode prefix ids %s", TRAINER_MODE, self.mode_prefixes.ids)

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        modes, prefix_len = read_row_modes(batch, self.mode_prefixes)
        with row_modes(modes, prefix_len):
            return super()._compute_advantage(batch, metrics)
