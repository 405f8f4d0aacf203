"""Trainer glue: hands each row's mode to the ``dual_grpo`` estimator on verl's default v1 sync path.

Two trainers are registered, both verl's ``PPOTrainerSync`` with the same two system settings
(:class:`SyncTrainerBase`): with ``trainer.device=cpu`` they put the gloo worker classes of
:mod:`verl_personadual.core.cpu.workers` into verl's role -> worker mapping (verl hard-codes its own classes), and they
set the replay buffer's poll interval from ``trainer.v1.persona_dual.replay_poll_interval_s``
(:class:`~verl_personadual.core.config.TrainerSettings`). ``names.CPU_SYNC_TRAINER_MODE`` is that and nothing more;
``names.TRAINER_MODE`` adds the PersonaDual glue below.

verl 0.9.1 passes an advantage estimator only rewards, mask, uid and ``config.algorithm``. This trainer
(``trainer.v1.trainer_mode=persona_dual_sync``) is verl's ``PPOTrainerSync`` with one change: before the
unchanged advantage step it reads every row's mode from the head of its response ids (after verl has
reordered the rows and appended balance-padding rows) and exposes it through ``advantage.row_modes``.

verl compares ``trainer_mode`` with the literal ``"sync"`` in several places; the trainer therefore sets
``config.trainer.v1.trainer_mode = "sync"`` before verl's constructor runs, so every other code path is
exactly verl's sync path.

With ``trainer.v1.persona_dual.token_dump_dir`` set it writes every training row's tokens per step
(:func:`dump_step_tokens`).

It also logs the mode metrics of ``verl_personadual.core.metrics`` (``personadual/train/...`` from the rows of each
step, read from their response ids; ``personadual/val/...`` from the reward's ``mode`` / ``persona_setting``
fields of each validation run).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_personadual.core.advantage import row_modes
from verl_personadual.core.config import DualGRPOConfig, TrainerSettings
from verl_personadual.core.cpu.platform import PLATFORM_NAME
from verl_personadual.core.metrics import (
    UNKNOWN_SETTING,
    metric_safe_source,
    mode_metrics,
)
from verl_personadual.core.modes import (
    UNKNOWN_MODE,
    Mode,
    ModePrefixes,
    resolve_prefixes,
)
from verl_personadual.core.names import CPU_SYNC_TRAINER_MODE, ESTIMATOR, TRAINER_MODE
from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.utils.atomic import atomic_write_text

__all__ = [
    "PersonaDualSyncTrainer",
    "CPUSyncTrainer",
    "StepRows",
    "read_step_rows",
    "setting_name",
    "reanchor_prefix_kl",
    "prefix_metrics",
    "MODE_MASS_METRIC",
    "PREFIX_RATIO_METRIC",
    "UNBALANCED_GROUPS_METRIC",
    "TOKEN_DUMP_FIELDS",
    "dump_step_tokens",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRows:
    """Per-row facts of one training batch, in ``batch.keys`` order (all arrays/lists of length len(batch))."""

    modes: np.ndarray  # int8 0 / 1 / -1, read from the head of the response ids
    prefix_len: np.ndarray  # int64 prefix tokens at the head of the response (0 when unknown)
    rewards: np.ndarray  # float64 sum of rm_scores
    data_sources: list[str]
    persona_settings: list[str]
    valid: np.ndarray  # bool, False for verl's balance-padding rows


def read_step_rows(batch: KVBatchMeta, prefixes: ModePrefixes) -> StepRows:
    """Read what the estimator and the mode metrics need for the rows of ``batch`` from TransferQueue."""
    fields = ["responses", "response_mask", "rm_scores", "data_source", "extra_info"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    data_sources = [metric_safe_source(x) for x in list(data["data_source"])]
    settings = [setting_name((info or {}).get("persona_setting")) for info in list(data["extra_info"])]
    padded = data.select("responses", "response_mask", "rm_scores").to_padded_tensor()
    modes, prefix_len = prefixes.modes_of(padded["responses"], padded["response_mask"])
    return StepRows(
        modes=modes,
        prefix_len=prefix_len,
        rewards=padded["rm_scores"].sum(dim=-1).double().numpy(),
        data_sources=data_sources,
        persona_settings=settings,
        valid=np.array([not tag.get("is_padding", False) for tag in batch.tags], dtype=bool),
    )


#: Metric: mean over prompt groups of pi(general prefix) + pi(personalized prefix) at the first response
#: position, from the actor's old log-probs of the forced prefixes (single-token prefixes only). verl computes them
#: at the rollout temperature, so this reads higher than the mass at temperature 1 (greedy eval's mode_mass).
MODE_MASS_METRIC = "personadual/train/mode_token_mass"
#: Metric: mean over rows of (advantage on the prefix tokens) / (advantage on the other response tokens);
#: equals beta whenever the advantage is not zero.
PREFIX_RATIO_METRIC = "personadual/train/prefix_advantage_ratio"
#: Metric: prompt groups whose valid rows are not split evenly between the two modes (or hold a row without a
#: mode); 0 on every step of a prefix-forced run (n/2 rollouts per mode per prompt).
UNBALANCED_GROUPS_METRIC = "personadual/train/unbalanced_groups"
#: A mode-token mass below this is reported as a warning every step.
MODE_MASS_WARNING = 0.9


def _row_tensors(batch: KVBatchMeta, fields: list[str]) -> dict[str, list[torch.Tensor]]:
    """Per-row 1-D tensors of ``fields`` (nested or padded in TransferQueue) for the rows of ``batch``."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    out: dict[str, list[torch.Tensor]] = {}
    for name in fields:
        value = data[name]
        rows = list(value.unbind()) if getattr(value, "is_nested", False) else list(value)
        out[name] = [torch.as_tensor(r) for r in rows]
    return out


