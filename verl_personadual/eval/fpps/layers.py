"""FPPS layer selection ("Representation Shift Locator"): logit-lens answer perplexity per layer, the relative
deviation Δ, per-group layer ranking, reciprocal-rank fusion, the chosen layer L.

Per example and per layer ℓ (``model_io`` indexing: output of decoder block ℓ, 0-based), the gold answer is
teacher-forced after the prompt and its perplexity is read through the logit lens:
``PPL_ℓ = exp(-(1/T) Σ_t log softmax(lm_head(norm(h_ℓ)))[a_t])`` over the T answer tokens, where h_ℓ is the state
at the position that predicts a_t. The final norm IS applied before the head (the notes leave it open; without it
the early-layer readout is meaningless for RMSNorm models). For the last layer this equals the model's own
teacher-forced answer perplexity. Then ``Δ_ℓ = (PPL_ℓ^with − PPL_ℓ^without) / PPL_ℓ^with`` (with / without the
persona in the prompt): Δ > 0 where the persona makes the gold answer less likely, Δ < 0 where more.

Choices for what the notes leave open (the genuinely open ones are parameters of :func:`select_layer`):

- ``aggregate`` (default ``"mean"``): a group's per-layer Δ is the mean over its examples of per-example Δ;
  ``"median"`` is the median; ``"pooled"`` is Δ of the group-mean perplexities.
- ``orientation`` per group: factual-degraded defaults to ``"up"`` (layers where the persona RAISES the gold
  answer's perplexity most rank first, the notes' App. B reading), personalized-beneficial to ``"down"`` (layers
  where the persona LOWERS it most rank first); ``"abs"`` ranks by |Δ| (the notes' implementation sketch).
- Ranks are 1-based (1 = best); equal scores rank the lower layer index first.
- Fusion: reciprocal-rank fusion ``RRF_ℓ = Σ_groups 1 / (k + rank_ℓ)``, ``k = 60`` by default (Cormack et al.);
  L is the layer with the largest RRF, ties going to the lower layer index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from verl_personadual.eval.fpps.model_io import (
    decoder_parts,
    left_pad,
    on_layer_output,
    require_eval,
)

__all__ = [
    "Aggregate",
    "ContrastExample",
    "LayerSelection",
    "Orientation",
    "answer_ppl_by_layer",
    "layer_scores",
    "ppl_tables",
    "rank_layers",
    "reciprocal_rank_fusion",
    "relative_deviation",
    "select_layer",
]

Orientation = Literal["up", "down", "abs"]
Aggregate = Literal["mean", "median", "pooled"]


@dataclass(frozen=True)
class ContrastExample:
    """One example of a contrastive group, as token ids built by the caller: the prompt with the persona, the
    same prompt without it, and the gold answer (teacher-forced after either prompt). All three non-empty."""

    persona_prompt_ids: Sequence[int]
    plain_prompt_ids: Sequence[int]
    answer_ids: Sequence[int]


def _keep_columns(store: dict[int, torch.Tensor], index: int, lo: int, hi: int) -> Callable[[torch.Tensor], None]:
    """A layer-output callback storing ``hidden[:, lo:hi]`` as ``store[index]`` (no edit)."""

    def keep(hidden: torch.Tensor) -> None:
        store[index] = hidden[:, lo:hi]

    return keep


@torch.inference_mode()
def answer_ppl_by_layer(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    pad_id: int = 0,
) -> np.ndarray:
    """Logit-lens perplexity of ``answers[i]`` teacher-forced after ``prompts[i]``, at every layer.

    Returns float64 [n, num_layers]; entry [i, ℓ] = exp(mean negative log-likelihood of the answer tokens read
    from layer ℓ), >= 1. Batches are left-padded with explicit positions (``pad_id`` is never attended, so it
    does not change results); log-softmax runs in at least float32. One forward per batch of the base model
    (``model.model``), the head applied only at the answer positions, one layer at a time."""
    require_eval(model)
    parts = decoder_parts(model)
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(a) == 0 for a in answers):
        raise ValueError("every answer must hold at least one token")
    device = next(model.parameters()).device
    out = np.empty((len(prompts), parts.num_layers), dtype=np.float64)
    for start in range(0, len(prompts), batch_size):
        rows_p, rows_a = prompts[start : start + batch_size], answers[start : start + batch_size]
        if any(len(p) == 0 for p in rows_p):
            raise ValueError("every prompt must hold at least one token")
        batch = left_pad([[*p, *a] for p, a in zip(rows_p, rows_a)], pad_id, device)
        t_max = max(len(a) for a in rows_a)
        width = batch.ids.shape[1]
        # Rows end at the last column, so the positions predicting row i's answer are its last len(a_i) of the
        # t_max columns width - t_max - 1 .. width - 2; targets are right-aligned the same way.
        targets = torch.zeros((len(rows_a), t_max), dtype=torch.long)
        valid = torch.zeros((len(rows_a), t_max), dtype=torch.bool)
        for row, ans in enumerate(rows_a):
            targets[row, t_max - len(ans) :] = torch.tensor([int(t) for t in ans], dtype=torch.long)
            valid[row, t_max - len(ans) :] = True
        targets, valid = targets.to(device), valid.to(device)
        captured: dict[int, torch.Tensor] = {}
        with ExitStack() as stack:
            for index, block in enumerate(parts.layers):
                keep = _keep_columns(captured, index, width - t_max - 1, width - 1)
                stack.enter_context(on_layer_output(block, keep))
            model.model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, use_cache=False)
        counts = valid.sum(-1).to(torch.float64)
        for index in range(parts.num_layers):
            logits = parts.logit_lens(captured[index])
            logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
            nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(torch.float64)
            mean_nll = (nll * valid).sum(-1) / counts
            out[start : start + len(rows_a), index] = torch.exp(mean_nll).cpu().numpy()
    return out


def ppl_tables(
    model: nn.Module, examples: Sequence[ContrastExample], *, batch_size: int = 8, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(PPL with persona, PPL without persona), each float64 [n_examples, num_layers] (:func:`answer_ppl_by_layer`
    over the persona prompts and over the persona-free prompts, the same gold answers)."""
    answers = [e.answer_ids for e in examples]
    with_p = answer_ppl_by_layer(
        model, [e.persona_prompt_ids for e in examples], answers, batch_size=batch_size, pad_id=pad_id
    )
    without_p = answer_ppl_by_layer(
        model, [e.plain_prompt_ids for e in examples], answers, batch_size=batch_size, pad_id=pad_id
    )
    return with_p, without_p


