"""FPPS probe ("Factuality Entanglement Prober") and the soft variants' steering vector.

Features: the layer-L state (``model_io`` indexing: output of decoder block L) of the LAST PROMPT TOKEN of the
personalized prompt, no answer appended (at inference the probe sees only the prompt, so training features are
taken the same way). Labels: factual-degraded = 1, personalized-beneficial = 0. Model:
``p̂ = σ(W·h + b)``, scikit-learn ``LogisticRegression`` (L2 penalty, lbfgs, ``random_state=seed``).
Open details, all parameters of :func:`fit_probe`: regularisation strength ``C`` (default 1.0), feature
standardisation (default on: fitted on the training features and folded into W and b, so :class:`Probe` always
applies to raw states), class weighting (default none, plain binary cross-entropy as in the paper).

Steering vector ``s_f = m_fact − m_pers`` (:func:`steering_vector`): each group's mean over examples of the
per-example mean layer-L state over the RESPONSE tokens' positions (positions whose input token is a response
token), as :func:`response_mean_states` reads them. Which prompts and responses the caller passes decides what
the means are (the notes: factual queries run without the persona, personalized queries with it). No
normalisation by default (the paper mentions none); ``normalize=True`` scales s_f to unit L2 norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from verl_personadual.eval.fpps.model_io import decoder_parts, left_pad, on_layer_output, require_eval

__all__ = [
    "Probe",
    "fit_probe",
    "last_prompt_states",
    "last_prompt_states_by_layer",
    "response_mean_states",
    "steering_vector",
]


@torch.inference_mode()
def _layer_rows(
    model: nn.Module,
    seqs: Sequence[Sequence[int]],
    layer: int,
    pool: Callable[[torch.Tensor, int], torch.Tensor],
    batch_size: int,
    pad_id: int,
) -> np.ndarray:
    """``pool(states_i, i)`` for every sequence i, stacked to float64 [n, d]: ``states_i`` [S_i, d] is the
    layer-``layer`` output over row i's real (unpadded) tokens, read in left-padded batches."""
    require_eval(model)
    parts = decoder_parts(model)
    parts.check_layer(layer)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        batch = left_pad(chunk, pad_id, device)
        captured: list[torch.Tensor] = []
        with on_layer_output(parts.layers[layer], captured.append):
            model.model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, use_cache=False)
        states = captured[0].to(torch.float64)
        for row, seq in enumerate(chunk):
            rows.append(pool(states[row, states.shape[1] - len(seq) :], start + row).cpu().numpy())
    if not rows:
        raise ValueError("no sequences given")
    return np.stack(rows)


def last_prompt_states(
    model: nn.Module, prompts: Sequence[Sequence[int]], layer: int, *, batch_size: int = 8, pad_id: int = 0
) -> np.ndarray:
    """Layer-``layer`` output at the last token of each (non-empty) prompt: float64 [n, d], the probe's features."""
    return _layer_rows(model, prompts, layer, lambda states, _i: states[-1], batch_size, pad_id)


@torch.inference_mode()
def last_prompt_states_by_layer(
    model: nn.Module, prompts: Sequence[Sequence[int]], *, batch_size: int = 8, pad_id: int = 0
) -> np.ndarray:
    """Every layer's output at the last token of each (non-empty) prompt, in one forward per batch: float64
    [n, num_layers, d]; ``[:, layer]`` equals :func:`last_prompt_states` at that layer."""
    require_eval(model)
    parts = decoder_parts(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("need at least one prompt, each holding at least one token")
    device = next(model.parameters()).device
    chunks: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        batch = left_pad(prompts[start : start + batch_size], pad_id, device)
        captured: dict[int, torch.Tensor] = {}
        with ExitStack() as stack:
            for index, block in enumerate(parts.layers):
                stack.enter_context(on_layer_output(block, _keep_last(captured, index)))
            model.model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, use_cache=False)
        stacked = torch.stack([captured[i] for i in range(parts.num_layers)], dim=1)
        chunks.append(stacked.to(torch.float64).cpu().numpy())
    return np.concatenate(chunks)


def _keep_last(store: dict[int, torch.Tensor], index: int) -> Callable[[torch.Tensor], None]:
    """A layer-output callback storing the last column ``hidden[:, -1]`` as ``store[index]`` (no edit)."""

    def keep(hidden: torch.Tensor) -> None:
        store[index] = hidden[:, -1]

    return keep


def response_mean_states(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 8,
    pad_id: int = 0,
) -> np.ndarray:
    """Per example, the mean layer-``layer`` output over the positions of its response tokens, with the response
    teacher-forced after the prompt (both non-empty): float64 [n, d]."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if any(len(r) == 0 for r in responses):
        raise ValueError("every response must hold at least one token")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt must hold at least one token")
    seqs = [[*p, *r] for p, r in zip(prompts, responses)]
    return _layer_rows(
        model, seqs, layer, lambda states, i: states[-len(responses[i]) :].mean(dim=0), batch_size, pad_id
    )


@dataclass(frozen=True)
class Probe:
    """``p̂(h) = σ(weight · h + bias)`` on raw layer-L states: weight float64 [d], bias a float."""

    weight: np.ndarray
    bias: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """p̂ in (0, 1) for features [n, d] (float64 [n]) or [d] (float64 [1])."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"features have dim {x.shape[1]}, the probe {self.weight.shape[0]}")
        z = x @ self.weight + self.bias
        return np.exp(-np.logaddexp(0.0, -z))


def fit_probe(
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    C: float = 1.0,
    standardize: bool = True,
    class_weight: str | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> Probe:
    """Logistic regression with positives (factual-degraded, label 1) [n1, d] against negatives
    (personalized-beneficial, label 0) [n0, d], both n >= 1. With ``standardize`` the features are z-scored
    (zero-variance dimensions left unscaled) and the scaler folded into the returned raw-space weight and bias.
    ``class_weight`` is passed to scikit-learn (``None`` or ``"balanced"``). Deterministic for fixed inputs."""
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1] or len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need positives [n1>=1, d] and negatives [n0>=1, d], got {pos.shape} and {neg.shape}")
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if standardize:
        scaler = StandardScaler().fit(x)
        mean, scale = scaler.mean_, scaler.scale_
    clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed)
    clf.fit((x - mean) / scale, y)
    coef = clf.coef_[0] / scale
    return Probe(weight=coef, bias=float(clf.intercept_[0] - coef @ mean))


def steering_vector(fact_states: np.ndarray, pers_states: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """``s_f = mean(fact_states) − mean(pers_states)`` over examples ([n1, d], [n2, d] -> float64 [d]); with
    ``normalize`` divided by its L2 norm (ValueError if that is 0)."""
    fact, pers = np.asarray(fact_states, dtype=np.float64), np.asarray(pers_states, dtype=np.float64)
    if fact.ndim != 2 or pers.ndim != 2 or fact.shape[1] != pers.shape[1] or len(fact) == 0 or len(pers) == 0:
        raise ValueError(f"need states [n1>=1, d] and [n2>=1, d], got {fact.shape} and {pers.shape}")
    vector = fact.mean(axis=0) - pers.mean(axis=0)
    if normalize:
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            raise ValueError("the steering vector is zero; it cannot be normalised")
        vector = vector / norm
    return vector