def reanchor_prefix_kl(batch: KVBatchMeta, prefixes: ModePrefixes, how: str) -> None:
    """Rewrite the reference log-probs of every row's prefix tokens for ``algorithm.dual_grpo.prefix_kl`` =
    ``how`` (``"mass"`` or ``"rollout"``; see ``DualGRPOConfig``). Rows without a valid prefix, and under
    ``"mass"`` rows of a group that lacks one of the modes, keep the reference's values."""
    data = _row_tensors(batch, ["responses", "ref_log_prob", "old_log_probs"])
    uids = [key.rsplit("_", 2)[0] for key in batch.keys]
    modes = [prefixes.mode_of_ids(ids.tolist()) for ids in data["responses"]]
    shift: dict[str, float] = {}
    if how == "mass":
        if not prefixes.single_token:
            raise ValueError("algorithm.dual_grpo.prefix_kl=mass needs single-token mode prefixes")
        heads: dict[str, dict[int, tuple[float, float]]] = {}
        for uid, mode, ref, old in zip(uids, modes, data["ref_log_prob"], data["old_log_probs"], strict=True):
            if mode != UNKNOWN_MODE:
                heads.setdefault(uid, {})[mode] = (float(ref[0]), float(old[0]))
        for uid, by_mode in heads.items():
            if len(by_mode) == 2:
                ref_mass = sum(np.exp(r) for r, _ in by_mode.values())
                old_mass = sum(np.exp(o) for _, o in by_mode.values())
                shift[uid] = float(np.log(ref_mass) - np.log(old_mass))
    anchored = []
    for uid, mode, ref, old in zip(uids, modes, data["ref_log_prob"], data["old_log_probs"], strict=True):
        ref = ref.clone()
        if mode != UNKNOWN_MODE and (how == "rollout" or uid in shift):
            k = prefixes.length(Mode(mode))
            ref[:k] = old[:k] + shift.get(uid, 0.0)
        anchored.append(ref)
    nested = torch.nested.as_nested_tensor(anchored, layout=torch.jagged)
    tq.kv_batch_put(
        keys=batch.keys,
        partition_id=batch.partition_id,
        fields=TensorDict({"ref_log_prob": nested}, batch_size=len(anchored)),
    )


