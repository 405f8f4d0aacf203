"""The run-cost estimate (verl_personadual.apps.cost) against arithmetic done by hand from the paper and the recipes.

Paper, Table 5/6: 9,998 RL rows, batch 64, 8 rollouts, prompt 2,048 + response 1,024, 5 epochs; 8,000 SFT rows,
batch 16, max length 4,096, 1 epoch.
"""

from __future__ import annotations

import functools
import math

import pytest
from omegaconf import DictConfig

from verl_personadual.apps import cost as C
from verl_personadual.apps.recipes import compose as R

QWEN3_8B_PARAMS = 36 * (4096 * 128 * (2 * 32 + 2 * 8) + 3 * 4096 * 12288) + 2 * 151_936 * 4096
LLAMA31_8B_PARAMS = 32 * (4096 * 128 * (2 * 32 + 2 * 8) + 3 * 4096 * 14336) + 2 * 128_256 * 4096
QWEN3_0P6B_PARAMS = 28 * (1024 * 128 * (2 * 16 + 2 * 8) + 3 * 1024 * 3072) + 151_936 * 1024  # tied


@functools.cache
def _composed(stage: str, backbone: str, extra: tuple[str, ...] = (), nnodes: int | None = None) -> DictConfig:
    val = ["v.parquet"] if stage == "rl" else []
    return R.compose(stage, R.build_overrides(stage, backbone, "m", ["t.parquet"], val, extra=extra, nnodes=nnodes))


def test_model_sizes_by_hand_match_the_published_ones():
    assert C.MODEL_SHAPES["qwen3_8b"].params == QWEN3_8B_PARAMS == 8_190_427_136  # "8.2B"
    assert C.MODEL_SHAPES["llama31_8b"].params == LLAMA31_8B_PARAMS == 8_029_995_008  # "8B"
    assert C.MODEL_SHAPES["qwen3_0p6b"].params == QWEN3_0P6B_PARAMS == 595_984_384  # "0.6B"
    q = C.MODEL_SHAPES["qwen3_8b"]
    assert q.matmul_params == QWEN3_8B_PARAMS - 151_936 * 4096
    assert q.kv_bytes_per_token == 2 * 36 * 8 * 128 * 2 == 147_456
    assert q.forward_flops(3072) == 2 * q.matmul_params * 3072 + 2 * 36 * 32 * 128 * 3072**2 == 49_281_528_496_128


@pytest.mark.parametrize("backbone", sorted(C.MODEL_SHAPES))
def test_rl_steps_tokens_and_checkpoints_by_hand(backbone):
    plan = C.rl_plan(_composed("rl", backbone), backbone, C.Assumptions())
    assert plan.steps_per_epoch == 9_998 // 64 == 156  # drop_last
    assert plan.total_steps == 156 * 5 == 780
    assert plan.warmup_steps == 78  # int(0.1 x 780)
    assert plan.sequences_per_step == 64 * 8 == 512
    assert plan.generated_tokens_per_step == 512 * 1024 == 524_288
    assert plan.trained_tokens_per_step == 512 * (2048 + 1024) == 1_572_864
    # validation before training, at 25, 50, ..., 775 (31 runs) and at the last step 780
    assert plan.validation_runs == 1 + 31 + 1 == 33
    # saves at 50, 100, ..., 750 (15) and at the last step 780; verl keeps the last 2
    assert (plan.saves, plan.checkpoints_kept, plan.checkpoint_peak) == (16, 2, 2)
    gpus = 1 if backbone == "qwen3_0p6b" else 8
    assert (plan.gpus, plan.tp) == (gpus, 1 if backbone == "qwen3_0p6b" else 2)


def test_mean_lengths_replace_the_maxima():
    a = C.Assumptions(mean_prompt_tokens=500, mean_response_tokens=300)
    plan = C.rl_plan(_composed("rl", "qwen3_8b"), "qwen3_8b", a)
    assert plan.generated_tokens_per_step == 512 * 300 == 153_600
    assert plan.trained_tokens_per_step == 512 * 800 == 409_600
    seq = C.MODEL_SHAPES["qwen3_8b"].forward_flops(800)
    assert plan.flops_per_step() == {
        "prefill": 512 * C.MODEL_SHAPES["qwen3_8b"].forward_flops(500),
        "log_prob": 2 * 512 * seq,
        "update": 3 * 512 * seq,
    }


def test_checkpoint_disk_by_hand():
    plan = C.rl_plan(_composed("rl", "qwen3_8b"), "qwen3_8b", C.Assumptions())
    assert plan.checkpoint_bytes == 12 * 8_190_427_136 == 98_285_125_632  # ~98 GB, fp32 weights + AdamW
    keep_all_cfg = _composed("rl", "qwen3_8b", ("trainer.max_actor_ckpt_to_keep=null",))
    keep_all = C.rl_plan(keep_all_cfg, "qwen3_8b", C.Assumptions())
    assert (keep_all.saves, keep_all.checkpoints_kept, keep_all.checkpoint_peak) == (16, 16, 16)  # 1.57 TB
    one = C.rl_plan(_composed("rl", "qwen3_8b", ("trainer.max_actor_ckpt_to_keep=1",)), "qwen3_8b", C.Assumptions())
    assert (one.checkpoints_kept, one.checkpoint_peak) == (1, 2)  # the old one stays until the new one is written


@pytest.mark.parametrize("nnodes", [1, 2, 4])
def test_rl_plan_on_1_2_4_nodes(nnodes):
    plan = C.rl_plan(_composed("rl", "qwen3_8b", nnodes=nnodes), "qwen3_8b", C.Assumptions())
    assert plan.gpus == 8 * nnodes and plan.replicas == 4 * nnodes
    assert plan.total_steps == 780  # the data decide the steps, not the GPUs
    assert plan.sequences_per_step // plan.replicas == {1: 128, 2: 64, 4: 32}[nnodes]


