"""GPU-facing recipe settings (issue 17): disk, memory, speed and multi-node, checked on the composed configs.

Every value is composed exactly as ``main_ppo`` / ``sft_trainer`` would see it and, where verl has a check,
run through verl's own code. Expected numbers are written out by hand from the paper (Table 6: batch 64,
8 rollouts, prompt 2048, response 1024) and the backbone files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from verl_personadual.apps.recipes import cli as recipes_cli
from verl_personadual.apps.recipes import compose as R
from verl_personadual.apps.recipes import launch as recipes_launch
from verl_personadual.apps.recipes import validate as recipes_validate

EIGHT_B = ["qwen3_8b", "llama31_8b"]
SMALL = "qwen3_0p6b"
#: Every backbone for a GPU machine (the cpu_* backbones set trainer.device=cpu; tests/apps/test_recipes.py covers
#: them).
GPU_BACKBONES = [b for b in R.backbones("rl") if not b.startswith("cpu_")]
#: Paper: prompt 2048 + response 1024.
LONGEST = 2048 + 1024
#: Backbone -> (actor token budget, log-prob token budget) per GPU with dynamic batching.
TOKEN_BUDGETS = {"qwen3_8b": (16384, 32768), "llama31_8b": (16384, 32768), SMALL: (6144, 12288)}


@functools.cache
def _composed(stage: str, backbone: str, extra: tuple[str, ...], nnodes: int | None, model: str) -> DictConfig:
    val = ["/data/val.parquet"] if stage == "rl" else []
    overrides = R.build_overrides(
        stage, backbone, model, ["/data/train.parquet"], val, output_dir="/out", extra=extra, nnodes=nnodes
    )
    return R.compose(stage, overrides)


def composed(stage: str, backbone: str, *extra: str, nnodes: int | None = None, model: str = "/m") -> DictConfig:
    """A fresh copy of the composed recipe (composition is cached; tests may mutate their copy)."""
    return _composed(stage, backbone, tuple(extra), nnodes, model).copy()


def verl_validate_rl(cfg: DictConfig) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


# --- 1. checkpoint disk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ablation", R.ablations())
@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_rl_keeps_the_last_two_actor_checkpoints(backbone, ablation):
    cfg = composed("rl", backbone, f"ablation={ablation}")
    assert cfg.trainer.max_actor_ckpt_to_keep == 2
    assert cfg.trainer.save_freq == 50
    keep_all = composed("rl", backbone, "trainer.max_actor_ckpt_to_keep=null")
    assert keep_all.trainer.max_actor_ckpt_to_keep is None


# --- 2. vLLM context length --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_max_model_len_is_prompt_plus_response(backbone):
    cfg = composed("rl", backbone)
    assert cfg.actor_rollout_ref.rollout.max_model_len == LONGEST == 3072
    assert cfg.data.max_prompt_length + cfg.data.max_response_length == LONGEST
    assert cfg.actor_rollout_ref.rollout.prompt_length + cfg.actor_rollout_ref.rollout.response_length == LONGEST
    from verl.utils.config import omega_conf_to_dataclass

    assert omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout).max_model_len == 3072  # as the vLLM server reads it


def test_longer_responses_need_a_longer_max_model_len():
    with pytest.raises(ValueError, match=r"max_model_len=3072 must be >= .* = 4096"):
        recipes_validate.validate("rl", composed("rl", "qwen3_8b", "data.max_response_length=2048"))
    longer = ("data.max_response_length=2048", "actor_rollout_ref.rollout.max_model_len=4096")
    recipes_validate.validate("rl", composed("rl", "qwen3_8b", *longer))


# --- 3. dynamic batching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_dynamic_batching_is_on_for_actor_rollout_and_ref_together(backbone):
    cfg = composed("rl", backbone)
    arr = cfg.actor_rollout_ref
    assert arr.actor.use_dynamic_bsz is True
    assert arr.rollout.log_prob_use_dynamic_bsz is True and arr.ref.log_prob_use_dynamic_bsz is True
    actor_budget, log_prob_budget = TOKEN_BUDGETS[backbone]
    assert arr.actor.ppo_max_token_len_per_gpu == actor_budget
    assert arr.rollout.log_prob_max_token_len_per_gpu == arr.ref.log_prob_max_token_len_per_gpu == log_prob_budget
    assert min(actor_budget, log_prob_budget) >= LONGEST
    recipes_validate.validate("rl", cfg)


@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_fixed_micro_batch_fallback_switches_all_three_off(backbone):
    cfg = composed("rl", backbone, "actor_rollout_ref.actor.use_dynamic_bsz=false")
    arr = cfg.actor_rollout_ref
    assert (arr.actor.use_dynamic_bsz, arr.rollout.log_prob_use_dynamic_bsz, arr.ref.log_prob_use_dynamic_bsz) == (
        False,
        False,
        False,
    )
    micro = {"qwen3_8b": (4, 8), "llama31_8b": (4, 8), SMALL: (2, 4)}[backbone]
    assert (arr.actor.ppo_micro_batch_size_per_gpu, arr.rollout.log_prob_micro_batch_size_per_gpu) == micro
    assert arr.ref.log_prob_micro_batch_size_per_gpu == micro[1]
    verl_validate_rl(cfg)  # verl's fixed-batch checks: micro batches set, 64 x 8 divisible by the GPU count
    recipes_validate.validate("rl", cfg)


def test_dynamic_batching_mismatch_and_small_budgets_are_refused():
    with pytest.raises(ValueError, match="together"):
        recipes_validate.validate(
            "rl", composed("rl", "qwen3_8b", "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=false")
        )
    with pytest.raises(ValueError, match=r"below one full sequence .* 3072.*ppo_max_token_len_per_gpu': 2048"):
        recipes_validate.validate(
            "rl", composed("rl", "qwen3_8b", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=2048")
        )


# --- 5. reference model dtype ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_reference_model_is_loaded_in_bf16_and_actor_stays_fp32(backbone):
    import torch
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.torch_dtypes import PrecisionType

    cfg = composed("rl", backbone)
    ref = omega_conf_to_dataclass(cfg.actor_rollout_ref.ref.fsdp_config)
    assert ref.forward_only is True and PrecisionType.to_dtype(ref.model_dtype) is torch.bfloat16
    assert PrecisionType.to_dtype(ref.dtype) is torch.bfloat16  # compute dtype: unchanged
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.fsdp_config)
    assert PrecisionType.to_dtype(actor.model_dtype) is torch.float32  # fp32 master weights for AdamW


# --- 9. multi-node -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nnodes", [1, 2, 4])
@pytest.mark.parametrize("backbone", EIGHT_B)
def test_rl_on_1_2_4_nodes_divides_evenly(backbone, nnodes):
    cfg = composed("rl", backbone, nnodes=nnodes)
    assert cfg.trainer.nnodes == nnodes and cfg.trainer.n_gpus_per_node == 8
    gpus = 8 * nnodes
    # Hand arithmetic: one step = 64 prompts x 8 rollouts = 512 sequences = one PPO mini-batch.
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == 512
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n == 512
    assert 512 % gpus == 0 and 512 // gpus == {1: 64, 2: 32, 4: 16}[nnodes]  # sequences per GPU per step
    assert gpus // cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == {1: 4, 2: 8, 4: 16}[nnodes]
    recipes_validate.validate("rl", cfg)
    verl_validate_rl(composed("rl", backbone, "actor_rollout_ref.actor.use_dynamic_bsz=false", nnodes=nnodes))
    if nnodes > 1:
        assert cfg.ray_kwargs.ray_init.address == "auto"
    else:
        assert "address" not in cfg.ray_kwargs.ray_init


def test_rl_on_3_nodes_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"512 sequences do not split evenly over 24 data-parallel ranks"):
        recipes_validate.validate("rl", composed("rl", "qwen3_8b", nnodes=3))


def test_plugin_env_var_reaches_ray_workers_on_every_node():
    """main_ppo merges the recipe's runtime_env into its defaults and passes it to ray.init (main_ppo.py:62-74)."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    cfg = composed("rl", "qwen3_8b", nnodes=2)
    defaults = get_ppo_ray_runtime_env(cfg)
    merged = OmegaConf.merge(defaults, cfg.ray_kwargs.ray_init.get("runtime_env", {}))
    assert merged.env_vars.VERL_USE_EXTERNAL_MODULES == recipes_launch.RUN_ENV["VERL_USE_EXTERNAL_MODULES"]
    assert set(defaults["env_vars"]) < set(merged.env_vars)  # verl's own worker variables are kept


