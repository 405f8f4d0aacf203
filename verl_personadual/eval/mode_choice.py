"""The mode-choice step of decoding ``free_constrained``: log-probabilities of the two mode prefixes as the first
response token(s) (transformers or vLLM backend) and the mode drawn among them only (:func:`choose_modes`).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Sequence

from verl_personadual.core.modes import Mode, ModePrefixes
from verl_personadual.eval.generate import (
    Generator,
    HFGenerator,
    VLLMGenerator,
)


def _hf_logprobs(
    gen: HFGenerator, prompts: Sequence[list[int]], prefixes: ModePrefixes, batch_size: int
) -> list[tuple[float, float]]:
    """Teacher-forced log P(prefix | prompt) per mode with the transformers model of ``gen``.

    Each (prompt, mode) needs the logits that predict the prefix tokens, i.e. a forward pass over ``prompt +
    prefix[:-1]`` whose last ``len(prefix)`` positions are read. For single-token prefixes both modes share one
    sequence (the prompt). Sequences are left-padded with explicit position ids (so padding changes nothing) and
    only the last ``max len(prefix)`` logits are materialised."""
    import torch

    seqs: dict[tuple[int, ...], int] = {}
    need: list[tuple[int, int, Mode]] = []  # (prompt index, sequence index, mode)
    for i, p in enumerate(prompts):
        for mode in Mode:
            seq = tuple(p) + prefixes.ids[mode][:-1]
            need.append((i, seqs.setdefault(seq, len(seqs)), mode))
    ordered = list(seqs)
    keep = max(prefixes.length(m) for m in Mode)
    scores: list[Any] = [None] * len(ordered)  # per sequence: (keep, vocab) log-probs of its last positions
    with torch.no_grad():
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start : start + batch_size]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), gen.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, s in enumerate(batch):
                ids[j, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[j, width - len(s) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = gen.model(
                input_ids=ids.to(gen.device),
                attention_mask=mask.to(gen.device),
                position_ids=positions.to(gen.device),
                logits_to_keep=keep,
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for j in range(len(batch)):
                scores[start + j] = logp[j]
    out: dict[int, dict[Mode, float]] = defaultdict(dict)
    for i, s, mode in need:
        pids = prefixes.ids[mode]
        n = len(pids)
        out[i][mode] = float(sum(scores[s][keep - n + k, pids[k]] for k in range(n)))
    return [(out[i][Mode.GENERAL], out[i][Mode.PERSONALIZED]) for i in range(len(prompts))]


def _vllm_logprobs(
    gen: VLLMGenerator, prompts: Sequence[list[int]], prefixes: ModePrefixes
) -> list[tuple[float, float]]:
    """log P(prefix | prompt) per mode from vLLM's prompt log-probs of ``prompt + prefix`` (raw logits, i.e. the
    softmax of the model's logits): the sum over the prefix positions."""
    from vllm import SamplingParams

    seqs = [list(p) + list(prefixes.ids[m]) for p in prompts for m in Mode]
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
    outs = gen.llm.generate([{"prompt_token_ids": s} for s in seqs], params, use_tqdm=False)
    sums = []
    for s, o, mode in zip(seqs, outs, [m for _ in prompts for m in Mode]):
        n = prefixes.length(mode)
        sums.append(float(sum(o.prompt_logprobs[pos][s[pos]].logprob for pos in range(len(s) - n, len(s)))))
    return [(sums[2 * i], sums[2 * i + 1]) for i in range(len(prompts))]


def mode_logprobs(
    gen: Generator, prompts: Sequence[list[int]], prefixes: ModePrefixes, batch_size: int = 16
) -> list[tuple[float, float]]:
    """``(log σ(general), log σ(personalized))`` per token-id prompt, with the model behind a generation backend
    (:class:`HFGenerator` or :class:`VLLMGenerator`; module docstring)."""
    if not prompts:
        return []
    if isinstance(gen, VLLMGenerator):
        return _vllm_logprobs(gen, prompts, prefixes)
    if isinstance(gen, HFGenerator):
        return _hf_logprobs(gen, prompts, prefixes, batch_size)
    raise TypeError(f"mode probabilities need the transformers or vLLM backend, got {type(gen).__name__}")


def choose_modes(
    gen: Generator,
    prompts: Sequence[list[int]],
    prefixes: ModePrefixes,
    temperature: float,
    seeds: Sequence[int],
    batch_size: int = 16,
) -> list[Mode]:
    """Decoding ``free_constrained``: the mode of each prompt drawn among the two prefixes only (module docstring);
    greedy (``temperature == 0``) takes the argmax (general on an exact tie)."""
    chosen = []
    for (lg, lp), seed in zip(mode_logprobs(gen, prompts, prefixes, batch_size), seeds):
        if temperature == 0:
            chosen.append(Mode.PERSONALIZED if lp > lg else Mode.GENERAL)
        else:
            p = 1.0 / (1.0 + math.exp((lg - lp) / temperature))
            chosen.append(Mode.PERSONALIZED if random.Random(seed).random() < p else Mode.GENERAL)
    return chosen
