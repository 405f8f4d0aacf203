"""The cost of a PersonaDual run, stated before it starts: steps, tokens, FLOPs, checkpoint disk and a rough time.

``python -m verl_personadual.apps.cost --backbone qwen3_8b [--stage rl|sft] [assumptions] [-- hydra overrides]``

Everything that the recipe decides (batch sizes, rollouts, lengths, epochs, GPUs, vLLM tensor parallel and memory
fraction, checkpoint policy) is read from the recipe composed exactly as ``verl_personadual.apps.recipes.compose``
composes it,
so overrides after ``--`` change the estimate as they would change the run. What the recipe cannot know is an
assumption with a flag: data rows, mean prompt / response lengths (default: the recipe's maxima, so the token
counts are upper bounds), model-FLOP utilisation, memory-bandwidth efficiency. Nothing here was measured on a GPU.

Time model, per RL step (``B`` = prompts x rollouts sequences of ``P`` prompt + ``R`` response tokens):

- prefill: ``B`` prompt forwards, compute-bound: FLOPs / (GPUs x peak x MFU);
- decode: memory-bound. Each vLLM replica (``tp`` GPUs) runs up to ``b`` sequences at once (its share of ``B``,
  capped by ``max_num_seqs`` and by how many full sequences its KV cache holds); each decode step reads the bf16
  weights once plus the KV cache of the ``b`` sequences (mean context ``P + R/2``), at HBM bandwidth x efficiency
  spread over the ``tp`` GPUs; ``R`` steps per wave of ``b`` sequences. Tensor-parallel communication is not
  modelled. ``--gen-tokens-per-s`` replaces all of this by a measured rate;
- old log-prob + reference log-prob (2 forwards) and the update (forward + backward = 3 forwards) over all
  ``B (P + R)`` tokens, compute-bound. Weight sync, reward computation and idle time are not counted.

FLOPs per sequence of ``S`` tokens, forward: ``2 N S + 2 L h_q d S^2`` (``N``: matmul parameters including the
output layer; the second term is causal attention, ``QK^T`` and ``AV``). MFU counts these model FLOPs only
(gradient-checkpointing recompute is part of the inefficiency).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Sequence

from omegaconf import DictConfig

from verl_personadual.apps.recipes import compose as R
from verl_personadual.utils.cli import Parser, count, fraction, non_negative, positive
from verl_personadual.utils.errors import run_cli

__all__ = [
    "GPUS",
    "MODEL_SHAPES",
    "Assumptions",
    "GPU",
    "ModelShape",
    "RLPlan",
    "SFTPlan",
    "kv_capacity_sequences",
    "main",
    "rl_plan",
    "rl_step_seconds",
    "sft_plan",
    "sft_step_seconds",
]

GIB = 2**30
#: Paper, Table 5: RL and SFT rows; build_rl's default validation rows (150 + 300 + 50).
PAPER_RL_ROWS, PAPER_SFT_ROWS, DEFAULT_VAL_ROWS = 9_998, 8_000, 500
#: GPU memory per GPU that vLLM spends outside weights and KV cache (activations at profiling, CUDA graphs).
VLLM_OVERHEAD_GIB = 2.0
#: Bytes per parameter of an actor checkpoint: fp32 weights + AdamW's two fp32 moments (FSDP shards).
CHECKPOINT_BYTES_PER_PARAM = 12


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the estimate needs (from the model's ``config.json``)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def block_params(self) -> int:
        """Attention (q, k, v, o) and gated-MLP (gate, up, down) weights of all layers; norms left out (<0.01 %)."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attn + 3 * self.hidden * self.intermediate)

    @property
    def params(self) -> int:
        """All weights: blocks + input embedding (+ output layer when untied)."""
        return self.block_params + self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def matmul_params(self) -> int:
        """Weights multiplied per token: blocks + output layer (the embedding is a lookup)."""
        return self.block_params + self.vocab * self.hidden

    @property
    def kv_bytes_per_token(self) -> int:
        """bf16 K and V of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def forward_flops(self, seq_len: int) -> int:
        """Forward FLOPs of one sequence of ``seq_len`` tokens (matmuls + causal attention)."""
        return 2 * self.matmul_params * seq_len + 2 * self.layers * self.heads * self.head_dim * seq_len**2


#: Per backbone of ``recipes/config/*_backbone`` (Qwen/Qwen3-8B, meta-llama/Llama-3.1-8B-Instruct, Qwen/Qwen3-0.6B).
MODEL_SHAPES: dict[str, ModelShape] = {
    "qwen3_8b": ModelShape(36, 4096, 32, 8, 128, 12288, 151_936, tied=False),
    "llama31_8b": ModelShape(32, 4096, 32, 8, 128, 14336, 128_256, tied=False),
    "qwen3_0p6b": ModelShape(28, 1024, 16, 8, 128, 3072, 151_936, tied=True),
}


@dataclass(frozen=True)
class GPU:
    """Datasheet numbers: memory, dense bf16 tensor-core peak, HBM bandwidth."""

    name: str
    memory_gib: float
    bf16_tflops: float
    hbm_tb_s: float


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("a10-24gb", 22.5, 125, 0.60),
        GPU("l4-24gb", 22.5, 121, 0.30),
        GPU("a100-80gb", 80, 312, 2.04),
        GPU("a800-80gb", 80, 312, 2.04),  # the paper's GPU
        GPU("h100-80gb", 79.6, 989, 3.35),
        GPU("h200-141gb", 140.4, 989, 4.80),
    )
}


@dataclass(frozen=True)
class Assumptions:
    """What the recipe cannot know. ``None`` lengths mean the recipe's maxima (upper bounds)."""

    train_rows: int = PAPER_RL_ROWS
    val_rows: int = DEFAULT_VAL_ROWS
    mean_prompt_tokens: int | None = None
    mean_response_tokens: int | None = None
    mfu: float = 0.3
    hbm_efficiency: float = 0.5
    gen_tokens_per_s: float | None = None


