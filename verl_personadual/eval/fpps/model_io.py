"""Model access shared by the FPPS modules: the decoder parts, left-padded batches, a hook on one layer's output.

Layer indexing (used by every FPPS module): layer ``ℓ`` in ``0 .. num_layers - 1`` is the OUTPUT of decoder block
``model.model.layers[ℓ]`` (the residual stream after that block, before the final norm). This is
``output_hidden_states[ℓ + 1]`` of transformers for ``ℓ < num_layers - 1``; transformers' last entry is the
final-normed state, whereas here layer ``num_layers - 1`` is the un-normed output of the last block. Negative
indices are rejected. States are read and edited with forward hooks on the block itself, never through
``output_hidden_states``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verl_personadual.data.preflight import PreflightError

__all__ = ["DecoderParts", "LeftPadded", "decoder_parts", "left_pad", "on_layer_output", "require_eval"]


@dataclass(frozen=True)
class DecoderParts:
    """The three parts FPPS uses: decoder blocks, final norm, LM head (all owned by the model, not copies)."""

    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks; valid layer indices are ``0 .. num_layers - 1``."""
        return len(self.layers)

    def check_layer(self, layer: int) -> int:
        """``layer`` unchanged if it is in ``0 .. num_layers - 1``; ValueError otherwise."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be an int in 0..{self.num_layers - 1} (decoder block outputs), got {layer!r}")
        return layer

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``lm_head(norm(hidden))``: [..., d] -> [..., vocab]. For the last layer this is the model's own logits
        (for heads that apply nothing after ``lm_head``, as Qwen2/Qwen3/Llama)."""
        return self.lm_head(self.norm(hidden))


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The decoder blocks ``model.model.layers``, final norm ``model.model.norm`` and head ``model.lm_head`` of a
    Hugging Face decoder-only causal LM (Qwen2, Qwen3, Llama and their kin). PreflightError (a user error) naming
    what is missing for any other model."""
    name = type(model).__name__
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise PreflightError(
            f"{name}: FPPS needs a decoder-only causal LM whose decoder blocks are `model.model.layers` "
            "(a non-empty nn.ModuleList, as in Qwen2/Qwen3/Llama); this model has none"
        )
    norm = getattr(base, "norm", None)
    if not isinstance(norm, nn.Module):
        raise PreflightError(f"{name}: FPPS needs the final norm at `model.model.norm`; this model has none")
    lm_head = getattr(model, "lm_head", None)
    if not isinstance(lm_head, nn.Module):
        raise PreflightError(f"{name}: FPPS needs the LM head at `model.lm_head`; this model has none")
    return DecoderParts(layers=layers, norm=norm, lm_head=lm_head)


def require_eval(model: nn.Module) -> None:
    """ValueError if ``model`` is in training mode (dropout would make readouts and greedy decoding random)."""
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call model.eval() before FPPS")


@dataclass(frozen=True)
class LeftPadded:
    """A left-padded batch: ``ids``, ``mask`` (1 = real token) and ``positions`` are [B, S] int64 tensors.

    ``positions`` counts real tokens only (0 at each row's first real token; 0 on padding), so a row's positions
    and, with the mask, its results do not depend on how much padding the batch gave it."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str) -> LeftPadded:
    """Left-pad non-empty id sequences to the longest one. ValueError on an empty batch or an empty sequence."""
    if len(seqs) == 0:
        raise ValueError("empty batch")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("every sequence must hold at least one token")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor([int(t) for t in seq], dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return LeftPadded(ids=ids.to(device), mask=mask.to(device), positions=positions.to(device))


@contextmanager
def on_layer_output(block: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """While the context is open, call ``fn(hidden)`` on every output of ``block`` (hidden: [B, T, d], the block's
    output hidden state, whether the block returns a tensor or a tuple whose first item is it). If ``fn`` returns a
    tensor of the same shape it replaces the output (the rest of a tuple kept); ``None`` leaves it as is."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        new = fn(hidden)
        if new is None:
            return None
        if new.shape != hidden.shape:
            raise ValueError(f"layer edit changed the shape {tuple(hidden.shape)} -> {tuple(new.shape)}")
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
