"""vLLM worker extension that lets verl's weight sync load the actor into vLLM's CPU build.

Selected by config only: ``actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls`` (the
``recipes/config/cpu_rollout/vllm.yaml`` sets it, selected by ``+cpu_rollout=vllm``; verl spreads
``engine_kwargs`` over its own default of this argument). Importing this module needs vLLM.

Why: after loading a checkpoint, vLLM's CPU build pre-packs every unquantized linear weight into a oneDNN handle and
leaves the layer's ``weight`` parameter empty (``process_weights_after_loading``). verl's sync calls
``model.load_weights`` on those parameters and fails (``Attempted to load weight ... into parameter
(torch.Size([0]))``). Before each sync this extension puts every such layer back in checkpoint format from the
records vLLM keeps for its own layer-wise reload; verl then loads the weights and runs
``process_weights_after_loading`` once, which packs them again, exactly as after the first load. On a GPU nothing
is pre-packed and this extension is never selected.

It also logs, per sync, how many tensors arrived and their float64 checksum (the sum of all their elements) -
what verl sent, i.e. the actor's gathered full weights - in the same form as the ``hf_cpu`` server, so a test
or a user can match a sync against a saved checkpoint.

Private vLLM and verl names used here are listed in ``verl_personadual.core.verl_private`` and tested against the
installed versions.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

__all__ = ["CPUVLLMWorkerExtension", "SYNC_LOG_FORMAT"]

logger = logging.getLogger(__name__)

#: The line printed after every weight sync (tests parse it).
SYNC_LOG_FORMAT = "[vllm-cpu] weight sync {sync}: {tensors} tensors, checksum {checksum!r}; {restored} layers unpacked"


class CPUVLLMWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated vLLM worker extension, with pre-packed CPU layers restored before each weight sync."""

    def restore_checkpoint_format(self) -> int:
        """Put every layer whose parameters no longer have their checkpoint shapes back in checkpoint format
        (fresh tensors of the recorded shapes, to be overwritten by the sync). Returns how many layers."""
        from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info
        from vllm.model_executor.model_loader.reload.meta import (
            materialize_layer,
            restore_layer_on_meta,
        )

        restored = 0
        for layer in self.model_runner.model.modules():
            params = dict(layer.named_parameters(recurse=False))
            if not params:
                continue
            info = get_layerwise_info(layer)
            recorded, _ = info.restore_metadata
            if any(
                name in params and tuple(params[name].shape) != tuple(meta.shape) for name, meta in recorded.items()
            ):
                restore_layer_on_meta(layer, info)
                materialize_layer(layer, info)
                restored += 1
        return restored

    @torch.no_grad()
    def update_weights_from_ipc(
        self, peft_config: dict | None = None, base_sync_done: bool = False, use_shm: bool = False
    ):
        restored = self.restore_checkpoint_format()
        self._sync_tensors, self._sync_checksum = 0, 0.0
        result = super().update_weights_from_ipc(
            peft_config=peft_config, base_sync_done=base_sync_done, use_shm=use_shm
        )
        self._syncs = getattr(self, "_syncs", 0) + 1
        print(
            SYNC_LOG_FORMAT.format(
                sync=self._syncs, tensors=self._sync_tensors, checksum=self._sync_checksum, restored=restored
            ),
            flush=True,
        )
        return result

    def _update_weights(self, weights: list[tuple[str, torch.Tensor]], peft_config: dict, base_sync_done: bool) -> Any:
        self._sync_tensors += len(weights)
        self._sync_checksum += float(sum(t.double().sum() for _, t in weights))
        return super()._update_weights(weights, peft_config=peft_config, base_sync_done=base_sync_done)