def prefix_metrics(batch: KVBatchMeta, rows: StepRows) -> dict[str, float]:
    """:data:`PREFIX_RATIO_METRIC` from the advantages the actor will read, and :data:`MODE_MASS_METRIC`."""
    data = _row_tensors(batch, ["advantages", "response_mask", "old_log_probs"])
    ratios, groups = [], {}
    uids = [key.rsplit("_", 2)[0] for key in batch.keys]
    for i, (adv, mask, old) in enumerate(
        zip(data["advantages"], data["response_mask"], data["old_log_probs"], strict=True)
    ):
        k = int(rows.prefix_len[i])
        if not rows.valid[i] or k == 0:
            continue
        rest = adv[k:][mask[k:].bool()]
        if len(rest) and float(rest.abs().max()) > 1e-6:
            ratios.append(float(adv[:k].mean() / rest.mean()))
        if k == 1:
            groups.setdefault(uids[i], {})[int(rows.modes[i])] = float(old[0].exp())
    out: dict[str, float] = {}
    if ratios:
        out[PREFIX_RATIO_METRIC] = float(np.mean(ratios))
    masses = [sum(g.values()) for g in groups.values() if len(g) == 2]
    if masses:
        out[MODE_MASS_METRIC] = float(np.mean(masses))
    counts: dict[str, list[int]] = {}
    for uid, mode, valid in zip(uids, rows.modes, rows.valid, strict=True):
        if valid:
            counts.setdefault(uid, [0, 0, 0])[int(mode)] += 1  # index -1: no mode
    out[UNBALANCED_GROUPS_METRIC] = float(sum(c[0] != c[1] or c[2] > 0 for c in counts.values()))
    return out


#: Keys of one row of a token dump (:func:`dump_step_tokens`): TransferQueue key and prompt group, mode (0 general,
#: 1 personalized, -1 none), balance padding or not, reward, then per-token lists over the response's valid
#: positions (prompt ids unpadded). The forced prefix has rollout log-prob 0.0 (not sampled).
TOKEN_DUMP_FIELDS = (
    "key",
    "uid",
    "mode",
    "padding",
    "reward",
    "prompt_ids",
    "response_ids",
    "rollout_log_probs",
    "old_log_probs",
    "advantages",
)


def dump_step_tokens(batch: KVBatchMeta, rows: StepRows, path: Path) -> int:
    """Write one JSON line per row of ``batch`` (keys :data:`TOKEN_DUMP_FIELDS`) to ``path`` atomically; returns
    the number of rows. Reads prompts, responses, masks, log-probs and advantages from TransferQueue."""
    data = _row_tensors(
        batch, ["prompts", "responses", "response_mask", "rollout_log_probs", "old_log_probs", "advantages"]
    )
    lines = []
    for i, key in enumerate(batch.keys):
        valid = data["response_mask"][i].bool()
        n = int(valid.sum())
        per_token = {name: data[name][i][:n].tolist() for name in ("rollout_log_probs", "old_log_probs", "advantages")}
        lines.append(
            json.dumps(
                {
                    "key": key,
                    "uid": key.rsplit("_", 2)[0],
                    "mode": int(rows.modes[i]),
                    "padding": not bool(rows.valid[i]),
                    "reward": float(rows.rewards[i]),
                    "prompt_ids": data["prompts"][i].tolist(),
                    "response_ids": data["responses"][i][:n].tolist(),
                    **per_token,
                }
            )
        )
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(lines)


def setting_name(value: Any) -> str:
    """A row's persona setting for the metrics: a ``PersonaSetting`` value, its index (the reward's numeric
    ``persona_setting`` code), or ``UNKNOWN_SETTING`` for anything else (missing, -1, foreign data)."""
    settings = list(PersonaSetting)
    if isinstance(value, str):
        return value if value in {s.value for s in settings} else UNKNOWN_SETTING
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        i = int(value)
        return settings[i].value if 0 <= i < len(settings) else UNKNOWN_SETTING
    return UNKNOWN_SETTING


class SyncTrainerBase(PPOTrainerSync):
    """verl's sync trainer with the CPU worker classes when ``trainer.device=cpu`` and a configurable replay-buffer
    poll interval; verl's ``trainer_mode`` is reset to the literal ``"sync"`` that verl compares against."""

    def __init__(self, config: DictConfig):
        self.settings = TrainerSettings.from_trainer(config.trainer)
        mode = config.trainer.v1.trainer_mode
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        _check_device(config)
        logger.info("%s: verl's sync trainer on %s; %s", mode, config.trainer.device, self.settings)
        super().__init__(config)

    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        buffer.poll_interval = self.settings.replay_poll_interval_s
        return buffer

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        if self.config.trainer.device != PLATFORM_NAME:
            return
        import ray
        from verl.trainer.ppo.utils import Role

        from verl_personadual.core.cpu.workers import (
            CPUActorRolloutRefWorker,
            GlooTrainingWorker,
        )

        # verl maps the critic to TrainingWorker and every other role to ActorRolloutRefWorker.
        for role in list(self.role_worker_mapping):
            cls = GlooTrainingWorker if role == Role.Critic else CPUActorRolloutRefWorker
            self.role_worker_mapping[role] = ray.remote(cls)


