"""CPU-ONLY TEST SETUP: verl 0.9.1's own SFT trainer trains a tiny random Qwen3 on build_sft output.

The run uses the project's SFT recipe (``recipes/config/persona_dual_sft.yaml``, backbone ``qwen3_0p6b``) composed
by ``verl_personadual.recipes`` and ``verl.trainer.sft_trainer.SFTTrainer`` unchanged. verl has no CPU platform, so
this file carries test-only workarounds (verl-notes §6), none of which production runs need:

1. a ``PlatformBase`` subclass registered as ``cpu`` (``VERL_PLATFORM=cpu``) whose device module is ``torch.cpu``
   plus no-op memory queries;
2. ``VERL_ENGINE_DEVICE=cuda``: verl registers its FSDP engine for cuda/npu only;
3. ``torch.distributed.init_process_group("gloo")`` here instead of ``run_sft``'s backend string;
4. overrides: ``engine.strategy=fsdp2`` (FSDP1 needs an accelerator), sdpa attention (flash-attention is the
   default), no torch.compile, float32, no remove-padding / offload / gradient checkpointing, tiny batches,
   2 steps, model-only checkpoint.

The trainer runs in a child process (``python tests/test_sft_trainer_cpu.py ...``) because the platform singleton,
the process group and the environment are process-wide.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
STEPS = 2


def _cpu_device_module() -> SimpleNamespace:
    import torch

    noop = lambda *a, **k: 0  # noqa: E731
    names = ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved",
             "reset_peak_memory_stats", "empty_cache", "set_device", "manual_seed", "manual_seed_all")
    mod = SimpleNamespace(**{n: noop for n in names})
    mod.mem_get_info = lambda *a, **k: (0, 0)
    mod.get_device_name = lambda *a, **k: "cpu"
    for n in ("current_device", "device_count", "is_available", "synchronize", "Stream", "stream",
              "current_stream", "Event"):
        if hasattr(torch.cpu, n):
            setattr(mod, n, getattr(torch.cpu, n))
    return mod


def _register_cpu_platform() -> None:
    import torch
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):  # test-only
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = _cpu_device_module()

        def is_available(self) -> bool:
            return True

        def current_device(self):
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:
            return None

        def synchronize(self, device_index=None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return (None, None)

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "CPU"

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self):
            return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(model_dir: str, train_file: str, val_file: str, out_dir: str) -> None:
    """Child process: compose the SFT recipe with the CPU overrides and run verl's SFTTrainer for STEPS steps."""
    os.environ.update(VERL_PLATFORM="cpu", VERL_ENGINE_DEVICE="cuda", MASTER_ADDR="127.0.0.1",
                      RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", CUDA_VISIBLE_DEVICES="")
    _register_cpu_platform()
    import torch.distributed as dist
    from verl.trainer.sft_trainer import SFTTrainer

    from verl_personadual import recipes

    overrides = recipes.build_overrides("sft", "qwen3_0p6b", model_dir, [train_file], [val_file], output_dir=out_dir)
    overrides += [
        "trainer.device=cpu", "engine.strategy=fsdp2", "engine.use_torch_compile=false", "engine.dtype=float32",
        "engine.param_offload=false", "engine.optimizer_offload=false",
        "+model.override_config.attn_implementation=sdpa", "model.use_remove_padding=false",
        "model.enable_gradient_checkpointing=false", "data.use_dynamic_bsz=false", "data.train_batch_size=2",
        "data.micro_batch_size_per_gpu=1", "data.max_length=4096", "data.num_workers=0",
        f"trainer.total_training_steps={STEPS}", "checkpoint.save_contents=[model]", "optim.lr=1e-3",
    ]
    cfg = recipes.compose("sft", overrides)
    dist.init_process_group("gloo")
    try:
        trainer = SFTTrainer(cfg)
        trainer.fit()
    finally:
        dist.destroy_process_group()


def test_verl_sft_trainer_trains_tiny_model_on_cpu(tiny_model_dir, tmp_path):
    """CPU-ONLY TEST SETUP (see module docstring): 2 optimizer steps + validation + checkpoint on CPU."""
    from openai_server import OpenAITestServer

    from data_preprocess import build_sft

    data = tmp_path / "sft"
    with OpenAITestServer(reply=lambda body: 'Short reasoning.\n{"answer": "A"}') as srv:
        assert build_sft.main(["--samples", "--out", str(data), "--llm-base-url", srv.base_url, "--llm-model", "m",
                               "--llm-cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    out = tmp_path / "ckpt"
    # VERL_USE_EXTERNAL_PLUGINS=none: the SFT stage needs none of our registrations, and the plugin's imports
    # would resolve verl's platform before the child registers the CPU one.
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none", "MASTER_PORT": str(_free_port()), "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, str(tiny_model_dir), str(data / "train.parquet"),
         str(data / "validation.parquet"), str(out)],
        capture_output=True, text=True, timeout=110, env=env, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Final validation metrics: {'val/loss'" in log, log[-4000:]
    step_dir = out / f"global_step_{STEPS}"
    assert step_dir.is_dir(), sorted(p.name for p in out.iterdir())
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)
    losses = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step:(\d+) - .*?train/loss:([\d.]+)", log)}
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(0.0 < v < 20.0 for v in losses.values()), losses
    assert (step_dir / "model_world_size_1_rank_0.pt").is_file()
    assert (step_dir / "huggingface" / "tokenizer_config.json").is_file()


if __name__ == "__main__":
    _train(*sys.argv[1:5])
