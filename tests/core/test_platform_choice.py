"""The CPU platform only when asked or on a host that provably has no GPU (issue 33, item 3).

``choose_platform`` is checked on hand-written facts; then verl's real ``get_platform()`` (real registry, fresh
interpreters) with the host's GPU facts simulated through ``PlatformCPU.gpu_probe``, the plugin's injectable
probe. verl's own nvidia probe runs for real: on a host without ``nvidia-smi`` (this CPU machine, GPU containers
started with ``NVIDIA_DRIVER_CAPABILITIES=compute``, CPU-only Ray actors) it says no.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from verl_personadual.apps.recipes import compose as R
from verl_personadual.apps.recipes.launch import run_env
from verl_personadual.core.cpu.platform import GPUFacts, PlatformChoice, choose_platform

NO_GPU = GPUFacts(torch_cuda=False, device_files=())
TORCH_CUDA = GPUFacts(torch_cuda=True, device_files=())
#: A CPU-only Ray actor on a GPU node: CUDA_VISIBLE_DEVICES is empty, the driver's device files are there.
CPU_ACTOR = GPUFacts(torch_cuda=False, device_files=("/dev/nvidia0", "/dev/nvidiactl"))

CUDA_CLASS = "verl.plugin.platform.platform_cuda.PlatformCUDA"
CPU_CLASS = "verl_personadual.core.cpu.platform.PlatformCPU"


# --- the rule, on facts ------------------------------------------------------------------------------------------


def test_asked_for_cpu_on_a_gpu_host_is_cpu():
    assert choose_platform("cpu", [], TORCH_CUDA) == PlatformChoice("cpu", "VERL_PLATFORM=cpu")
    assert choose_platform("cpu", ["nvidia"], CPU_ACTOR).name == "cpu"


def test_torch_sees_cuda_without_nvidia_smi_is_never_cpu():
    # verl's nvidia probe says no without nvidia-smi: available is empty
    choice = choose_platform("", [], TORCH_CUDA)
    assert choice.name == "nvidia"
    assert "torch sees a CUDA device" in choice.reason


def test_cpu_only_actor_on_a_gpu_host_is_never_cpu():
    choice = choose_platform("", [], CPU_ACTOR)
    assert choice.name == "nvidia"
    assert "NVIDIA device files exist (/dev/nvidia0, /dev/nvidiactl)" in choice.reason


def test_host_without_any_gpu_is_cpu():
    choice = choose_platform("", [], NO_GPU)
    assert choice.name == "cpu"
    assert "torch sees no CUDA device and there is no /dev/nvidia* file" in choice.reason


def test_a_detected_platform_wins_in_registration_order():
    assert choose_platform("", ["huawei", "amd"], NO_GPU).name == "huawei"
    assert choose_platform("", ["nvidia"], TORCH_CUDA).name == "nvidia"
    assert choose_platform("amd", ["nvidia"], TORCH_CUDA).name == "amd"


# --- verl's real get_platform() ------------------------------------------------------------------------------------

RESOLVE = """
import json, sys, verl
from verl.plugin.platform import get_platform
from verl_personadual.core.cpu.platform import GPUFacts, PlatformCPU
facts = json.loads(sys.argv[1])
if facts is not None:
    PlatformCPU.gpu_probe = staticmethod(lambda: GPUFacts(facts[0], tuple(facts[1])))
p = get_platform()
print(json.dumps(type(p).__module__ + "." + type(p).__qualname__))
"""


def resolve(facts: GPUFacts | None, code: str = RESOLVE, **env: str) -> tuple[str, str]:
    """(the class of verl's platform in a fresh interpreter with ``facts`` simulated, its stderr)."""
    base = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")}
    arg = json.dumps(None if facts is None else [facts.torch_cuda, list(facts.device_files)])
    proc = subprocess.run(
        [sys.executable, "-c", code, arg], capture_output=True, text=True, env={**base, **env}, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def gpu_host_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "not choosing the CPU platform" in line]


no_nvidia_smi = pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="verl's nvidia probe says yes on a host with nvidia-smi"
)


@no_nvidia_smi
def test_verl_resolves_nvidia_when_torch_sees_cuda_without_nvidia_smi():
    platform, stderr = resolve(TORCH_CUDA)
    assert platform == CUDA_CLASS
    (line,) = gpu_host_warnings(stderr)
    assert "but torch sees a CUDA device: not choosing the CPU platform, verl falls back to 'nvidia'" in line


@no_nvidia_smi
def test_verl_resolves_nvidia_in_a_cpu_only_actor_on_a_gpu_host():
    platform, stderr = resolve(CPU_ACTOR, CUDA_VISIBLE_DEVICES="")
    assert platform == CUDA_CLASS
    (line,) = gpu_host_warnings(stderr)
    assert "NVIDIA device files exist (/dev/nvidia0, /dev/nvidiactl)" in line


@no_nvidia_smi
def test_verl_resolves_nvidia_when_torch_itself_reports_cuda():
    # No injection at all: torch.cuda.is_available() forced True as on a GPU container without nvidia-smi.
    code = "import torch\ntorch.cuda.is_available = lambda: True\n" + RESOLVE
    assert resolve(None, code)[0] == CUDA_CLASS


@pytest.mark.skipif(torch.cuda.is_available() or shutil.which("nvidia-smi") is not None, reason="a GPU host")
def test_verl_resolves_cpu_on_a_host_without_gpu():
    platform, stderr = resolve(NO_GPU)
    assert platform == CPU_CLASS
    assert gpu_host_warnings(stderr) == []


@pytest.mark.parametrize(
    ("stage", "backbone"), [("rl", "cpu_tiny"), ("rl", "cpu_toy"), ("sft", "cpu_tiny"), ("sft", "cpu_toy")]
)
def test_cpu_recipes_ask_for_cpu(stage, backbone):
    cfg = R.compose(stage, R.build_overrides(stage, backbone, "/m", ["/t.parquet"], ["/v.parquet"]))
    assert cfg.trainer.device == "cpu"
    assert run_env(cfg)["VERL_PLATFORM"] == "cpu"  # the launched driver (trainer.device=cpu)
    if stage == "rl":  # and every Ray worker
        assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"


def test_trainer_device_cpu_on_a_gpu_host_resolves_cpu():
    env = run_env(OmegaConf.create({"trainer": {"device": "cpu"}}))
    for facts in (TORCH_CUDA, CPU_ACTOR):
        platform, stderr = resolve(facts, VERL_PLATFORM=env["VERL_PLATFORM"])
        assert platform == CPU_CLASS
        assert gpu_host_warnings(stderr) == []


def test_gpu_recipe_does_not_ask_for_cpu():
    cfg = R.compose("rl", R.build_overrides("rl", "qwen3_0p6b", "/m", ["/t.parquet"], ["/v.parquet"]))
    assert "VERL_PLATFORM" not in run_env(cfg)
