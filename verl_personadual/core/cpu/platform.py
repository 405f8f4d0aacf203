"""A verl platform named ``cpu``, registered with verl's public ``PlatformRegistry``.

verl resolves its platform once per process, on the first ``get_platform()`` call (``trainer/constants_ppo.py``
calls one at import time). The plugin entry point (``verl_personadual.core.plugin``) imports this module inside
``import verl``, before anything can call ``get_platform()``, so a plain ``python -m verl.trainer.main_ppo`` and
every Ray worker (which imports verl when it unpickles a verl class) see the platform in time. Neither this module
nor the plugin resolves the platform.

Selection: ``VERL_PLATFORM=cpu`` selects it (the CPU backbones set it for the driver and their Ray workers).
Without it verl auto-detects: it probes the registered platforms in registration order (nvidia, huawei, amd, then
this one), and this platform reports itself available only when no other registered platform does, so a GPU
machine keeps its GPU platform and a machine without an accelerator gets ``cpu`` instead of verl's fallback to
``nvidia``. That fallback logs one warning per process (:data:`FALLBACK_WARNING`): on a GPU node whose CUDA setup is
broken it is the only sign that the run is on the CPU.

Contract: device ``cpu`` for every tensor, process groups on ``gloo``. Ray has no accelerator on such a machine
and verl's resource pools require one ("GPU" or "NPU", ``single_controller/ray/base.py``), so this platform
reports the Ray resource ``GPU`` and the CPU recipes start Ray with that many *logical* GPUs
(``ray_kwargs.ray_init.num_gpus``); nothing uses CUDA.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_personadual.core.cpu.vllm_settings import vllm_cpu_env
from verl_personadual.core.names import CPU_DEVICE

__all__ = ["PLATFORM_NAME", "FALLBACK_WARNING", "PlatformCPU", "CPUDeviceModule"]

#: verl platform name (``VERL_PLATFORM``) and torch device type.
PLATFORM_NAME = CPU_DEVICE

#: Logged (logger ``verl_personadual``) once per process when verl picks this platform because no other is
#: available; ``{probed}`` is the list of the other registered platforms.
FALLBACK_WARNING = (
    "verl_personadual: no accelerator platform is available (probed: {probed}), so verl runs on the CPU "
    f"platform '{PLATFORM_NAME}'. Set VERL_PLATFORM={PLATFORM_NAME} to choose it on purpose (no warning then). "
    "On a GPU machine set VERL_PLATFORM to its platform (e.g. nvidia) so that a broken setup fails instead of "
    "running on the CPU, and check the setup: `nvidia-smi`, "
    "`python -c 'import torch; print(torch.cuda.is_available())'`."
)

_logger = logging.getLogger("verl_personadual")
_fallback_lock = threading.Lock()
_fallback_warned = False


def _warn_fallback(probed: list[str]) -> None:
    global _fallback_warned
    with _fallback_lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    _logger.warning(FALLBACK_WARNING.format(probed=", ".join(probed) or "none"))


def _physical_memory() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


class CPUDeviceModule:
    """What verl calls on ``get_torch_device()`` (normally ``torch.cuda``), answered for the CPU.

    Memory queries report 0 bytes of accelerator memory in use (there is none) and the machine's memory for
    ``mem_get_info``; streams, events and counts come from ``torch.cpu``; seeding goes to torch's CPU generator.
    Any other attribute is looked up on ``torch.cpu`` and raises ``AttributeError`` if it has none.
    """

    def memory_allocated(self, *args: Any, **kwargs: Any) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    def memory_stats(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        return {}

    def mem_get_info(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        return _physical_memory()

    def reset_peak_memory_stats(self, *args: Any, **kwargs: Any) -> None:
        return None

    empty_cache = ipc_collect = reset_peak_memory_stats

    def set_device(self, *args: Any, **kwargs: Any) -> None:
        return None

    def get_device_name(self, *args: Any, **kwargs: Any) -> str:
        return PLATFORM_NAME

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def get_rng_state(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        torch.set_rng_state(state)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for machines without an accelerator (see the module docstring)."""

    _device_module = CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return PLATFORM_NAME

    @property
    def vendor_name(self) -> str:
        return PLATFORM_NAME

    @property
    def device_module(self) -> CPUDeviceModule:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """True when no other registered platform is available on this host (verl probes this one last); then
        logs :data:`FALLBACK_WARNING` (once per process)."""
        probed = []
        for name in PlatformRegistry.registered_names():
            cls = PlatformRegistry.get(name)
            if cls is None or cls is PlatformCPU:
                continue
            probed.append(name)
            try:
                if cls().is_platform_available(use_smi_check=use_smi_check):
                    return False
            except Exception:
                continue
        _warn_fallback(probed)
        return True

    def current_device(self) -> str:
        """``"cpu"``: verl passes this value as a torch device (``tensor.to(get_device_id())``); an index would
        mean a CUDA device to torch."""
        return PLATFORM_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return (None, None)

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        """Environment of verl's vLLM server actor (and so of its engine processes): the KV-cache space of vLLM's
        CPU build (``vllm_settings.vllm_cpu_env``; variables the user set are kept)."""
        return vllm_cpu_env()

    def cudart(self) -> None:
        return None
