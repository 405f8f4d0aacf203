"""Loading the plugin changes nothing in verl until it is used (real verl, fresh interpreters, plugin on vs off).

"off" is verl's own switch ``VERL_USE_EXTERNAL_PLUGINS=none``. Each probe prints one JSON line.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

OFF = {"VERL_USE_EXTERNAL_PLUGINS": "none"}

#: verl modules that hold the registries the plugin adds to, and two more registry holders it leaves alone.
REGISTRY_MODULES = (
    "verl.trainer.ppo.core_algos",
    "verl.trainer.ppo.v1",
    "verl.experimental.agent_loop",
    "verl.workers.engine",
    "verl.workers.rollout",
    "verl.workers.reward_manager",
    "verl.checkpoint_engine",
)


def run_probe(code: str, **env: str) -> tuple[dict, str]:
    """Run ``code`` in a fresh interpreter (no VERL_PLATFORM, no external modules); (its JSON line, its stderr)."""
    base = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# --- import verl, then choose a platform -------------------------------------------------------------------------

PLATFORM_PROBE = """
import json, os, sys
import verl
from verl.plugin.platform import platform_manager
count = sum(1 for m in sys.modules if m.startswith("verl."))
resolved = platform_manager._current_platform is not None
os.environ["VERL_PLATFORM"] = {platform!r}
from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name, get_vendor
try:
    p = platform_manager.get_platform()
    platform = [type(p).__module__ + "." + type(p).__qualname__, get_device_name(), get_vendor(),
                get_nccl_backend(), get_resource_name()]
except Exception as exc:  # e.g. huawei without torch_npu: the same error with and without the plugin
    platform = ["error", type(exc).__name__, str(exc)]
print(json.dumps({{"verl_modules": count, "resolved_at_import": resolved, "platform": platform}}))
"""


@pytest.fixture(scope="module")
def amd_runs() -> dict[str, dict]:
    code = PLATFORM_PROBE.format(platform="amd")
    return {"on": run_probe(code)[0], "off": run_probe(code, **OFF)[0]}


def test_import_verl_then_verl_platform_amd_is_verls_amd(amd_runs):
    # verl's ROCm platform: torch device "cuda", vendor "amd", NCCL (RCCL) process groups, Ray resource "GPU".
    expected = ["verl.plugin.platform.platform_rocm.PlatformROCm", "cuda", "amd", "nccl", "GPU"]
    assert amd_runs["off"]["platform"] == expected
    assert amd_runs["on"]["platform"] == expected


def test_import_verl_resolves_no_platform(amd_runs):
    assert amd_runs["off"]["resolved_at_import"] is False
    assert amd_runs["on"]["resolved_at_import"] is False


def test_import_verl_loads_at_most_twice_the_verl_modules(amd_runs):
    on, off = amd_runs["on"]["verl_modules"], amd_runs["off"]["verl_modules"]
    assert off > 0
    assert on <= 2 * off, f"plugin on: {on} verl modules, off: {off}"


@pytest.mark.parametrize("platform", ["huawei", "nvidia"])
def test_import_verl_then_verl_platform_is_the_same_with_and_without_plugin(platform):
    code = PLATFORM_PROBE.format(platform=platform)
    assert run_probe(code)[0]["platform"] == run_probe(code, **OFF)[0]["platform"]


def test_deferred_registrations_resolve_no_platform():
    # Importing the registry modules that do not fix verl's platform themselves runs three of the plugin's
    # deferred registrations (estimator, agent loops, hf_cpu); none may fix it either.
    code = (
        "import json, verl, verl.trainer.ppo.core_algos, verl.experimental.agent_loop, verl.workers.rollout\n"
        "from verl.plugin.platform import platform_manager\n"
        "from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY\n"
        "print(json.dumps([platform_manager._current_platform is None, 'dual_grpo' in ADV_ESTIMATOR_REGISTRY]))\n"
    )
    assert run_probe(code)[0] == [True, True]


# --- registries: verl's plus ours, nothing replaced ----------------------------------------------------------------

REGISTRY_PROBE = f"""
import functools, importlib, json, sys, types
import verl
for name in {REGISTRY_MODULES!r}:
    importlib.import_module(name)


