"""verl's FSDP engine registered for device ``cpu`` (verl registers it for ``cuda`` and ``npu`` only).

Registered through verl's public ``EngineRegistry.register(..., device="cpu")`` for both ``fsdp`` and ``fsdp2``;
only ``fsdp2`` works on CPU (FSDP1 needs an accelerator for ``sync_module_states``), which the CPU recipes set.

One CPU difference: verl wraps every forward-only FSDP2 module (the reference policy) in
``CPUOffloadPolicy(pin_memory=True)``; pinning memory needs an accelerator. On the CPU, offloading to the CPU means
nothing, so a forward-only module without an explicit offload policy is built as if it were not forward-only (no
offload policy) and the flag is restored at once: no optimizer is built for it, everything else is verl's.
"""

from __future__ import annotations

from typing import Any

from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_personadual.core.cpu.platform import PLATFORM_NAME

__all__ = ["CPUFSDPEngineWithLMHead"]


@EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)
class CPUFSDPEngineWithLMHead(FSDPEngineWithLMHead):
    """verl's ``FSDPEngineWithLMHead`` on CPU tensors and gloo (see the module docstring)."""

    def _build_fsdp_module(self, module: Any) -> Any:
        cfg = self.engine_config
        if not (cfg.strategy == "fsdp2" and cfg.forward_only and not cfg.offload_policy):
            return super()._build_fsdp_module(module)
        cfg.forward_only = False
        try:
            return super()._build_fsdp_module(module)
        finally:
            cfg.forward_only = True