def test_vllm_kv_cache_holds_a_full_step_at_tp_2_and_at_tp_1():
    """Issue item 4: on an 80 GB GPU at gpu_memory_utilization 0.6, both TP 1 and the recipe's TP 2 hold every
    sequence of a step (at the maximum length) in the KV cache at once."""
    cfg = _composed("rl", "qwen3_8b")
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 2
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.6
    shape, a100 = C.MODEL_SHAPES["qwen3_8b"], C.GPUS["a100-80gb"]
    per_sequence = 147_456 * 3072
    tp2 = (2 * (80 * 0.6 - 2) * 2**30 - 2 * QWEN3_8B_PARAMS) // per_sequence
    tp1 = (1 * (80 * 0.6 - 2) * 2**30 - 2 * QWEN3_8B_PARAMS) // per_sequence
    assert (tp2, tp1) == (181, 72)
    assert C.kv_capacity_sequences(shape, a100, 0.6, 2, 3072) == 181 >= 512 // 4
    assert C.kv_capacity_sequences(shape, a100, 0.6, 1, 3072) == 72 >= 512 // 8
    llama = C.MODEL_SHAPES["llama31_8b"]
    assert C.kv_capacity_sequences(llama, a100, 0.6, 1, 3072) >= 64


def test_rl_step_time_by_hand():
    a100, plan = C.GPUS["a100-80gb"], C.rl_plan(_composed("rl", "qwen3_8b"), "qwen3_8b", C.Assumptions())
    compute = 8 * 312e12 * 0.3
    t = C.rl_step_seconds(plan, a100, C.Assumptions())
    prefill = 512 * (2 * 7_568_097_280 * 2048 + 2 * 36 * 32 * 128 * 2048**2) / compute
    decode_step = (2 * QWEN3_8B_PARAMS + 128 * 147_456 * (2048 + 512)) / (2 * 2.04e12 * 0.5)  # 1 wave of 128
    assert t["generation"] == pytest.approx(prefill + 1024 * decode_step)
    assert t["generation"] == pytest.approx(54.52, abs=0.01)
    assert t["training"] == pytest.approx(5 * 512 * 49_281_528_496_128 / compute)
    measured = C.Assumptions(mfu=0.5, gen_tokens_per_s=1000)
    t = C.rl_step_seconds(plan, a100, measured)
    assert t["generation"] == pytest.approx(524_288 / (8 * 1000))
    assert t["training"] == pytest.approx(5 * 512 * 49_281_528_496_128 / (8 * 312e12 * 0.5))
    assert t["validation"] == pytest.approx(500 * 1024 / (8 * 1000))


def test_kv_cache_smaller_than_a_step_runs_in_waves():
    """0.6B on one 24 GB GPU at 40 %: the KV cache holds 17 of the 512 sequences, so decoding takes 31 waves."""
    a10, plan = C.GPUS["a10-24gb"], C.rl_plan(_composed("rl", "qwen3_0p6b"), "qwen3_0p6b", C.Assumptions())
    fits = int((22.5 * 0.4 - 2) * 2**30 - 2 * QWEN3_0P6B_PARAMS) // (2 * 28 * 8 * 128 * 2 * 3072)
    assert fits == C.kv_capacity_sequences(plan.shape, a10, 0.4, 1, 3072) == 17
    t = C.rl_step_seconds(plan, a10, C.Assumptions(gen_tokens_per_s=None))
    prefill = 512 * plan.shape.forward_flops(2048) / (125e12 * 0.3)
    step = (2 * QWEN3_0P6B_PARAMS + 17 * 114_688 * 2560) / (0.60e12 * 0.5)
    assert t["generation"] == pytest.approx(prefill + math.ceil(512 / 17) * 1024 * step)


@pytest.mark.parametrize("nnodes,steps", [(1, 500), (2, 500)])
def test_sft_steps_by_hand(nnodes, steps):
    plan = C.sft_plan(_composed("sft", "qwen3_8b", nnodes=nnodes), "qwen3_8b", 8_000, None)
    # (8,000 // dp) // (16 // dp): dp 8 -> 1,000 // 2; dp 16 -> 500 // 1
    assert (plan.steps_per_epoch, plan.total_steps) == (steps, steps)
    assert plan.tokens_per_step == 16 * 4096 == 65_536
    assert plan.flops_per_step() == 3 * 16 * C.MODEL_SHAPES["qwen3_8b"].forward_flops(4096)


def test_cli_prints_the_table(capsys):
    assert C.main(["--backbone", "llama31_8b", "--", "trainer.total_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "156 steps/epoch (drop_last); 312 steps in total" in out
    assert "524,288 generated; 1,572,864 through each of old log-prob, reference and update" in out
    assert "| a800-80gb |" in out and "| h100-80gb |" in out and "| a10-24gb |" not in out  # 8B: 80 GB GPUs
    assert "7 saves x 96.4 GB" in out  # 50..300 and 312
    assert C.main(["--backbone", "qwen3_0p6b", "--stage", "sft", "--train-rows", "100"]) == 0
    out = capsys.readouterr().out
    assert "100 rows -> 6 steps/epoch of 16 rows" in out and "| a10-24gb |" in out  # one GPU: 100 // 16
    with pytest.raises(SystemExit) as done:
        C.main(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--mfu", "--hbm-efficiency", "--gen-tokens-per-s", "--mean-response-tokens", "--train-rows"):
        assert flag in help_text
