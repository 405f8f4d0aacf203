"""A verl platform named ``cpu``, registered with verl's public ``PlatformRegistry``.

verl resolves its platform once per process, on the first ``get_platform()`` call (``trainer/constants_ppo.py``
calls one at import time). The plugin entry point (``verl_personadual.core.plugin``) imports this module inside
``import verl``, before anything can call ``get_platform()``, so a plain ``python -m verl.trainer.main_ppo`` and
every Ray worker (which imports verl when it unpickles a verl class) see the platform in time. Neither this module
nor the plugin resolves the platform.

Selection: the CPU platform is chosen only when asked or when the host provably has no GPU.

- Asked: ``VERL_PLATFORM=cpu`` (verl then never probes). ``trainer.device=cpu`` and the CPU recipe backbones
  (``cpu_tiny``, ``cpu_toy``) set it for the driver and their Ray workers (``apps/recipes/launch.run_env``,
  ``ray_kwargs.ray_init.runtime_env``).
- Without it verl auto-detects: it probes the registered platforms in registration order (nvidia, huawei, amd,
  then this one) and falls back to ``nvidia`` when none says yes. This platform says yes only when no other
  registered platform does *and* the host shows no NVIDIA GPU (:func:`choose_platform`): torch sees no CUDA device
  and there is no ``/dev/nvidia*`` device file (:class:`GPUFacts`). verl's own CUDA probe says no whenever
  ``nvidia-smi`` is not on the PATH (GPU containers started with ``NVIDIA_DRIVER_CAPABILITIES=compute``, CPU-only
  Ray actors of a GPU cluster, whose ``CUDA_VISIBLE_DEVICES`` is empty); on such a host verl keeps its ``nvidia``
  fallback and the plugin logs :data:`GPU_HOST_WARNING` once per process. When this platform is picked by
  auto-detection it logs :data:`FALLBACK_WARNING` once per process.

Contract: device ``cpu`` for every tensor, process groups on ``gloo``. Ray has no accelerator on such a machine
and verl's resource pools require one ("GPU" or "NPU", ``single_controller/ray/base.py``), so this platform
reports the Ray resource ``GPU`` and the CPU recipes start Ray with that many *logical* GPUs
(``ray_kwargs.ray_init.num_gpus``); nothing uses CUDA.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_personadual.core.cpu.vllm_settings import vllm_cpu_env
from verl_personadual.core.names import CPU_DEVICE

__all__ = [
    "PLATFORM_NAME",
    "FALLBACK_PLATFORM",
    "NVIDIA_DEVICE_FILES",
    "FALLBACK_WARNING",
    "GPU_HOST_WARNING",
    "GPUFacts",
    "PlatformChoice",
    "probe_gpu",
    "choose_platform",
    "accelerators_available",
    "PlatformCPU",
    "CPUDeviceModule",
]

#: verl platform name (``VERL_PLATFORM``) and torch device type.
PLATFORM_NAME = CPU_DEVICE

#: The platform verl falls back to when no registered platform's probe says yes
#: (``verl/plugin/platform/platform_manager.py``, ``_detect_platform_name``).
FALLBACK_PLATFORM = "nvidia"

#: Device files of the NVIDIA driver: present on a GPU host even in a process that sees no CUDA device.
NVIDIA_DEVICE_FILES = "/dev/nvidia*"

#: Logged (logger ``verl_personadual``) once per process when verl picks this platform by auto-detection;
#: ``{probed}`` is the list of the other registered platforms.
FALLBACK_WARNING = (
    "verl_personadual: no accelerator platform is available (probed: {probed}) and this host shows no GPU "
    f"(torch sees no CUDA device, no {NVIDIA_DEVICE_FILES} file), so verl runs on the CPU platform "
    f"'{PLATFORM_NAME}'. Set VERL_PLATFORM={PLATFORM_NAME} to choose it on purpose (no warning then). "
    "If this machine has a GPU, check the setup: `nvidia-smi`, "
    "`python -c 'import torch; print(torch.cuda.is_available())'`."
)

#: Logged once per process when no registered platform's probe says yes but the host shows a GPU (``{evidence}``),
#: so this platform declines and verl falls back to :data:`FALLBACK_PLATFORM`.
GPU_HOST_WARNING = (
    "verl_personadual: no accelerator platform's probe succeeded (probed: {probed}; verl's nvidia probe needs "
    "`nvidia-smi`), but {evidence}: not choosing the CPU platform, verl falls back to "
    f"'{FALLBACK_PLATFORM}'. Set VERL_PLATFORM={PLATFORM_NAME} to run on the CPU on purpose."
)

_logger = logging.getLogger("verl_personadual")
_warn_lock = threading.Lock()
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` at WARNING unless this process logged it already."""
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    _logger.warning(message)