def describe(value):
    # The defining object: module and qualified name (plus the line for a lambda or a local function).
    if isinstance(value, functools.partial):
        return "partial of " + describe(value.func)
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        text = value.__module__ + ":" + value.__qualname__
        if "<" in value.__qualname__ and hasattr(value, "__code__"):
            text += ":" + str(value.__code__.co_firstlineno)
        return text
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    return "instance of " + type(value).__module__ + ":" + type(value).__qualname__


def flatten(mapping, prefix=()):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from flatten(value, prefix + (repr(key),))
        else:
            yield "|".join(prefix + (repr(key),)), describe(value)


def registries():
    seen = set()
    for name, module in sorted(sys.modules.items()):
        if module is None or not name.startswith("verl."):
            continue
        for attr, value in list(vars(module).items()):
            found = []
            if isinstance(value, dict) and "registry" in attr.lower() and not attr.startswith("__"):
                found.append((name + "." + attr, value))
            if isinstance(value, type) and value.__module__ == name and "registry" in value.__name__.lower():
                found += [(name + "." + value.__qualname__ + "." + a, v) for a, v in vars(value).items()
                          if isinstance(v, dict) and not a.startswith("__")]
            for label, mapping in found:
                if id(mapping) not in seen:
                    seen.add(id(mapping))
                    yield label, mapping


