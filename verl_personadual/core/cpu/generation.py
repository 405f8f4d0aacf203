"""Batched token-in / token-out generation with a Hugging Face causal LM: the engine of the CPU rollout backend.

No Ray and no verl here: :class:`BatchGenerator` takes prompts as token ids and verl's sampling parameters
(validated into :class:`SamplingParams`), and returns generated ids, their log-probs and why each stopped.

Batching. Requests are run together in one left-padded batch with a shared KV cache (``DynamicCache``):
one forward pass per generated token for the whole batch; finished rows leave the batch (their cache rows are
dropped). Rows carry explicit position ids, so a prompt's logits do not depend on its padding.

Sampling (per row, so a batch may mix parameters): repetition penalty (as in ``transformers``: logits of seen
tokens divided by the penalty when positive, multiplied when negative), then ``temperature == 0`` -> greedy
argmax; else logits / temperature, top-k, top-p (the smallest set of most likely tokens whose probability
reaches ``top_p``), renormalise, draw. Each request draws from its own ``torch.Generator`` (seeded by its
``seed`` parameter, or by the rollout server's per-request seed), so a request's sample does not depend on which other
requests share its batch.

Log-probs (``logprobs``) are those of the distribution the token was drawn from, after temperature, penalty
and truncation (vLLM's ``processed_logprobs``, verl's default); for greedy rows, of the penalised logits at
temperature 1. With top_p = 1, top_k = -1 and no penalty they equal verl's actor recomputation,
``log_softmax(logits / temperature)``.

Stopping: an EOS id of the model or tokenizer (unless ``ignore_eos``), any of ``stop_token_ids``, or a ``stop``
string appearing in the decoded output -> ``"completed"``, the stop token kept in the output (as vLLM does);
``max_tokens`` reached -> ``"completed"`` as well (verl's vLLM server reports both so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from verl_personadual.utils.errors import UserError

__all__ = [
    "SamplingParams",
    "SamplingParamsError",
    "GenerationRequest",
    "GenerationResult",
    "BatchGenerator",
    "SAMPLING_KEYS",
]


class SamplingParamsError(UserError, ValueError):
    """A request's sampling parameters are invalid; the message names the parameter and what is accepted."""


#: Sampling parameters the backend understands (verl's agent loops send a subset; ``max_new_tokens`` is the
#: SGLang spelling of ``max_tokens``).
SAMPLING_KEYS = frozenset(
    {
        "max_tokens",
        "max_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "logprobs",
        "ignore_eos",
        "stop",
        "stop_token_ids",
        "seed",
        "n",
    }
)


