"""The DualGRPO advantage estimator (``algorithm.adv_estimator=dual_grpo``).

Per prompt group (verl's ``uid``) and mode m, with r the sum of a row's token-level rewards, mu_m the mean
reward of the group's rows in mode m and mu_group the mean over all the group's rows:

    A = (r - b) + (mu_m - mu_other),   b = mu_m (``baseline="mode"``, the paper) or mu_group (``"group"``)

- the inter-mode term is 0 when the group has no row in the other mode, or when ``inter_mode`` is off;
- with ``norm_by_std`` the first term is divided by (std + epsilon), std the unbiased std of the rewards b was
  taken over (the mode's rows, or the group's; 1 when there is a single row, as verl's GRPO does);
- rows of unknown mode (responses without a valid prefix; verl's balance-padding rows, whose mask is 0) get 0
  (``unknown_mode_advantage="zero"``) or r - mu_group (``"group"``), and no prefix weighting;
- prefix tokens (the first ``prefix_len`` response positions of a row) get beta * A; masked positions are 0.

With forced prefixes (n/2 rows per mode, k = n/2) the prefix tokens of mode m receive, summed over the mode's
rows, beta * k * (mu_m - mu_other) with the paper's setting, 0 with ``inter_mode`` off and ``baseline="mode"``
(no credit for the mode choice at all), and beta * (k / 2) * (mu_m - mu_other) with ``baseline="group"``
(recipes/README.md, "Ablations").

verl hands a registered estimator only rewards, mask, uid and ``config.algorithm``; each row's mode reaches it
through ``row_modes`` (a context variable set by the trainer glue in ``verl_personadual.core.trainer``).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from verl_personadual.core.config import DualGRPOConfig
from verl_personadual.core.modes import UNKNOWN_MODE
from verl_personadual.core.names import ESTIMATOR, TRAINER_MODES

__all__ = ["RowModes", "row_modes", "dual_grpo_advantage", "compute_dual_grpo_advantage"]


@dataclass(frozen=True)
class RowModes:
    """Per-row mode codes (0 general, 1 personalized, -1 unknown) and prefix lengths, aligned with the batch."""

    modes: np.ndarray
    prefix_len: np.ndarray


_ROW_MODES: contextvars.ContextVar[RowModes | None] = contextvars.ContextVar("personadual_row_modes", default=None)


@contextlib.contextmanager
def row_modes(modes: np.ndarray, prefix_len: np.ndarray) -> Iterator[RowModes]:
    """Make ``modes``/``prefix_len`` (shape (B,), batch row order) visible to the estimator inside the block."""
    value = RowModes(np.asarray(modes), np.asarray(prefix_len))
    token = _ROW_MODES.set(value)
    try:
        yield value
    finally:
        _ROW_MODES.reset(token)


def _validate(
    token_level_rewards: torch.Tensor,
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    modes: np.ndarray,
    prefix_len: np.ndarray,
) -> None:
    if response_mask.shape != token_level_rewards.shape:
        raise ValueError(
            f"dual_grpo: response_mask shape {tuple(response_mask.shape)} != "
            f"token_level_rewards shape {tuple(token_level_rewards.shape)}"
        )
    b, length = token_level_rewards.shape
    for name, arr in (("index (uid)", index), ("modes", modes), ("prefix_len", prefix_len)):
        if len(arr) != b:
            raise ValueError(f"dual_grpo: {name} has {len(arr)} entries but the batch has {b} rows")
    bad_modes = ~np.isin(modes, (UNKNOWN_MODE, 0, 1))
    if bad_modes.any():
        rows = np.nonzero(bad_modes)[0][:5].tolist()
        raise ValueError(f"dual_grpo: mode codes must be -1, 0 or 1; rows {rows} have {modes[rows].tolist()}")
    if (prefix_len < 0).any() or (prefix_len > length).any():
        rows = np.nonzero((prefix_len < 0) | (prefix_len > length))[0][:5].tolist()
        raise ValueError(f"dual_grpo: prefix_len out of [0, {length}] at rows {rows}")
    # A NaN or inf at any token makes the row's sum non-finite, so checking the (B,) sums is enough.
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(
            f"dual_grpo: non-finite rewards (NaN/inf) at rows {rows} (uids {[index[i] for i in rows]}); "
            "check the reward function"
        )


def dual_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    modes: np.ndarray,
    prefix_len: np.ndarray,
    cfg: DualGRPOConfig = DualGRPOConfig(),
) -> torch.Tensor:
    """Token-level DualGRPO advantages, vectorised over the batch (no loop over groups).

    Args:
        token_level_rewards: (B, L) float; a row's reward is its sum over L.
        response_mask: (B, L) 0/1.
        index: (B,) group ids (verl's uid, any hashable).
        modes: (B,) int codes 0 / 1 / -1.
        prefix_len: (B,) number of prefix tokens at the head of each response (ignored for unknown rows).
    Returns:
        (B, L) advantages in the dtype of ``token_level_rewards``, 0 where ``response_mask`` is 0.
    """
    modes = np.asarray(modes)
    prefix_len = np.asarray(prefix_len)
    index = np.asarray(index)
    if token_level_rewards.dim() != 2:
        raise ValueError(f"dual_grpo: token_level_rewards must be (B, L), got {tuple(token_level_rewards.shape)}")
    scores = token_level_rewards.sum(dim=-1).to(torch.float64)
    _validate(token_level_rewards, scores, response_mask, index, modes, prefix_len)
    b, length = token_level_rewards.shape
    device = token_level_rewards.device
    if b == 0:
        return torch.zeros_like(token_level_rewards)

    group_np, _ = pd.factorize(index, sort=False)
    group = torch.as_tensor(group_np, dtype=torch.long, device=device)
    n_groups = int(group.max()) + 1
    mode = torch.as_tensor(modes.astype(np.int64), device=device)
    known = mode >= 0

    # Per (group, mode) slot statistics: slot = 2 * group + mode.
    own = 2 * group + mode.clamp(min=0)
    other = 2 * group + (1 - mode.clamp(min=0))
    count = torch.zeros(2 * n_groups, dtype=torch.float64, device=device)
    total = torch.zeros_like(count)
    count.index_add_(0, own[known], torch.ones_like(scores[known]))
    total.index_add_(0, own[known], scores[known])
    mean = total / count.clamp(min=1.0)

    group_count = torch.bincount(group, minlength=n_groups).to(torch.float64)
    group_total = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, group, scores)
    group_mean = (group_total / group_count)[group]

    if cfg.baseline == "mode":
        intra = scores - mean[own]
        if cfg.norm_by_std:
            sq = torch.zeros_like(count).index_add_(0, own[known], intra[known] ** 2)
            std = torch.where(count > 1, (sq / (count - 1).clamp(min=1.0)).sqrt(), torch.ones_like(count))
            intra = intra / (std[own] + cfg.epsilon)
    else:
        intra = scores - group_mean
        if cfg.norm_by_std:
            sq = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, group, intra**2)
            std = torch.where(
                group_count > 1, (sq / (group_count - 1).clamp(min=1.0)).sqrt(), torch.ones_like(group_count)
            )
            intra = intra / (std[group] + cfg.epsilon)
    if cfg.inter_mode:
        inter = torch.where(count[other] > 0, mean[own] - mean[other], torch.zeros_like(scores))
    else:
        inter = torch.zeros_like(scores)

    if cfg.unknown_mode_advantage == "group":
        unknown_adv = scores - group_mean
    else:
        unknown_adv = torch.zeros_like(scores)

    adv = torch.where(known, intra + inter, unknown_adv).to(token_level_rewards.dtype)
    token_adv = adv[:, None] * response_mask.to(token_level_rewards.dtype)
    # Only the first max(prefix_len) columns can hold prefix tokens: scale that narrow slice in place.
    plen = torch.as_tensor(prefix_len.astype(np.int64), device=device) * known
    width = int(plen.max())
    if width:
        in_prefix = torch.arange(width, device=device)[None, :] < plen[:, None]
        token_adv[:, :width] *= torch.where(in_prefix, cfg.beta, 1.0).to(token_adv.dtype)
    return token_adv


@register_adv_est(ESTIMATOR)
def compute_dual_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl entry point: reads the row modes set by the trainer glue and ``config.algorithm.dual_grpo``.

    Returns ``(advantages, returns)``, both (B, L) and equal, as verl's GRPO does.
    """
    rows = _ROW_MODES.get()
    if rows is None:
        raise RuntimeError(
            f"algorithm.adv_estimator={ESTIMATOR} needs each row's mode, which verl does not pass to estimators. "
            f"Set trainer.v1.trainer_mode to one of {', '.join(TRAINER_MODES.values())} (the recipes in recipes/ "
            "do), or call the estimator inside verl_personadual.core.advantage.row_modes(...)."
        )
    if index is None:
        raise ValueError(f"{ESTIMATOR}: verl passed no uid index; prompt groups are unknown")
    cfg = DualGRPOConfig.from_algorithm(config)
    adv = dual_grpo_advantage(token_level_rewards, response_mask, index, rows.modes, rows.prefix_len, cfg)
    return adv, adv