@dataclass(frozen=True)
class GPUFacts:
    """What this host shows of an NVIDIA GPU.

    Attributes:
        torch_cuda: ``torch.cuda.is_available()`` in this process.
        device_files: the NVIDIA device files present (:data:`NVIDIA_DEVICE_FILES`), sorted; a CPU-only Ray actor
            of a GPU node sees no CUDA device (``CUDA_VISIBLE_DEVICES`` empty) but these files.
    """

    torch_cuda: bool
    device_files: tuple[str, ...] = ()

    def evidence(self) -> str:
        """Why this host has a GPU, in words; ``""`` when it shows none."""
        found = []
        if self.torch_cuda:
            found.append("torch sees a CUDA device")
        if self.device_files:
            shown = ", ".join(self.device_files[:3]) + (", ..." if len(self.device_files) > 3 else "")
            found.append(f"NVIDIA device files exist ({shown})")
        return " and ".join(found)


def probe_gpu() -> GPUFacts:
    """This host's :class:`GPUFacts`."""
    return GPUFacts(torch.cuda.is_available(), tuple(sorted(glob.glob(NVIDIA_DEVICE_FILES))))


@dataclass(frozen=True)
class PlatformChoice:
    """The verl platform name a process resolves, and why (one line)."""

    name: str
    reason: str


def choose_platform(requested: str, available: Sequence[str], gpu: GPUFacts) -> PlatformChoice:
    """The platform verl's ``get_platform()`` resolves with this plugin loaded, from the facts it depends on.

    Args:
        requested: ``VERL_PLATFORM`` ("" when unset), which verl takes as it is.
        available: the registered platforms other than this one whose verl probe
            (``is_platform_available(use_smi_check=True)``) says yes, in registration order.
        gpu: the host's GPU facts.

    verl takes ``requested``, else the first of ``available``; else this platform when ``gpu`` shows no GPU;
    else verl's fallback :data:`FALLBACK_PLATFORM` (never this platform on a GPU host).
    """
    if requested:
        return PlatformChoice(requested, f"VERL_PLATFORM={requested}")
    if available:
        return PlatformChoice(available[0], f"verl's probe detects platform {available[0]!r}")
    evidence = gpu.evidence()
    if evidence:
        return PlatformChoice(
            FALLBACK_PLATFORM,
            f"no platform's probe succeeded (verl's nvidia probe needs `nvidia-smi`), but {evidence}: verl's "
            f"fallback {FALLBACK_PLATFORM!r}, not the CPU platform",
        )
    return PlatformChoice(
        PLATFORM_NAME,
        f"no platform's probe succeeded, torch sees no CUDA device and there is no {NVIDIA_DEVICE_FILES} file: "
        "the CPU platform",
    )


def accelerators_available(use_smi_check: bool = True) -> tuple[list[str], list[str]]:
    """(the registered platforms other than this one, those whose verl probe says yes), in registration order; a
    probe that raises counts as no, as in verl's detection."""
    probed, available = [], []
    for name in PlatformRegistry.registered_names():
        cls = PlatformRegistry.get(name)
        if cls is None or cls is PlatformCPU:
            continue
        probed.append(name)
        try:
            if cls().is_platform_available(use_smi_check=use_smi_check):
                available.append(name)
        except Exception:
            continue
    return probed, available


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

    #: The host's GPU facts (:func:`probe_gpu`); replaced to simulate a host, e.g. a GPU host in tests.
    gpu_probe: ClassVar[Callable[[], GPUFacts]] = staticmethod(probe_gpu)

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """True when no other registered platform is available and the host shows no GPU (:func:`choose_platform`;
        verl probes this platform last); logs :data:`FALLBACK_WARNING` or, on a GPU host,
        :data:`GPU_HOST_WARNING` (each once per process)."""
        probed, available = accelerators_available(use_smi_check)
        if available:
            return False
        gpu = PlatformCPU.gpu_probe()
        if choose_platform("", available, gpu).name == PLATFORM_NAME:
            _warn_once(FALLBACK_WARNING.format(probed=", ".join(probed) or "none"))
            return True
        _warn_once(GPU_HOST_WARNING.format(probed=", ".join(probed) or "none", evidence=gpu.evidence()))
        return False

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
