"""The CPU rollout backend ``actor_rollout_ref.rollout.name=hf_cpu`` (``names.CPU_ROLLOUT``): verl's
token-in / token-out rollout server protocol served by ``transformers`` on CPU.

Three pieces, as verl splits every rollout backend:

- :class:`HFRolloutServer`, a Ray actor owning its own copy of the model: ``generate`` (the call verl's
  ``LLMServerClient`` makes), ``update_weights`` and the control methods a replica fans out. Concurrent
  ``generate`` calls are gathered into batches for :class:`~verl_personadual.core.cpu.generation.BatchGenerator`:
  a batch starts once no new request has arrived for ``batch_wait_ms`` (or ``max_num_seqs`` are waiting, or
  ``max_batch_wait_ms`` passed); requests arriving while a batch runs go into the next one.
- :class:`HFRolloutReplica`, registered in verl's ``RolloutReplicaRegistry``: one server per replica, in verl's
  hybrid mode (``sync`` / ``colocate_async``: actor and rollout take turns on the same resources) or standalone
  (``separate_async``: verl gives the replica a resource pool of its own and starts a ``CheckpointEngineWorker``
  on each of its ranks).
- :class:`HFRolloutAdapter`, the worker-side ``BaseRollout``: inside verl's hybrid worker verl's naive checkpoint
  engine hands it the actor's full weights after every step; inside a standalone replica's
  ``CheckpointEngineWorker`` the checkpoint engine's ``receive_weights`` does (the ``gloo`` engine on CPU,
  :mod:`verl_personadual.core.cpu.checkpoint_engine`). The replica's leader rank sends them to its server in one
  call. The server refuses weights that do not cover its model (a silent partial sync would roll out with stale
  weights).

Configuration: verl's rollout config (``prompt_length``, ``response_length``, ``max_model_len``, ``max_num_seqs``,
``dtype``, ``seed``, ``repetition_penalty``, ``ignore_eos``) plus ``rollout.engine_kwargs.hf_cpu``:
``num_threads`` (torch threads of the server, default: torch's own, ``OMP_NUM_THREADS`` when set, else the
physical cores), ``batch_wait_ms`` (default 5) and ``max_batch_wait_ms`` (default 50).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import ray
import torch
from verl.utils.torch_dtypes import PrecisionType
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput
from verl.workers.rollout.utils import ensure_async_iterator

from verl_personadual.core.cpu.generation import (
    BatchGenerator,
    GenerationRequest,
    SamplingParams,
)
from verl_personadual.core.names import CPU_ROLLOUT

__all__ = [
    "ServerOptions",
    "request_seed",
    "weight_checksum",
    "HFRolloutServer",
    "HFRolloutReplica",
    "HFRolloutAdapter",
    "server_name",
]

logger = logging.getLogger(__name__)


def server_name(replica_rank: int, suffix: str = "") -> str:
    """Ray actor name of a replica's server (the adapter finds its server by it)."""
    return f"{CPU_ROLLOUT}_server_{replica_rank}{suffix}"


def request_seed(
    base_seed: int, replica_rank: int, global_steps: int | None, prompt_ids: list[int], occurrence: int
) -> int:
    """A request's sampling seed in [0, 2**62): SHA-256 of its key (see :class:`HFRolloutServer`)."""
    key = f"{base_seed}|{replica_rank}|{global_steps}|{occurrence}|" + ",".join(map(str, prompt_ids))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 2


def _get(config: Any, key: str, default: Any = None) -> Any:
    value = config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)
    return default if value is None else value