def relative_deviation(ppl_with: np.ndarray, ppl_without: np.ndarray) -> np.ndarray:
    """Elementwise ``Δ = (PPL_with − PPL_without) / PPL_with`` (same shapes; perplexities > 0). Δ < 1 always."""
    ppl_with, ppl_without = np.asarray(ppl_with, dtype=np.float64), np.asarray(ppl_without, dtype=np.float64)
    if ppl_with.shape != ppl_without.shape:
        raise ValueError(f"shape mismatch: {ppl_with.shape} vs {ppl_without.shape}")
    if (ppl_with <= 0).any() or (ppl_without <= 0).any():
        raise ValueError("perplexities must be > 0")
    return (ppl_with - ppl_without) / ppl_with


def layer_scores(
    ppl_with: np.ndarray,
    ppl_without: np.ndarray,
    *,
    orientation: Orientation,
    aggregate: Aggregate = "mean",
) -> np.ndarray:
    """One group's per-layer score, higher = ranks first: [n, L] perplexity tables -> float64 [L].

    ``aggregate`` turns the group into one Δ per layer (mean / median of per-example Δ, or Δ of the mean
    perplexities); ``orientation`` maps it to a score: ``"up"`` Δ, ``"down"`` −Δ, ``"abs"`` |Δ|."""
    ppl_with, ppl_without = np.asarray(ppl_with, dtype=np.float64), np.asarray(ppl_without, dtype=np.float64)
    if ppl_with.ndim != 2 or ppl_with.shape[0] == 0:
        raise ValueError(f"perplexity tables must be [n >= 1, num_layers], got {ppl_with.shape}")
    if aggregate == "mean":
        delta = relative_deviation(ppl_with, ppl_without).mean(axis=0)
    elif aggregate == "median":
        delta = np.median(relative_deviation(ppl_with, ppl_without), axis=0)
    elif aggregate == "pooled":
        delta = relative_deviation(ppl_with.mean(axis=0), ppl_without.mean(axis=0))
    else:
        raise ValueError(f"aggregate must be 'mean', 'median' or 'pooled', got {aggregate!r}")
    if orientation == "up":
        return delta
    if orientation == "down":
        return -delta
    if orientation == "abs":
        return np.abs(delta)
    raise ValueError(f"orientation must be 'up', 'down' or 'abs', got {orientation!r}")


def rank_layers(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of layers by descending score (int64 [L]; 1 = highest score; ties: lower index first)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or np.isnan(scores).any():
        raise ValueError("scores must be a 1-D array without NaN")
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def reciprocal_rank_fusion(ranks: Sequence[np.ndarray], k: float = 60.0) -> np.ndarray:
    """``Σ_r 1 / (k + ranks_r)`` per layer over the given 1-based rank arrays (all [L]) -> float64 [L]; k >= 0."""
    if len(ranks) == 0 or k < 0:
        raise ValueError("need at least one ranking and k >= 0")
    stacked = np.stack([np.asarray(r, dtype=np.float64) for r in ranks])
    return (1.0 / (k + stacked)).sum(axis=0)


@dataclass(frozen=True)
class LayerSelection:
    """The chosen layer and how it was reached: per-group scores and ranks ([L] each) and the fused RRF [L]."""

    layer: int
    fact_scores: np.ndarray
    pers_scores: np.ndarray
    fact_ranks: np.ndarray
    pers_ranks: np.ndarray
    fused: np.ndarray


def select_layer(
    fact_ppl: tuple[np.ndarray, np.ndarray],
    pers_ppl: tuple[np.ndarray, np.ndarray],
    *,
    k: float = 60.0,
    fact_orientation: Orientation = "up",
    pers_orientation: Orientation = "down",
    aggregate: Aggregate = "mean",
) -> LayerSelection:
    """Layer L from the (PPL with, PPL without) tables of the factual-degraded and the personalized-beneficial
    groups (each [n_group, num_layers], as :func:`ppl_tables` returns): rank layers within each group by
    :func:`layer_scores`, fuse with :func:`reciprocal_rank_fusion`, take the largest (ties: lower index)."""
    fact_scores = layer_scores(*fact_ppl, orientation=fact_orientation, aggregate=aggregate)
    pers_scores = layer_scores(*pers_ppl, orientation=pers_orientation, aggregate=aggregate)
    if fact_scores.shape != pers_scores.shape:
        raise ValueError(f"the groups disagree on the number of layers: {fact_scores.shape} vs {pers_scores.shape}")
    fact_ranks, pers_ranks = rank_layers(fact_scores), rank_layers(pers_scores)
    fused = reciprocal_rank_fusion([fact_ranks, pers_ranks], k=k)
    return LayerSelection(
        layer=int(np.argmax(fused)),
        fact_scores=fact_scores,
        pers_scores=pers_scores,
        fact_ranks=fact_ranks,
        pers_ranks=pers_ranks,
        fused=fused,
    )