@dataclass(frozen=True)
class RLPlan:
    """What one RL run does, from the composed recipe and the data assumptions (no hardware yet)."""

    shape: ModelShape
    gpus: int
    tp: int
    gpu_memory_utilization: float
    max_num_seqs: int
    prompts_per_step: int
    rollouts: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    prompt_tokens: int
    response_tokens: int
    validation_runs: int
    val_rows: int
    saves: int
    checkpoints_kept: int
    checkpoint_peak: int

    @property
    def replicas(self) -> int:
        return self.gpus // self.tp

    @property
    def sequences_per_step(self) -> int:
        return self.prompts_per_step * self.rollouts

    @property
    def generated_tokens_per_step(self) -> int:
        return self.sequences_per_step * self.response_tokens

    @property
    def trained_tokens_per_step(self) -> int:
        """Tokens each of the three passes (old log-prob, reference, update) runs over."""
        return self.sequences_per_step * (self.prompt_tokens + self.response_tokens)

    @property
    def checkpoint_bytes(self) -> int:
        return CHECKPOINT_BYTES_PER_PARAM * self.shape.params

    def flops_per_step(self) -> dict[str, int]:
        """Model FLOPs per step: prefill (every sequence's prompt), log-prob (old + ref), update (3 forwards)."""
        seq = self.shape.forward_flops(self.prompt_tokens + self.response_tokens)
        return {
            "prefill": self.sequences_per_step * self.shape.forward_flops(self.prompt_tokens),
            "log_prob": 2 * self.sequences_per_step * seq,
            "update": 3 * self.sequences_per_step * seq,
        }


def _steps(rows: int, batch: int, epochs: int, fixed: int | None) -> tuple[int, int]:
    """verl's RL count: ``len(dataset) // train_batch_size`` per epoch (trainer_base.py:764, drop_last)."""
    per_epoch = rows // batch
    return per_epoch, fixed if fixed is not None else per_epoch * epochs