@dataclass(frozen=True)
class ServerOptions:
    """``rollout.engine_kwargs.hf_cpu`` (see the module docstring)."""

    num_threads: int
    batch_wait_ms: float = 5.0
    max_batch_wait_ms: float = 50.0

    @classmethod
    def from_engine_kwargs(cls, engine_kwargs: Mapping[str, Any] | None) -> "ServerOptions":
        section = dict((engine_kwargs or {}).get(CPU_ROLLOUT) or {})
        unknown = sorted(set(section) - {"num_threads", "batch_wait_ms", "max_batch_wait_ms"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {unknown} under actor_rollout_ref.rollout.engine_kwargs.{CPU_ROLLOUT}; "
                "known: num_threads, batch_wait_ms, max_batch_wait_ms"
            )
        threads = int(section.pop("num_threads", 0) or torch.get_num_threads())
        options = cls(num_threads=threads, **{k: float(v) for k, v in section.items()})
        if options.num_threads < 1 or options.batch_wait_ms < 0 or options.max_batch_wait_ms < options.batch_wait_ms:
            raise ValueError(f"invalid actor_rollout_ref.rollout.engine_kwargs.{CPU_ROLLOUT}: {options}")
        return options


def weight_checksum(model: torch.nn.Module) -> float:
    """Sum of every parameter in float64 (tied weights once): identifies a set of weights across processes."""
    return float(sum(p.detach().double().sum() for p in model.parameters()))


class HFRolloutServer:
    """The rollout server of one replica (a Ray actor; see the module docstring).

    Args:
        config: verl's ``RolloutConfig`` (dataclass) of the rollout.
        model_config: verl's model config (``path`` / ``local_path``, optional ``tokenizer_path``).
        replica_rank: this replica's rank.

    Sampling seeds. A request without its own ``seed`` draws from a generator seeded by :func:`request_seed`:
    a hash of (``config.seed``, replica rank, global step, prompt ids, how many times this prompt was already
    requested at this step). A seed therefore does not depend on arrival order, and a run resumed from a
    checkpoint samples the same tokens at a given step as the uninterrupted run.
    """

    def __init__(self, config: Any, model_config: Any, replica_rank: int = 0) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = ServerOptions.from_engine_kwargs(_get(config, "engine_kwargs", {}))
        torch.set_num_threads(self.options.num_threads)
        path = _get(model_config, "local_path") or _get(model_config, "path")
        dtype = PrecisionType.to_dtype(_get(config, "dtype", "float32"))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(_get(model_config, "tokenizer_path") or path)
        eos = self.model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.append(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0]
        self.config = config
        self.max_model_len = int(
            _get(config, "max_model_len") or _get(config, "prompt_length") + _get(config, "response_length")
        )
        self.engine = BatchGenerator(
            self.model,
            eos_token_ids=eos_ids,
            pad_token_id=pad,
            max_batch_size=int(_get(config, "max_num_seqs", 256)),
            decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False),
        )
        self.base_seed = int(_get(config, "seed", 0))
        self._occurrences: dict[tuple[int, ...], int] = {}
        self.replica_rank = replica_rank
        self.global_steps: int | None = None
        self.weight_version = 0
        self.requests_served = 0
        self.served_by_version: dict[int, int] = {}
        self.batch_sizes: list[int] = []
        self._pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None
        self._batcher: asyncio.Task | None = None

    # ---- generation ----------------------------------------------------------------------------------------
    def _params(self, prompt_len: int, sampling_params: Mapping[str, Any]) -> SamplingParams:
        response_length = int(_get(self.config, "response_length"))
        prompt_length = int(_get(self.config, "prompt_length"))
        return SamplingParams.from_request(
            sampling_params,
            default_max_tokens=min(response_length, prompt_length + response_length - prompt_len),
            max_possible_tokens=self.max_model_len - prompt_len,
            defaults={
                "repetition_penalty": float(_get(self.config, "repetition_penalty", 1.0)),
                "ignore_eos": bool(_get(self.config, "ignore_eos", False)),
            },
        )

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str = "",
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Generate after ``prompt_ids`` (verl's server protocol). Raises ``SamplingParamsError`` on bad params
        and ``ValueError`` on multimodal input."""
        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise ValueError(f"the {CPU_ROLLOUT} rollout backend serves text-only prompts")
        prompt = [int(t) for t in prompt_ids]
        params = self._params(len(prompt), sampling_params)
        if params.seed is not None:
            seed = params.seed
        else:
            key = tuple(prompt)
            occurrence = self._occurrences.get(key, 0)
            self._occurrences[key] = occurrence + 1
            seed = request_seed(self.base_seed, self.replica_rank, self.global_steps, prompt, occurrence)
        request = GenerationRequest(prompt, params, torch.Generator().manual_seed(seed))
        self._ensure_batcher()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._arrived.set()
        result, steps = await future
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs,
            stop_reason=result.stop_reason,
            num_preempted=0,
            extra_fields={"global_steps": steps},
        )

    def _ensure_batcher(self) -> None:
        if self._batcher is None or self._batcher.done():
            self._arrived = self._arrived or asyncio.Event()
            self._model_lock = self._model_lock or asyncio.Lock()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        wait, cap = self.options.batch_wait_ms / 1000, self.options.max_batch_wait_ms / 1000
        while True:
            await self._arrived.wait()
            waited, seen = 0.0, -1
            while len(self._pending) != seen and len(self._pending) < self.engine.max_batch_size and waited < cap:
                seen = len(self._pending)
                await asyncio.sleep(wait)
                waited += wait
            batch = self._pending[: self.engine.max_batch_size]
            del self._pending[: len(batch)]
            if not self._pending:
                self._arrived.clear()
            async with self._model_lock:
                # the weight version that generates this batch: a sync waiting for the lock runs before the callers
                # resume, so they must not read self.global_steps then
                steps = self.global_steps
                try:
                    results = await asyncio.to_thread(self.engine.generate, [r for r, _ in batch])
                except Exception as err:  # the batch's callers see the error; the server keeps serving
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                    continue
            self.requests_served += len(batch)
            self.served_by_version[self.weight_version] = self.served_by_version.get(self.weight_version, 0) + len(
                batch
            )
            self.batch_sizes.append(len(batch))
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result((result, steps))

    # ---- weights ---------------------------------------------------------------------------------------------
    async def update_weights(
        self, named_tensors: list[tuple[str, torch.Tensor]], global_steps: int | None = None
    ) -> dict:
        """Load the actor's full weights; raises ``ValueError`` naming missing or unexpected tensors."""
        self._model_lock = self._model_lock or asyncio.Lock()
        async with self._model_lock:
            state = {name: tensor for name, tensor in named_tensors}
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {name for name, _ in self.model.named_parameters(remove_duplicate=False)} - set(
                dict(self.model.named_parameters())
            )
            missing = [k for k in missing if k not in tied]
            if missing or unexpected:
                raise ValueError(
                    f"{CPU_ROLLOUT} server {self.replica_rank}: weight sync does not match the model: "
                    f"missing {missing[:5]} ({len(missing)}), unexpected {list(unexpected)[:5]} ({len(unexpected)})"
                )
            served = self.served_by_version.get(self.weight_version, 0)
            self.weight_version += 1
            if global_steps is not None:
                self.global_steps = global_steps
            self._occurrences.clear()
            # one line per sync: which weights the following rollouts use (tests match the checksum)
            print(
                f"[{CPU_ROLLOUT}] server {self.replica_rank}: weights version {self.weight_version} "
                f"(global step {global_steps}): {len(state)} tensors, checksum {weight_checksum(self.model):.9e}; "
                f"requests served with version {self.weight_version - 1}: {served}",
                flush=True,
            )
        return {"tensors": len(state), "version": self.weight_version}

    async def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks: weight version, a float64 checksum of all parameters, batches."""
        return {
            "weight_version": self.weight_version,
            "checksum": weight_checksum(self.model),
            "served_by_version": dict(self.served_by_version),
            "global_steps": self.global_steps,
            "requests_served": self.requests_served,
            "batch_sizes": list(self.batch_sizes),
            "forward_passes": self.engine.forward_passes,
        }

    # ---- control methods a replica fans out (verl's RolloutReplica) ----------------------------------------
    async def wake_up(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def sleep(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFRolloutReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, in verl's hybrid or standalone mode (module docstring)."""

    #: verl's rollout modes this backend serves.
    MODES = (RolloutMode.HYBRID, RolloutMode.STANDALONE)

    async def launch_servers(self) -> None:
        if self.rollout_mode not in self.MODES:
            raise ValueError(
                f"the {CPU_ROLLOUT} rollout backend runs in verl's hybrid mode (trainer.v1.trainer_mode=sync or "
                f"colocate_async) or standalone (separate_async), not {self.rollout_mode}"
            )
        name = server_name(self.replica_rank, self.name_suffix)
        server = (
            ray.remote(HFRolloutServer)
            .options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.wake_up.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # the load balancer's key for this server; there is no HTTP endpoint

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFRolloutAdapter(BaseRollout):
    """Inside verl's hybrid worker or a standalone replica's checkpoint-engine worker: forwards the actor's weights
    to this replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_leader_rank = rank % world == 0
        self.sleep_level = 1
        self._server: Any = None

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        """Drain verl's (name, tensor) generator on every rank (gathers are collectives); the leader sends."""
        if wire_format != "named_tensors":
            raise ValueError(f"the {CPU_ROLLOUT} rollout backend takes full named tensors, not {wire_format!r}")
        named = [(name, t.detach().to("cpu").clone()) async for name, t in ensure_async_iterator(weights)]
        if self.is_leader_rank:
            if self._server is None:
                self._server = ray.get_actor(server_name(self.replica_rank))
            await self._server.update_weights.remote(named, global_steps=kwargs.get("global_steps"))