@pytest.mark.parametrize("nnodes,ok", [(1, True), (2, True), (4, False)])
def test_sft_batch_of_16_splits_over_at_most_2_nodes(nnodes, ok):
    cfg = composed("sft", "qwen3_8b", nnodes=nnodes)
    assert cfg.trainer.nnodes == nnodes and cfg.data.train_batch_size == 16
    if ok:
        recipes_validate.validate("sft", cfg)
        assert 16 // (8 * nnodes) == {1: 2, 2: 1}[nnodes]  # rows per GPU per step
    else:
        with pytest.raises(ValueError, match=r"train_batch_size=16 does not split evenly over 32 data-parallel"):
            recipes_validate.validate("sft", cfg)


def test_sft_multi_node_launch_uses_torchrun_rendezvous():
    cfg = composed("sft", "llama31_8b", nnodes=2)
    command = recipes_launch.launch_command("sft", cfg, ["x=1"], rdzv_endpoint="node0:29400")
    assert command[: command.index("-m")] == [
        "torchrun",
        "--nnodes=2",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=node0:29400",
        f"--rdzv_id={R.experiment_name('sft', 'llama31_8b')}",
    ]
    assert command[command.index("-m") + 1] == "verl.trainer.sft_trainer" and command[-1] == "x=1"
    with pytest.raises(ValueError, match="--rdzv-endpoint"):
        recipes_launch.launch_command("sft", cfg, [])
    single = recipes_launch.launch_command("sft", composed("sft", "llama31_8b"), [])
    assert single[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8"]


def test_cli_nnodes_sets_the_overrides(tmp_path):
    overrides = R.build_overrides("rl", "qwen3_8b", "/m", ["/t.parquet"], ["/v.parquet"], nnodes=2)
    assert overrides[-2:] == ["trainer.nnodes=2", "+ray_kwargs.ray_init.address=auto"]
    sft = R.build_overrides("sft", "qwen3_8b", "/m", ["/t.parquet"], nnodes=2)
    assert sft[-1] == "trainer.nnodes=2"
    with pytest.raises(ValueError, match="nnodes"):
        R.build_overrides("rl", "qwen3_8b", "/m", ["/t.parquet"], ["/v.parquet"], nnodes=0)


# --- 7. SFT rows over data.max_length ----------------------------------------------------------------------------


def _conversation(words: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "I am a nurse. My question is: which vitamin? " + "answer " * words},
        {"role": "assistant", "content": '[General_mode] Vitamin C. {"answer": "B"}'},
    ]


