"""``--dtype auto`` on a checkpoint saved the way verl saves one: verl's FSDP checkpoint manager builds the model with
``from_config(config, torch_dtype=torch.bfloat16)`` on empty weights and ``save_pretrained(dir, state_dict=...)`` with
the fp32 training weights, so config.json says bfloat16 over fp32 safetensors shards. The harness must compute in
the shards' fp32 (``eval.generate`` module docstring, Dtype)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from verl_personadual.eval.generate import DecodingParams, HFGenerator, stored_dtype


@pytest.fixture(scope="module")
def verl_saved(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("verl_saved")
    state = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    # the lines of verl 0.9.1's FSDPCheckpointManager.save_checkpoint (hf_model branch)
    with init_empty_weights():
        save_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir), dtype=torch.bfloat16)
    save_model.to_empty(device="cpu")
    save_model.save_pretrained(out, state_dict=state)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, out / name)
    return out


def test_verl_saved_checkpoint_is_bf16_config_over_fp32_shards(verl_saved: Path):
    config = json.loads((verl_saved / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert stored_dtype(str(verl_saved)) == "float32"


def test_dtype_auto_computes_in_the_shards_fp32(verl_saved: Path, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    gen = HFGenerator(str(verl_saved), DecodingParams(max_new_tokens=4), device="cpu", dtype="auto")
    assert gen.model.dtype == torch.float32
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        assert torch.equal(gen.model(ids).logits, reference(ids).logits)


def test_explicit_dtype_still_wins(verl_saved: Path):
    gen = HFGenerator(str(verl_saved), DecodingParams(max_new_tokens=4), device="cpu", dtype="bfloat16")
    assert gen.model.dtype == torch.bfloat16


def test_stored_dtype_is_none_without_local_shards(tmp_path: Path):
    assert stored_dtype(str(tmp_path)) is None
    assert stored_dtype("Qwen/Qwen3-8B") is None
