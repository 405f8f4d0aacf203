"""FPPS steering ("Adaptive Knowledge Steering Module"): batched greedy generation with FPPS-H, FPPS-S or FPPS-M
applied to the output of decoder block L (``model_io`` indexing, 0-based).

Per row, p̂ = σ(W·h_L + b) is computed ONCE, at prefill, from the layer-L state of the last persona-prompt token
(read before any edit; the notes leave per-token re-probing open, the paper's "final token" wording suggests once
per query). From p̂ (with ``τ``, ``γ``, the probe's s_f):

- FPPS-H (``"hard"``): if p̂ ≥ τ the layer-L output is REPLACED by the layer-L output of a second, persona-free
  stream at the same step; otherwise left as is.
- FPPS-S (``"soft"``): ``h + γ·(p̂ − 0.5)·s_f``.
- FPPS-M (``"mixed"``): hard if p̂ ≥ τ, soft otherwise.

Steered positions. Only positions that choose a generated token are edited: each generated token fed back, and
(``steer_first_token=True``, the default) the last prompt position, whose output chooses the first generated
token. All other prompt positions are never edited. With ``steer_first_token=False`` the first token is chosen
unsteered (a literal reading of "generated positions"). Edits at layer L change only layers above L (and, through
the KV cache, later positions' upper layers), never the layer-L outputs themselves before the edit.

Lockstep persona-free stream (hard and mixed): the persona-free prompt is prefilled in its own batch with its own
DynamicCache, and at every step it is fed the SAME token the steered persona stream chose; its layer-L output at
that step is what a hard-gated row's persona stream receives. It is run for the whole batch (prefill always for
these variants, since p̂ is not known before; decode steps only while some row is hard-gated), so hard and mixed
cost up to twice the forwards of plain decoding. The persona-free stream itself is never edited.

Decoding: greedy (argmax, lowest id on ties, as ``torch.argmax``), left-padded batches with an attention mask and
explicit position ids counting real tokens, so a row's result does not depend on its batch; KV caches for both
streams; one token per step for every row until each row has emitted an eos id or ``max_new_tokens`` tokens.
Needs a model whose forward accepts ``logits_to_keep`` (Qwen2/Qwen3/Llama do).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import nn

from verl_personadual.eval.fpps.model_io import decoder_parts, left_pad, on_layer_output, require_eval
from verl_personadual.eval.fpps.probe import Probe

__all__ = ["VARIANTS", "FppsConfig", "FppsGeneration", "Variant", "fpps_generate"]

Variant = Literal["hard", "soft", "mixed"]
VARIANTS: tuple[Variant, ...] = ("hard", "soft", "mixed")


@dataclass(frozen=True)
class FppsConfig:
    """One FPPS system: the variant, layer L (0-based decoder block output), the probe, threshold ``tau`` (hard
    when p̂ ≥ tau; hard and mixed), strength ``gamma >= 0`` and steering vector s_f (float [d]; soft and mixed)."""

    variant: Variant
    layer: int
    probe: Probe
    tau: float = 0.5
    gamma: float = 1.0
    steering_vector: np.ndarray | None = None
    steer_first_token: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if self.variant != "hard":
            if self.steering_vector is None:
                raise ValueError(f"FPPS variant {self.variant!r} needs a steering vector")
            if np.shape(self.steering_vector) != np.shape(self.probe.weight):
                raise ValueError(
                    f"steering vector shape {np.shape(self.steering_vector)} != probe weight shape "
                    f"{np.shape(self.probe.weight)}"
                )


@dataclass(frozen=True)
class FppsGeneration:
    """One row's result: generated ids (eos excluded, at most max_new_tokens), p̂, whether the row was hard-gated,
    the soft coefficient γ·(p̂ − 0.5) it received (0.0 when none), and whether it stopped on an eos id."""

    token_ids: list[int]
    p_hat: float
    hard: bool
    soft_coef: float
    hit_eos: bool


def _edit(
    hidden: torch.Tensor, free: torch.Tensor | None, hard: torch.Tensor, delta: torch.Tensor | None
) -> torch.Tensor:
    """Steered states: ``hidden`` [B, T, d] plus ``delta`` [B, d] (if any) at every position, then replaced by
    ``free`` [B, T, d] in the rows where ``hard`` [B] is True (if ``free`` is given)."""
    out = hidden if delta is None else hidden + delta[:, None, :]
    if free is not None:
        out = torch.where(hard[:, None, None], free, out)
    return out


def _unchanged(_hidden: torch.Tensor) -> None:
    """The layer-output callback that edits nothing."""


@torch.inference_mode()
def fpps_generate(
    model: nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    config: FppsConfig,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int],
    pad_id: int,
) -> list[FppsGeneration]:
    """Greedy generation of every (persona prompt ids, persona-free prompt ids) pair under ``config``; one
    :class:`FppsGeneration` per pair, in order. Rows are independent: the same pair gives the same tokens in any
    batch (up to floating-point reduction order). The generated ids are those chosen by the steered persona
    stream; the persona-free prompt is only used by the hard branch. ``pad_id`` fills padding and finished rows'
    inputs and is never attended. Model in eval mode; ValueError on an empty batch, an empty prompt,
    ``max_new_tokens < 1`` or a layer out of range."""
    require_eval(model)
    parts = decoder_parts(model)
    block = parts.layers[parts.check_layer(config.layer)]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    persona = left_pad([p for p, _ in pairs], pad_id, device)
    weight = torch.as_tensor(config.probe.weight, dtype=torch.float64, device=device)
    vector = (
        None
        if config.variant == "hard"
        else torch.as_tensor(config.steering_vector, dtype=torch.float64, device=device)
    )
    may_hard = config.variant in ("hard", "mixed")
    batch = persona.ids.shape[0]
    ones = torch.ones((batch, 1), dtype=torch.long, device=device)
    captured: list[torch.Tensor] = []

    free_state: torch.Tensor | None = None
    if may_hard:
        free = left_pad([f for _, f in pairs], pad_id, device)
        with on_layer_output(block, captured.append):
            free_out = model.model(
                input_ids=free.ids, attention_mask=free.mask, position_ids=free.positions, use_cache=True
            )
        free_state, free_cache = captured.pop()[:, -1:], free_out.past_key_values
        free_mask, free_pos = free.mask, free.positions[:, -1:]

    decision: dict[str, torch.Tensor] = {}

    def prefill_edit(hidden: torch.Tensor) -> torch.Tensor | None:
        p_hat = torch.sigmoid(hidden[:, -1].to(torch.float64) @ weight + float(config.probe.bias))
        hard = (p_hat >= config.tau) if may_hard else torch.zeros_like(p_hat, dtype=torch.bool)
        coef = torch.zeros_like(p_hat) if vector is None else torch.where(hard, 0.0, config.gamma * (p_hat - 0.5))
        decision.update(p_hat=p_hat, hard=hard, coef=coef)
        if vector is not None:
            decision["delta"] = (coef[:, None] * vector[None, :]).to(hidden.dtype)
        if not config.steer_first_token:
            return None
        last = _edit(hidden[:, -1:], free_state, hard, decision.get("delta"))
        return torch.cat([hidden[:, :-1], last], dim=1)

    with on_layer_output(block, prefill_edit):
        out = model(
            input_ids=persona.ids,
            attention_mask=persona.mask,
            position_ids=persona.positions,
            use_cache=True,
            logits_to_keep=1,
        )
    cache, mask, pos = out.past_key_values, persona.mask, persona.positions[:, -1:]
    hard, delta = decision["hard"], decision.get("delta")
    use_free = may_hard and bool(hard.any())
    eos = torch.tensor(sorted({int(e) for e in eos_ids}), dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    hit_eos = [False] * batch
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    logits = out.logits[:, -1]
    for step in range(max_new_tokens):
        nxt = logits.argmax(dim=-1)
        is_eos = torch.isin(nxt, eos)
        for row, (tok, stop, finished) in enumerate(zip(nxt.tolist(), is_eos.tolist(), done.tolist())):
            if finished:
                continue
            if stop:
                hit_eos[row] = True
            else:
                tokens[row].append(tok)
        done = done | is_eos
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        feed = torch.where(done, pad_id, nxt)[:, None]
        if use_free:
            free_mask, free_pos = torch.cat([free_mask, ones], dim=1), free_pos + 1
            with on_layer_output(block, captured.append):
                model.model(
                    input_ids=feed,
                    attention_mask=free_mask,
                    position_ids=free_pos,
                    past_key_values=free_cache,
                    use_cache=True,
                )
            free_state = captured.pop()
        mask, pos = torch.cat([mask, ones], dim=1), pos + 1
        step_edit = partial(_edit, free=free_state if use_free else None, hard=hard, delta=delta)
        with on_layer_output(block, step_edit if delta is not None or use_free else _unchanged):
            out = model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1]
    return [
        FppsGeneration(
            token_ids=tokens[row],
            p_hat=float(decision["p_hat"][row]),
            hard=bool(hard[row]),
            soft_coef=float(decision["coef"][row]),
            hit_eos=hit_eos[row],
        )
        for row in range(batch)
    ]