@pytest.fixture()
def sft_file(tmp_path: Path) -> Path:
    """Three SFT rows; row 1 is long."""
    path = tmp_path / "sft.parquet"
    pd.DataFrame({"messages": [_conversation(2), _conversation(80), _conversation(5)]}).to_parquet(path)
    return path


def _lengths_by_hand(tokenizer_dir: Path) -> list[int]:
    """Whole-conversation template lengths: equal to verl's per-message concatenation for this template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    convs = [_conversation(w) for w in (2, 80, 5)]
    return [len(tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]) for c in convs]


def test_sft_length_check_finds_the_long_row(sft_file, tiny_model_dir, tokenizer_dir):
    expected = _lengths_by_hand(tokenizer_dir)
    limit = (expected[0] + expected[1]) // 2
    assert expected[0] <= limit < expected[1] and expected[2] <= limit
    cfg = composed("sft", "llama31_8b", f"data.max_length={limit}", model=str(tiny_model_dir))
    cfg.data.train_files = str(sft_file)
    assert recipes_validate.sft_token_lengths(cfg, str(sft_file)) == expected
    found = recipes_validate.find_overlong_rows(cfg)
    assert found["val"] == []
    assert found["train"] == [recipes_validate.OverlongRows(str(sft_file), 3, limit, ((1, expected[1]),))]
    assert found["train"][0].describe() == f"{sft_file}: 1 of 3 rows (row 1: {expected[1]} tokens)"


def test_sft_launch_is_refused_with_file_and_row(sft_file, tiny_model_dir, tokenizer_dir, tmp_path, capsys):
    limit = sum(_lengths_by_hand(tokenizer_dir)[:2]) // 2
    args = ["sft", "--backbone", "llama31_8b", "--model", str(tiny_model_dir), "--train-files", str(sft_file)]
    # one GPU and a batch the 3 rows fill: plan_run checks the batch before the row lengths
    extra = ["--", f"data.max_length={limit}", "data.train_batch_size=2", "trainer.n_gpus_per_node=1"]
    rc = recipes_cli.main([*args, "--output-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"SFT rows longer than data.max_length={limit}" in err and f"{sft_file}: 1 of 3 rows (row 1:" in err
    assert "--drop-overlong" in err
    assert not (tmp_path / "out").exists()


def test_sft_drop_overlong_writes_a_copy_without_the_row(sft_file, tiny_model_dir, tokenizer_dir, tmp_path):
    expected = _lengths_by_hand(tokenizer_dir)
    limit = (expected[0] + expected[1]) // 2
    cfg = composed("sft", "llama31_8b", f"data.max_length={limit}", model=str(tiny_model_dir))
    cfg.data.train_files = str(sft_file)
    (found,) = recipes_validate.find_overlong_rows(cfg)["train"]
    out = recipes_validate.drop_overlong_rows(found, tmp_path / "kept.parquet")
    kept, source = pd.read_parquet(out), pd.read_parquet(sft_file)
    assert len(kept) == 2
    rows = [[dict(message) for message in conversation] for conversation in kept["messages"]]
    assert rows == [_conversation(2), _conversation(5)]
    assert source.dtypes.to_dict() == kept.dtypes.to_dict()
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest == {
        "source": str(sft_file),
        "max_length": limit,
        "rows": 3,
        "kept": 2,
        "dropped": [{"row": 1, "tokens": expected[1]}],
    }
    cfg.data.train_files = str(out)
    assert recipes_validate.find_overlong_rows(cfg)["train"][0].over == ()
