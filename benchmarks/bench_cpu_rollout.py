"""The CPU execution path: batched generation, DualGRPO's per-step overhead, and where a step's time goes.

    python benchmarks/bench_cpu_rollout.py [--out DIR] [--steps 6] [--requests 64] [--skip-training]

1. Generation: the ``hf_cpu`` engine (``verl_personadual.core.cpu.generation.BatchGenerator``) on the quickstart's tiny
   model, 64 toy prompts x 16 new tokens (sampling, temperature 1, EOS ignored so every request has the same
   length): one batch of 64 vs 64 one-at-a-time calls. Prints both times and the ratio (target >= 5x).
2. Training: the same toy data and recipe (``--backbone cpu_toy``) run twice through verl's ``main_ppo``: DualGRPO
   (``dual_grpo`` + ``persona_dual_sync``) and verl's own ``grpo`` estimator on the plain CPU sync trainer
   (``cpu_sync``). Prints the median of ``timing_s/step`` over steps 2..N of each run and the ratio minus one: our
   overhead per step (target <= 2 %). Rollouts are prefix-forced in both runs (same data rows).
3. The DualGRPO run's median step, broken down by verl's own ``timing_s/*`` (``gen`` includes the reward,
   computed by the agent loop as each rollout finishes; ``update_weights`` is the sync to the rollout server).

Ratios are measured in one run on one machine; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from verl_personadual.apps.quickstart.stages import MODEL_SEED, TOY_BACKBONE
from verl_personadual.apps.tiny_model import TinyModelSpec, write_tiny_model
from verl_personadual.data import toy

PHASES = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights")


def bench_generation(model_dir: Path, requests: int, new_tokens: int) -> tuple[float, float]:
    """Seconds for ``requests`` prompts in one batch, and one at a time (best of 2 each)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_personadual.core.cpu.generation import (
        BatchGenerator,
        GenerationRequest,
        SamplingParams,
    )
    from verl_personadual.core.prompts import build_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    engine = BatchGenerator(
        model, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id, max_batch_size=requests
    )
    items = toy.generate(toy.ToySizes(sft=0, rl=requests, rl_val=0, eval=0))["rl"]
    prompts = [
        list(
            tok.apply_chat_template(
                build_prompt(it.question, toy.FAMILY, it.persona),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )
        for it in items
    ]

    def make(i: int, p: list[int]) -> GenerationRequest:
        params = SamplingParams(max_tokens=new_tokens, temperature=1.0, ignore_eos=True)
        return GenerationRequest(p, params, torch.Generator().manual_seed(i))

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    batched = timed(lambda: engine.generate([make(i, p) for i, p in enumerate(prompts)]))
    single = timed(lambda: [engine.generate([make(i, p)]) for i, p in enumerate(prompts)])
    return batched, single


def train(name: str, model: Path, data: Path, out: Path, steps: int, extra: list[str]) -> list[dict]:
    """One ``recipes rl --backbone cpu_toy`` run; returns verl's per-step metrics."""
    metrics = out / f"{name}.jsonl"
    argv = [
        sys.executable,
        "-m",
        "verl_personadual.recipes",
        "rl",
        "--backbone",
        TOY_BACKBONE,
        "--model",
        str(model),
        "--train-files",
        str(data / "rl" / "train.parquet"),
        "--val-files",
        str(data / "rl" / "validation.parquet"),
        "--output-dir",
        str(out / name),
        "--",
        f"trainer.total_training_steps={steps}",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        "trainer.save_freq=-1",
        "trainer.logger=[console,file]",
        *extra,
    ]
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    log = out / f"{name}.log"
    with open(log, "w") as fh:
        rc = subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise SystemExit(f"{name}: training failed (exit {rc}); log: {log}")
    return [json.loads(line)["data"] for line in metrics.read_text().splitlines() if line.strip()]


def toy_workdir(out: Path | None, prefix: str) -> tuple[Path, Path, Path]:
    """``(out, model, data)``: the work directory (a new temporary one when ``out`` is None) with the quickstart's
    tiny model and the toy data in it, made once and reused by later runs."""
    out = out or Path(tempfile.mkdtemp(prefix=prefix))
    out.mkdir(parents=True, exist_ok=True)
    model, data = out / "model", out / "data"
    if not model.exists():
        write_tiny_model(
            model, TinyModelSpec(seed=MODEL_SEED), extra_corpus=toy.corpus(), whole_words=toy.whole_words()
        )
    if not data.exists():
        toy.build(data)
    return out, model, data


def median_after_first(records: list[dict], key: str) -> float:
    values = [r[key] for r in records[1:] if key in r]
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (default 6; step 1 is not timed)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--skip-training", action="store_true", help="only the generation benchmark")
    args = parser.parse_args()
    out, model, data = toy_workdir(args.out, "bench_cpu_")

    batched, single = bench_generation(model, args.requests, args.new_tokens)
    print(
        f"generation, {args.requests} requests x {args.new_tokens} tokens: batched {batched:.2f} s, one at a time "
        f"{single:.2f} s, ratio {single / batched:.1f}x (target >= 5x)"
    )
    if args.skip_training:
        return
    dual = train("dual_grpo", model, data, out, args.steps, [])
    grpo = train(
        "grpo", model, data, out, args.steps, ["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=cpu_sync"]
    )
    t_dual, t_grpo = median_after_first(dual, "timing_s/step"), median_after_first(grpo, "timing_s/step")
    print(
        f"step time (median of steps 2..{args.steps}): dual_grpo + persona_dual_sync {t_dual:.2f} s, "
        f"grpo + cpu_sync {t_grpo:.2f} s, overhead {100 * (t_dual / t_grpo - 1):+.1f} % (target <= 2 %)"
    )
    parts = {p: median_after_first(dual, f"timing_s/{p}") for p in PHASES}
    print(
        "dual_grpo step breakdown (median s, share of step): "
        + ", ".join(f"{p} {s:.2f} ({100 * s / t_dual:.0f} %)" for p, s in parts.items())
    )
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