def _check_device(config: DictConfig) -> None:
    """``trainer.device=cpu`` needs verl's CPU platform in this process (the other way round is allowed: a
    CPU-only Ray node may run the trainer's driver actor of a GPU job)."""
    from verl.plugin.platform import get_platform

    platform = get_platform().device_name
    if config.trainer.device == PLATFORM_NAME and platform != PLATFORM_NAME:
        raise ValueError(
            f"trainer.device={PLATFORM_NAME} but verl's platform in this process is {platform!r}: set "
            f"VERL_PLATFORM={PLATFORM_NAME} for the driver and the Ray workers (the cpu_tiny recipes do)"
        )


@register_trainer(CPU_SYNC_TRAINER_MODE)
class CPUSyncTrainer(SyncTrainerBase):
    """verl's sync PPO trainer, runnable on CPU (no PersonaDual glue): plain verl estimators such as ``grpo``."""


@register_trainer(TRAINER_MODE)
class PersonaDualSyncTrainer(SyncTrainerBase):
    """verl's sync PPO trainer that makes per-row modes visible to the ``dual_grpo`` estimator."""

    def __init__(self, config: DictConfig):
        self.dual_grpo = DualGRPOConfig.from_algorithm(config.algorithm)
        logger.info("%s: per-row modes for %s (%s)", TRAINER_MODE, ESTIMATOR, self.dual_grpo.as_dict())
        super().__init__(config)

    def _init_tokenizer(self) -> None:
        super()._init_tokenizer()
        self.mode_prefixes = resolve_prefixes(self.tokenizer, require_single_token=self.dual_grpo.prefix_requirement)
        logger.info("%s: mode prefix ids %s", TRAINER_MODE, self.mode_prefixes.ids)

    def _compute_ref_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_ref_log_prob(batch, metrics)
        if self.dual_grpo.prefix_kl != "ref":
            reanchor_prefix_kl(batch, self.mode_prefixes, self.dual_grpo.prefix_kl)
        return batch

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        rows = read_step_rows(batch, self.mode_prefixes)
        metrics.update(
            mode_metrics(rows.modes, rows.rewards, rows.data_sources, rows.persona_settings, "train", valid=rows.valid)
        )
        with row_modes(rows.modes, rows.prefix_len):
            batch = super()._compute_advantage(batch, metrics)
        metrics.update(prefix_metrics(batch, rows))
        if self.settings.token_dump_dir:
            path = Path(self.settings.token_dump_dir) / f"{self.global_steps}.jsonl"
            logger.info(
                "step %s: %d rows' tokens written to %s", self.global_steps, dump_step_tokens(batch, rows, path), path
            )
        mass = metrics.get(MODE_MASS_METRIC)
        if mass is not None and mass < MODE_MASS_WARNING:
            logger.warning(
                "step %s: the policy puts only %.2f of its probability on the two mode tokens at the first response "
                "position (%s); free decoding will start responses without a mode. Check the KL loss "
                "(actor.use_kl_loss, kl_loss_coef) and the learning rate.",
                self.global_steps,
                mass,
                MODE_MASS_METRIC,
            )
        return batch

    def _val_metrics_update(
        self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, expected_acc_counts=None
    ) -> dict[str, float]:
        metric_dict = super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, sample_turns, expected_acc_counts=expected_acc_counts
        )
        if "mode" in reward_extra_infos_dict and "persona_setting" in reward_extra_infos_dict:
            modes = np.array([-1 if m is None else int(m) for m in reward_extra_infos_dict["mode"]], dtype=np.int8)
            rewards = np.asarray(reward_extra_infos_dict["reward"], dtype=np.float64)
            settings = [setting_name(code) for code in reward_extra_infos_dict["persona_setting"]]
            sources = [metric_safe_source(d) for d in data_sources]
            metric_dict.update(mode_metrics(modes, rewards, sources, settings, "val"))
        return metric_dict