print(json.dumps({{label: dict(flatten(mapping)) for label, mapping in registries()}}))
"""

#: What the plugin adds: (registry, key) -> the start of the value's description.
OURS = {
    (
        "verl.plugin.platform.platform_manager.PlatformRegistry._platforms",
        "'cpu'",
    ): "verl_personadual.core.cpu.platform:PlatformCPU",
    (
        "verl.trainer.ppo.core_algos.ADV_ESTIMATOR_REGISTRY",
        "'dual_grpo'",
    ): "verl_personadual.core.advantage:compute_dual_grpo_advantage",
    (
        "verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY",
        "'persona_dual_sync'",
    ): "verl_personadual.core.trainer:PersonaDualSyncTrainer",
    ("verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY", "'cpu_sync'"): "verl_personadual.core.trainer:CPUSyncTrainer",
    (
        "verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY",
        "'persona_dual_colocate_async'",
    ): "verl_personadual.core.trainer:PersonaDualColocateAsyncTrainer",
    (
        "verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY",
        "'persona_dual_separate_async'",
    ): "verl_personadual.core.trainer:PersonaDualSeparateAsyncTrainer",
    (
        "verl.experimental.agent_loop.agent_loop._agent_loop_registry",
        "'personadual_forced'|'_target_'",
    ): "'verl_personadual.core.rollout.ForcedModeAgentLoop'",
    (
        "verl.experimental.agent_loop.agent_loop._agent_loop_registry",
        "'personadual_free'|'_target_'",
    ): "'verl_personadual.core.rollout.FreeModeAgentLoop'",
    (
        "verl.workers.engine.base.EngineRegistry._engines",
        "'language_model'|'fsdp'|'cpu'",
    ): "verl_personadual.core.cpu.engine:CPUFSDPEngineWithLMHead",
    (
        "verl.workers.engine.base.EngineRegistry._engines",
        "'language_model'|'fsdp2'|'cpu'",
    ): "verl_personadual.core.cpu.engine:CPUFSDPEngineWithLMHead",
    (
        "verl.workers.rollout.base._ROLLOUT_REGISTRY",
        "('hf_cpu', 'async')",
    ): "'verl_personadual.core.cpu.rollout.HFRolloutAdapter'",
    (
        "verl.workers.rollout.replica.RolloutReplicaRegistry._registry",
        "'hf_cpu'",
    ): "verl_personadual.core.cpu.backend:<lambda>:",
    (
        "verl.checkpoint_engine.base.CheckpointEngineRegistry._registry",
        "'gloo'",
    ): "verl_personadual.core.cpu.checkpoint_engine:GlooCheckpointEngine",
}


@pytest.fixture(scope="module")
def registry_runs() -> dict[str, tuple[dict, str]]:
    return {"on": run_probe(REGISTRY_PROBE), "off": run_probe(REGISTRY_PROBE, **OFF)}


def test_registries_are_verls_plus_ours(registry_runs):
    on, off = registry_runs["on"][0], registry_runs["off"][0]
    assert set(on) == set(off), "the plugin changed which registries exist"
    for label in off:
        # every entry verl has without the plugin is there, with the same object
        assert {k: on[label][k] for k in off[label] if k in on[label]} == off[label], label
        assert set(off[label]) <= set(on[label]), f"{label}: entries removed"
    added = {(label, key): on[label][key] for label in on for key in set(on[label]) - set(off[label])}
    assert set(added) == set(OURS)
    for entry, start in OURS.items():
        assert added[entry].startswith(start), (entry, added[entry])


def test_verls_import_warnings_are_not_silenced(registry_runs):
    # verl warns about each optional training engine that is not installed as verl.workers.engine imports.
    def engine_warnings(stderr: str) -> list[str]:
        return sorted(line.strip() for line in stderr.splitlines() if "engine is not available" in line)

    off = engine_warnings(registry_runs["off"][1])
    assert off, "verl warned about no missing optional engine: nothing to compare"
    assert engine_warnings(registry_runs["on"][1]) == off


def test_registries_are_complete_whatever_is_imported_first():
    # A Ray worker unpickling one of our classes imports our module first; the registrations still all land.
    for first in ("verl_personadual.core.cpu.rollout", "verl_personadual.core.cpu.workers"):
        code = f"import {first}\n" + REGISTRY_PROBE
        on = run_probe(code)[0]
        for label, key in OURS:
            assert key in on[label], (first, label, key)


# --- the CPU fallback warning ---------------------------------------------------------------------------------------

FALLBACK_PROBE = """
import json, verl
from verl.plugin.platform import get_platform
from verl.plugin.platform.platform_manager import PlatformRegistry
names = [get_platform().device_name for _ in range(3)]
import verl.trainer.ppo.v1  # verl's trainer and engines call get_platform() as they import
print(json.dumps(names))
"""

# A second detection in the same process (verl detects once; this calls the probe verl's detection calls).
DETECT_AGAIN = "assert PlatformRegistry.get('cpu')().is_platform_available(use_smi_check=True)\n"

WARNING_START = (
    "verl_personadual: no accelerator platform is available (probed: nvidia, huawei, amd) and this host shows no GPU "
    "(torch sees no CUDA device, no /dev/nvidia* file), so verl runs on the CPU platform 'cpu'."
)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "no accelerator platform is available" in line]


@pytest.mark.skipif(
    torch.cuda.is_available() or bool(glob.glob("/dev/nvidia*")), reason="never the CPU platform on a GPU host"
)
def test_cpu_fallback_warns_once_naming_verl_platform():
    result, stderr = run_probe(FALLBACK_PROBE + DETECT_AGAIN)
    assert result == ["cpu", "cpu", "cpu"]
    lines = warning_lines(stderr)
    assert len(lines) == 1, stderr
    assert WARNING_START in lines[0]
    assert "Set VERL_PLATFORM=cpu to choose it on purpose" in lines[0]
    assert "`nvidia-smi`" in lines[0]


def test_cpu_platform_asked_for_does_not_warn():
    result, stderr = run_probe(FALLBACK_PROBE, VERL_PLATFORM="cpu")
    assert result == ["cpu", "cpu", "cpu"]
    assert warning_lines(stderr) == []