def _number(key: str, value: Any, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise SamplingParamsError(f"sampling param {key}={value!r} must be {kind}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling parameters of one request (see the module docstring for their meaning)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    logprobs: bool = False
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_request(
        cls,
        raw: Mapping[str, Any],
        *,
        default_max_tokens: int,
        max_possible_tokens: int,
        defaults: Mapping[str, Any] | None = None,
    ) -> "SamplingParams":
        """Validate verl's sampling dict. ``max_tokens`` (default ``default_max_tokens``) is clamped to
        ``[1, max_possible_tokens]`` as verl's vLLM server does; ``defaults`` fill keys the request omits (e.g.
        ``repetition_penalty`` / ``ignore_eos`` from the rollout config). Raises :class:`SamplingParamsError`."""
        unknown = sorted(set(raw) - SAMPLING_KEYS)
        if unknown:
            raise SamplingParamsError(
                f"unsupported sampling param(s) {unknown}; the CPU rollout backend accepts {sorted(SAMPLING_KEYS)}"
            )
        if max_possible_tokens < 1:
            raise SamplingParamsError(
                f"the prompt leaves no room to generate (at most {max_possible_tokens} new tokens fit in max_model_len)"
            )
        params = {**(defaults or {}), **raw}
        if params.get("n", 1) != 1:
            raise SamplingParamsError(f"sampling param n={params['n']!r}: one sample per request (verl sends n=1)")
        limit = params.get("max_tokens", params.get("max_new_tokens", default_max_tokens))
        limit = int(_number("max_tokens", limit, integer=True))
        if limit < 1:
            raise SamplingParamsError(f"sampling param max_tokens={limit} must be >= 1")
        temperature = float(_number("temperature", params.get("temperature", 1.0)))
        if temperature < 0:
            raise SamplingParamsError(f"sampling param temperature={temperature} must be >= 0 (0 = greedy)")
        top_p = float(_number("top_p", params.get("top_p", 1.0)))
        if not 0 < top_p <= 1:
            raise SamplingParamsError(f"sampling param top_p={top_p} must be in (0, 1]")
        top_k = int(_number("top_k", params.get("top_k", -1), integer=True))
        if top_k == 0 or top_k < -1:
            raise SamplingParamsError(f"sampling param top_k={top_k} must be -1 (all tokens) or >= 1")
        penalty = float(_number("repetition_penalty", params.get("repetition_penalty", 1.0)))
        if penalty <= 0:
            raise SamplingParamsError(f"sampling param repetition_penalty={penalty} must be > 0 (1 = none)")
        logprobs = params.get("logprobs", False)
        if logprobs is None or isinstance(logprobs, bool):
            want = bool(logprobs)
        elif isinstance(logprobs, int) and logprobs in (0, 1):
            want = True  # vLLM: 0 = the sampled token's log-prob only; alternatives are not returned
        else:
            raise SamplingParamsError(
                f"sampling param logprobs={logprobs!r}: true/false, or 0/1 (the sampled token's log-prob only)"
            )
        stop = params.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise SamplingParamsError(f"sampling param stop={params.get('stop')!r} must be a string or a list of them")
        stop_ids = tuple(params.get("stop_token_ids") or ())
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in stop_ids):
            raise SamplingParamsError(f"sampling param stop_token_ids={stop_ids!r} must be token ids")
        seed = params.get("seed")
        if seed is not None:
            seed = int(_number("seed", seed, integer=True))
        ignore_eos = params.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise SamplingParamsError(f"sampling param ignore_eos={ignore_eos!r} must be true/false")
        return cls(
            max_tokens=min(limit, max_possible_tokens),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=penalty,
            logprobs=want,
            ignore_eos=ignore_eos,
            stop=stop,
            stop_token_ids=stop_ids,
            seed=seed,
        )


@dataclass
class GenerationRequest:
    """One prompt (token ids) to continue; ``generator`` draws its samples (unused when greedy)."""

    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator = field(default_factory=torch.Generator)


@dataclass(frozen=True)
class GenerationResult:
    """Generated ids (stop token included), one log-prob per id when asked for, and the stop reason."""

    token_ids: list[int]
    log_probs: list[float] | None
    stop_reason: str


class BatchGenerator:
    """Generates for many requests at once with one model (see the module docstring).

    Args:
        model: a ``transformers`` causal LM in eval mode (any dtype; logits are read in float32).
        eos_token_ids: ids that end a response unless ``ignore_eos``.
        pad_token_id: id used for left padding (never attended to).
        max_batch_size: requests per batch; more are run in successive batches.
        decode: ids -> text, needed only for ``stop`` strings.
    """

    def __init__(
        self,
        model: Any,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        max_batch_size: int = 256,
        decode: Callable[[list[int]], str] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size
        self.decode = decode
        self.forward_passes = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Results in request order; runs ``ceil(len / max_batch_size)`` batches."""
        if any(r.params.stop for r in requests) and self.decode is None:
            raise SamplingParamsError("stop strings need a tokenizer to decode with; none was given")
        results: list[GenerationResult] = []
        for start in range(0, len(requests), self.max_batch_size):
            results += self._run_batch(list(requests[start : start + self.max_batch_size]))
        return results

    @torch.inference_mode()
    def _run_batch(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        from transformers import DynamicCache

        if not reqs:
            return []
        for i, r in enumerate(reqs):
            if not r.prompt_ids:
                raise SamplingParamsError(f"request {i} has an empty prompt")
        width = max(len(r.prompt_ids) for r in reqs)
        batch = len(reqs)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, r in enumerate(reqs):
            input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - len(r.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        penalised = any(r.params.repetition_penalty != 1.0 for r in reqs)
        seen = None
        if penalised:
            seen = torch.zeros((batch, self._vocab_size()), dtype=torch.bool)
            for i, r in enumerate(reqs):
                seen[i, torch.tensor(r.prompt_ids, dtype=torch.long)] = True

        cache = DynamicCache()
        logits = self._forward(input_ids, mask, positions, cache)
        next_pos = positions[:, -1] + 1
        active = list(range(batch))
        out_ids: list[list[int]] = [[] for _ in reqs]
        out_lps: list[list[float]] = [[] for _ in reqs]
        finished = [False] * batch
        for _ in range(max(r.params.max_tokens for r in reqs)):
            rows = [reqs[a] for a in active]
            tokens, logps = self._sample(logits, rows, seen)
            for j, a in enumerate(active):
                tok = int(tokens[j])
                out_ids[a].append(tok)
                out_lps[a].append(float(logps[j]))
                finished[a] = self._stops(reqs[a].params, out_ids[a], tok)
            keep = [j for j, a in enumerate(active) if not finished[a]]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(index)
                mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                seen = seen[index] if seen is not None else None
                active = [active[j] for j in keep]
            if seen is not None:
                seen[torch.arange(len(active)), tokens] = True
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            logits = self._forward(tokens[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + 1
        return [
            GenerationResult(ids, lps if r.params.logprobs else None, "completed")
            for r, ids, lps in zip(reqs, out_ids, out_lps, strict=True)
        ]

    def _vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        self.forward_passes += 1
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        return out.logits[:, -1, :].float()

    def _stops(self, params: SamplingParams, ids: list[int], tok: int) -> bool:
        if len(ids) >= params.max_tokens or tok in params.stop_token_ids:
            return True
        if tok in self.eos_token_ids and not params.ignore_eos:
            return True
        if params.stop and self.decode is not None:
            text = self.decode(ids)
            return any(s in text for s in params.stop)
        return False

    @staticmethod
    def _sample(
        logits: torch.Tensor, rows: list[GenerationRequest], seen: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token and its log-prob for each row of ``logits`` (rows x vocab, float32)."""
        if seen is not None:
            penalty = torch.tensor([r.params.repetition_penalty for r in rows], dtype=logits.dtype)[:, None]
            adjusted = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(seen, adjusted, logits)
        n_rows, vocab = logits.shape
        tokens = torch.empty(n_rows, dtype=torch.long)
        logps = torch.empty(n_rows, dtype=torch.float32)
        greedy = [i for i, r in enumerate(rows) if r.params.greedy]
        if greedy:
            g = torch.tensor(greedy, dtype=torch.long)
            lp = torch.log_softmax(logits[g], dim=-1)
            best = lp.argmax(dim=-1)
            tokens[g], logps[g] = best, lp.gather(1, best[:, None])[:, 0]
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if not sampled:
            return tokens, logps
        s = torch.tensor(sampled, dtype=torch.long)
        temps = torch.tensor([rows[i].params.temperature for i in sampled], dtype=logits.dtype)[:, None]
        scaled = logits[s] / temps
        order = scaled.argsort(dim=-1, descending=True)
        ranked = scaled.gather(1, order)
        top_k = torch.tensor([rows[i].params.top_k if rows[i].params.top_k > 0 else vocab for i in sampled])
        drop = torch.arange(vocab)[None, :] >= top_k[:, None]
        probs = torch.softmax(ranked.masked_fill(drop, float("-inf")), dim=-1)
        top_p = torch.tensor([rows[i].params.top_p for i in sampled], dtype=probs.dtype)[:, None]
        drop |= (probs.cumsum(dim=-1) - probs) >= top_p  # keep the first tokens until their mass reaches top_p
        lp_ranked = torch.log_softmax(ranked.masked_fill(drop, float("-inf")), dim=-1)
        cdf = lp_ranked.exp().cumsum(dim=-1)
        draws = torch.stack([torch.rand((), generator=rows[i].generator, dtype=cdf.dtype) for i in sampled])
        rank = (cdf < (draws * cdf[:, -1])[:, None]).sum(dim=-1).clamp(max=vocab - 1)
        rank = torch.minimum(rank, (~drop).sum(dim=-1) - 1)  # never a truncated token (rounding at the tail)
        tokens[s] = order.gather(1, rank[:, None])[:, 0]
        logps[s] = lp_ranked.gather(1, rank[:, None])[:, 0]
        return tokens, logps