def rl_plan(cfg: DictConfig, backbone: str, a: Assumptions) -> RLPlan:
    """The RL run of the composed recipe ``cfg`` (``backbone`` names its model shape)."""
    rollout, trainer = cfg.actor_rollout_ref.rollout, cfg.trainer
    batch, epochs = cfg.data.train_batch_size, trainer.total_epochs
    per_epoch, total = _steps(a.train_rows, batch, epochs, trainer.total_training_steps)
    test, save = trainer.test_freq, trainer.save_freq
    # verl validates before training (val_before_train), every test_freq steps and at the last step
    # (trainer_base.py:492); it saves every save_freq steps and at the last step (trainer_base.py:481-482).
    validations = int(trainer.val_before_train) + (total // test + (total % test > 0) if test > 0 else 0)
    saves = total // save + (total % save > 0) if save > 0 else 0
    keep = trainer.max_actor_ckpt_to_keep
    kept = saves if keep is None else min(saves, keep)
    # With keep >= 2 verl deletes down to keep - 1 before saving; with 1 it deletes after the new one is written
    # (verl/utils/checkpoint/checkpoint_manager.py:166-194): at most max(keep, 2) on disk at once.
    peak = saves if keep is None else min(saves, max(keep, 2))
    return RLPlan(
        shape=MODEL_SHAPES[backbone],
        gpus=trainer.nnodes * trainer.n_gpus_per_node,
        tp=rollout.tensor_model_parallel_size,
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        max_num_seqs=rollout.max_num_seqs,
        prompts_per_step=cfg.data.train_batch_size,
        rollouts=rollout.n,
        steps_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=int(cfg.actor_rollout_ref.actor.optim.lr_warmup_steps_ratio * total),
        prompt_tokens=a.mean_prompt_tokens or cfg.data.max_prompt_length,
        response_tokens=a.mean_response_tokens or cfg.data.max_response_length,
        validation_runs=validations,
        val_rows=a.val_rows,
        saves=saves,
        checkpoints_kept=kept,
        checkpoint_peak=peak,
    )


def kv_capacity_sequences(shape: ModelShape, gpu: GPU, utilization: float, tp: int, seq_len: int) -> int:
    """Full sequences of ``seq_len`` tokens one vLLM replica's KV cache holds (0: the weights do not fit).

    Replica memory ``tp x GPU memory x gpu_memory_utilization``, minus the bf16 weights and ``VLLM_OVERHEAD_GIB``
    per GPU. Prefix caching could share prompts between rollouts; not counted, so this is a lower bound.
    """
    free = tp * (gpu.memory_gib * utilization - VLLM_OVERHEAD_GIB) * GIB - 2 * shape.params
    return max(0, int(free // (shape.kv_bytes_per_token * seq_len)))


def _decode_seconds(plan: RLPlan, gpu: GPU, a: Assumptions, sequences: int) -> float:
    """Decode time of ``sequences`` sequences spread over the replicas (see the module doc)."""
    per_replica = math.ceil(sequences / plan.replicas)
    fits = kv_capacity_sequences(
        plan.shape, gpu, plan.gpu_memory_utilization, plan.tp, plan.prompt_tokens + plan.response_tokens
    )
    if fits == 0:
        return math.inf
    concurrent = min(per_replica, plan.max_num_seqs, fits)
    waves = math.ceil(per_replica / concurrent)
    context = plan.prompt_tokens + plan.response_tokens / 2
    step_bytes = 2 * plan.shape.params + concurrent * plan.shape.kv_bytes_per_token * context
    step = step_bytes / (plan.tp * gpu.hbm_tb_s * 1e12 * a.hbm_efficiency)
    return waves * plan.response_tokens * step


def rl_step_seconds(plan: RLPlan, gpu: GPU, a: Assumptions) -> dict[str, float]:
    """Seconds per RL step on ``plan.gpus`` x ``gpu``: generation, log-prob + update, and one validation run."""
    compute = plan.gpus * gpu.bf16_tflops * 1e12 * a.mfu
    flops = plan.flops_per_step()
    if a.gen_tokens_per_s is not None:
        generation = plan.generated_tokens_per_step / (plan.gpus * a.gen_tokens_per_s)
        validation = plan.val_rows * plan.response_tokens / (plan.gpus * a.gen_tokens_per_s)
    else:
        generation = flops["prefill"] / compute + _decode_seconds(plan, gpu, a, plan.sequences_per_step)
        val_prefill = plan.val_rows * plan.shape.forward_flops(plan.prompt_tokens) / compute
        validation = val_prefill + _decode_seconds(plan, gpu, a, plan.val_rows)
    training = (flops["log_prob"] + flops["update"]) / compute
    return {"generation": generation, "training": training, "validation": validation}


@dataclass(frozen=True)
class SFTPlan:
    """What one SFT run does."""

    shape: ModelShape
    gpus: int
    batch: int
    steps_per_epoch: int
    total_steps: int
    tokens_per_row: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.tokens_per_row

    def flops_per_step(self) -> int:
        """Forward + backward (3 forwards) over the batch."""
        return 3 * self.batch * self.shape.forward_flops(self.tokens_per_row)


def sft_plan(cfg: DictConfig, backbone: str, rows: int, mean_tokens: int | None) -> SFTPlan:
    """The SFT run of the composed recipe: verl's DistributedSampler and DataLoader both drop the last partial
    batch (``verl/trainer/sft_trainer.py:236-251``), so an epoch has ``(rows // dp) // (batch // dp)`` steps."""
    gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    dp = gpus // (cfg.engine.get("ulysses_sequence_parallel_size", 1) or 1)
    per_epoch = (rows // dp) // (cfg.data.train_batch_size // dp)
    total = cfg.trainer.total_training_steps or per_epoch * cfg.trainer.total_epochs
    tokens = mean_tokens or cfg.data.max_length
    return SFTPlan(MODEL_SHAPES[backbone], gpus, cfg.data.train_batch_size, per_epoch, total, tokens)


def sft_step_seconds(plan: SFTPlan, gpu: GPU, a: Assumptions) -> float:
    return plan.flops_per_step() / (plan.gpus * gpu.bf16_tflops * 1e12 * a.mfu)


def _gpus_for(shape: ModelShape) -> list[GPU]:
    """8B recipes assume 80 GB GPUs; the 0.6B recipe runs on 24 GB and up."""
    return [g for g in GPUS.values() if g.memory_gib >= 70 or shape.params < 2e9]


def render_rl(plan: RLPlan, a: Assumptions, title: str) -> str:
    """The RL cost as Markdown: plan lines, then one table row per GPU."""
    maxima = a.mean_prompt_tokens is None and a.mean_response_tokens is None
    bound = "upper bound: the recipe's maxima" if maxima else "assumed means"
    flops = plan.flops_per_step()
    lines = [
        f"### {title}",
        "",
        f"- GPUs: {plan.gpus}; vLLM TP {plan.tp} -> {plan.replicas} replica(s), "
        f"gpu_memory_utilization {plan.gpu_memory_utilization}",
        f"- steps: {a.train_rows:,} rows // {plan.prompts_per_step} prompts = {plan.steps_per_epoch} steps/epoch "
        f"(drop_last); {plan.total_steps} steps in total; LR warm-up {plan.warmup_steps} steps",
        f"- per step: {plan.prompts_per_step} prompts x {plan.rollouts} rollouts = {plan.sequences_per_step} "
        f"sequences of {plan.prompt_tokens:,} + {plan.response_tokens:,} tokens ({bound})",
        f"- tokens per step: {plan.generated_tokens_per_step:,} generated; {plan.trained_tokens_per_step:,} through "
        "each of old log-prob, reference and update",
        f"- model FLOPs per step: prefill {flops['prefill']:.2e}, log-prob {flops['log_prob']:.2e}, "
        f"update {flops['update']:.2e}",
        f"- validation: {plan.validation_runs} runs x {plan.val_rows} rows (greedy, 1 response each)",
        f"- checkpoints: {plan.saves} saves x {plan.checkpoint_bytes / 1e9:.1f} GB (fp32 weights + AdamW); "
        f"{plan.checkpoints_kept} kept, at most {plan.checkpoint_peak * plan.checkpoint_bytes / 1e9:.0f} GB on disk",
        "",
        "| GPU | KV cache: sequences per replica (needed) | generation s/step | log-prob + update s/step | "
        "step s | run h (incl. validation) | GPU-hours |",
        "|---|---|---|---|---|---|---|",
    ]
    need = math.ceil(plan.sequences_per_step / plan.replicas)
    for gpu in _gpus_for(plan.shape):
        fits = kv_capacity_sequences(
            plan.shape, gpu, plan.gpu_memory_utilization, plan.tp, plan.prompt_tokens + plan.response_tokens
        )
        t = rl_step_seconds(plan, gpu, a)
        step = t["generation"] + t["training"]
        hours = (plan.total_steps * step + plan.validation_runs * t["validation"]) / 3600
        lines.append(
            f"| {gpu.name} | {fits} ({need}) | {t['generation']:,.0f} | {t['training']:,.0f} | {step:,.0f} | "
            f"{hours:,.1f} | {hours * plan.gpus:,.0f} |"
        )
    return "\n".join(lines)


def render_sft(plan: SFTPlan, a: Assumptions, rows: int, title: str) -> str:
    """The SFT cost as Markdown."""
    lines = [
        f"### {title}",
        "",
        f"- GPUs: {plan.gpus}; steps: {rows:,} rows -> {plan.steps_per_epoch} steps/epoch of {plan.batch} rows "
        f"(drop_last); {plan.total_steps} steps in total",
        f"- tokens per step: {plan.tokens_per_step:,} ({plan.batch} x {plan.tokens_per_row:,}); "
        f"model FLOPs per step {plan.flops_per_step():.2e}",
        "",
        "| GPU | step s | run h | GPU-hours |",
        "|---|---|---|---|",
    ]
    for gpu in _gpus_for(plan.shape):
        hours = plan.total_steps * sft_step_seconds(plan, gpu, a) / 3600
        step = sft_step_seconds(plan, gpu, a)
        lines.append(f"| {gpu.name} | {step:,.1f} | {hours:,.2f} | {hours * plan.gpus:,.1f} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    d = Assumptions()
    p = Parser(
        prog="python -m verl_personadual.apps.cost",
        description=(
            "Print the cost of a PersonaDual run (Markdown): steps, tokens, FLOPs, checkpoint disk, and a rough "
            "time and GPU-hours per GPU type, from the recipe composed as `verl_personadual.apps.recipes.compose` "
            "composes it. "
            "Arguments after `--` are Hydra overrides of the recipe (e.g. "
            "`-- actor_rollout_ref.rollout.tensor_model_parallel_size=1`). Defaults give upper bounds on tokens: "
            "every prompt and response at the recipe's maximum length. Estimates, not measurements."
        ),
    )
    p.add_argument("--backbone", required=True, choices=sorted(MODEL_SHAPES), help="recipe backbone")
    p.add_argument("--stage", choices=["rl", "sft"], default="rl", help="training stage (default: rl)")
    p.add_argument("--ablation", default=R.NO_ABLATION, choices=R.ablations(), help="RL ablation (default: none)")
    p.add_argument("--nnodes", type=count, default=None, help="nodes (default: the backbone's)")
    p.add_argument(
        "--train-rows",
        type=count,
        default=None,
        help=f"training rows (default: the paper's, RL {PAPER_RL_ROWS:,}, SFT {PAPER_SFT_ROWS:,})",
    )
    p.add_argument(
        "--val-rows", type=non_negative, default=d.val_rows, help=f"RL validation rows (default {d.val_rows})"
    )
    p.add_argument("--mean-prompt-tokens", type=count, default=None, help="RL: mean prompt length (default: maximum)")
    p.add_argument(
        "--mean-response-tokens", type=count, default=None, help="RL: mean response length (default: maximum)"
    )
    p.add_argument("--mean-sft-tokens", type=count, default=None, help="SFT: mean row length (default: maximum)")
    p.add_argument(
        "--mfu",
        type=fraction,
        default=d.mfu,
        help=f"model-FLOP utilisation of prefill, log-prob and training passes (default {d.mfu})",
    )
    p.add_argument(
        "--hbm-efficiency",
        type=fraction,
        default=d.hbm_efficiency,
        help=f"fraction of HBM bandwidth vLLM decoding reaches (default {d.hbm_efficiency})",
    )
    p.add_argument(
        "--gen-tokens-per-s",
        type=positive,
        default=None,
        help="measured generation tokens/s per GPU; replaces the prefill + decode model",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print the cost table of the composed recipe; returns 0 (2 on a user error: one ``error:`` line)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    argv, extra = R.split_overrides(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    rows = args.train_rows
    if rows is None:
        rows = PAPER_RL_ROWS if args.stage == "rl" else PAPER_SFT_ROWS
    a = Assumptions(
        train_rows=rows,
        val_rows=args.val_rows,
        mean_prompt_tokens=args.mean_prompt_tokens,
        mean_response_tokens=args.mean_response_tokens,
        mfu=args.mfu,
        hbm_efficiency=args.hbm_efficiency,
        gen_tokens_per_s=args.gen_tokens_per_s,
    )
    val = ["validation.parquet"] if args.stage == "rl" else []
    ablation = args.ablation if args.stage == "rl" else R.NO_ABLATION
    overrides = R.build_overrides(
        args.stage, args.backbone, "model", ["train.parquet"], val, ablation, extra=extra, nnodes=args.nnodes
    )
    cfg = R.compose_checked(args.stage, overrides)
    if args.stage == "rl":
        title = f"RL: rl_backbone={args.backbone}, ablation={ablation}"
        print(render_rl(rl_plan(cfg, args.backbone, a), a, title))
    else:
        plan = sft_plan(cfg, args.backbone, rows, args.mean_sft_tokens)
        print(render_sft(plan, a, rows, f"SFT: sft_backbone={args.backbone}"))
    print(
        f"\nAssumptions: MFU {a.mfu}, HBM efficiency {a.hbm_efficiency}"
        + (f", generation {a.gen_tokens_per_s:,.0f} tokens/s/GPU" if a.gen_tokens_per_s else "")
        + "; datasheet peaks; estimates, not measurements (python -m verl_personadual.apps.cost --help)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
