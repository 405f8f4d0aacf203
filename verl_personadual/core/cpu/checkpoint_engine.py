"""The ``gloo`` checkpoint engine (``names.CPU_CHECKPOINT_ENGINE``): verl's weight transfer from the actor to
standalone rollout replicas, on CPU tensors.

verl's ``separate_async`` trainer pushes the actor's weights to rollout replicas on a pool of their own through a
checkpoint engine (``actor_rollout_ref.rollout.checkpoint_engine.backend``); verl's engines move GPU buffers
(NCCL, NIXL, HCCL, Mooncake) and its in-process ``naive`` engine is refused there. This engine is verl's NCCL
engine's protocol on a gloo process group of its own, registered through verl's public
``CheckpointEngineRegistry.register`` (when verl imports ``verl.checkpoint_engine``; ``core.plugin.DEFERRED``):

- ``prepare``: the actor's rank 0 (``is_master``) opens a ``TCPStore`` on a free port of its node and returns
  its address; every other worker returns ``{}``;
- ``build_topology``: the group is actor rank 0 (rank 0, the sender) plus every rollout worker (ranks
  1..world-1); the other actor ranks get rank -1 and only drain the weight generator (producing each full
  tensor is collective over the actor's FSDP group);
- ``init_process_group``: a ``ProcessGroupGloo`` over that store, new for every sync (its keys prefixed by the
  sync's number), dropped by ``finalize``;
- ``send_weights`` / ``receive_weights``: the weights cut into buckets of ``update_weights_bucket_megabytes``
  by verl's ``split_weight_chunks`` (a bucket holds copies of its chunks, no more bytes than it carries);
  per bucket a header (the chunks' ``TensorMeta``, its length, whether it is
  the last) and then the bucket's bytes are broadcast from rank 0; receivers rebuild the tensors with verl's
  ``merge_weight_chunks`` in a fresh buffer per bucket, so a yielded tensor stays valid after the next bucket.

Options (``checkpoint_engine.engine_kwargs.gloo``): ``timeout_s`` of the store and of every broadcast (default
1800); ``host``, the address the master's store listens on (default: its Ray node's IP). The transfer is exact:
the rollout receives the actor's bytes.
"""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any, AsyncGenerator, Generator

import torch
from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore
from verl.checkpoint_engine import CheckpointEngine, CheckpointEngineRegistry, TensorMeta
from verl.checkpoint_engine.base import merge_weight_chunks, split_weight_chunks
from verl.workers.rollout.utils import ensure_async_iterator

from verl_personadual.core.names import CPU_CHECKPOINT_ENGINE

__all__ = ["GlooCheckpointEngine", "SENDER_RANK"]

#: The group rank of the actor's rank 0, the only sender.
SENDER_RANK = 0


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address().strip("[]")


@CheckpointEngineRegistry.register(CPU_CHECKPOINT_ENGINE)
class GlooCheckpointEngine(CheckpointEngine):
    """Actor rank 0 broadcasts the weights to the rollout workers over gloo (see the module docstring).

    Args:
        bucket_size: bytes per broadcast (``checkpoint_engine.update_weights_bucket_megabytes``); a larger tensor
            is sent in several chunks.
        is_master: True on the actor's rank 0 (verl's actor worker passes it; rollout workers do not).
        timeout_s: timeout of the store and of every collective.
        host: the address of the master's store (default: the Ray node's IP).
    """

    def __init__(
        self, bucket_size: int, is_master: bool = False, timeout_s: float = 1800.0, host: str | None = None
    ) -> None:
        if bucket_size <= 0:
            raise ValueError(f"{CPU_CHECKPOINT_ENGINE} checkpoint engine: bucket_size must be > 0, got {bucket_size}")
        self.bucket_size = bucket_size
        self.is_master = is_master
        self.timeout = timedelta(seconds=timeout_s)
        self.host = host
        self.rank: int | None = None
        self.world_size: int | None = None
        self.group: ProcessGroupGloo | None = None
        self.syncs = 0  # the master's count of prepared syncs: prefixes each sync's group keys
        self._store: TCPStore | None = None

    def prepare(self) -> dict[str, Any]:
        """The master's store address and this sync's number (``{}`` on other workers)."""
        if not self.is_master:
            return {}
        if self._store is None:
            host = self.host or _node_ip()
            self._store = TCPStore(host, 0, is_master=True, wait_for_workers=False, timeout=self.timeout)
            self._address = (host, self._store.port)
        self.syncs += 1
        return {"host": self._address[0], "port": self._address[1], "sync": self.syncs}

    @classmethod
    def build_topology(
        cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict]
    ) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        master = metadata[0]
        if "port" not in master:
            raise ValueError(f"{CPU_CHECKPOINT_ENGINE} checkpoint engine: actor rank 0 must be the master")
        world_size = 1 + rollout_world_size
        actor = {
            "rank": [SENDER_RANK] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world_size] * actor_wg_world_size,
            "master": [master] * actor_wg_world_size,
        }
        rollout = {
            "rank": list(range(1, world_size)),
            "world_size": [world_size] * rollout_world_size,
            "master": [master] * rollout_world_size,
        }
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master: dict[str, Any]) -> None:
        """Join this sync's gloo group (blocks until every member joined); rank -1: not a member."""
        self.rank, self.world_size = rank, world_size
        if rank < 0:
            return
        store = self._store
        if rank != SENDER_RANK:
            store = TCPStore(master["host"], master["port"], is_master=False, timeout=self.timeout)
        prefixed = PrefixStore(f"{CPU_CHECKPOINT_ENGINE}/sync{master['sync']}", store)
        self.group = ProcessGroupGloo(prefixed, rank, world_size, self.timeout)

    def finalize(self) -> None:
        self.group = None

    def _broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, SENDER_RANK).wait()

    def _broadcast_header(self, header: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0 sends ``header``, the others receive it (a length, then the pickled bytes)."""
        if self.rank == SENDER_RANK:
            payload = torch.frombuffer(bytearray(pickle.dumps(header)), dtype=torch.uint8)
            self._broadcast(torch.tensor([payload.numel()], dtype=torch.int64))
            self._broadcast(payload)
            return header
        length = torch.zeros(1, dtype=torch.int64)
        self._broadcast(length)
        payload = torch.empty(int(length.item()), dtype=torch.uint8)
        self._broadcast(payload)
        return pickle.loads(payload.numpy().tobytes())

    def _send_bucket(self, parts: list[torch.Tensor], meta: dict[str, TensorMeta], is_last: bool) -> int:
        """Broadcast one bucket (``parts`` concatenated, at most ``bucket_size`` bytes); returns its bytes."""
        bucket = torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)
        self._broadcast_header({"meta": meta, "length": bucket.numel(), "is_last": is_last})
        self._broadcast(bucket)
        return bucket.numel()

    @torch.no_grad()
    async def send_weights(
        self, weights: Generator[tuple[str, torch.Tensor], None, None], global_steps: int | None = None
    ) -> dict:
        """Broadcast ``weights`` (actor rank 0; prints one line per sync); the other actor ranks drain them."""
        if self.rank is None:
            raise RuntimeError(f"{CPU_CHECKPOINT_ENGINE} checkpoint engine: send_weights before init_process_group")
        if self.rank < 0:
            async for _ in ensure_async_iterator(weights):
                pass
            return {}
        # a bucket holds copies of its chunks (a chunk is a view of a tensor the generator may free), no more bytes
        # than it carries: verl's default bucket size is 2 GiB
        parts: list[torch.Tensor] = []
        meta: dict[str, TensorMeta] = {}
        offset, sent, buckets, names = 0, 0, 0, set()
        async for tensor_meta, chunk in split_weight_chunks(weights, self.bucket_size):
            if offset + tensor_meta.chunk_size > self.bucket_size:
                sent += self._send_bucket(parts, meta, is_last=False)
                parts, meta, offset, buckets = [], {}, 0, buckets + 1
            tensor_meta.offset = offset
            meta[tensor_meta.name] = tensor_meta
            names.add(tensor_meta.name)
            parts.append(chunk.to("cpu", copy=True))
            offset += tensor_meta.chunk_size
        sent += self._send_bucket(parts, meta, is_last=True)
        # one line per sync: tests and users see that the weights went through this engine
        print(
            f"[{CPU_CHECKPOINT_ENGINE} checkpoint engine] sync {self.syncs} (global step {global_steps}): "
            f"{len(names)} tensors, {sent} bytes in {buckets + 1} bucket(s) to {self.world_size - 1} rollout worker(s)",
            flush=True,
        )
        return {}

    async def _receive_chunks(self) -> AsyncGenerator[tuple[TensorMeta, torch.Tensor], None]:
        while True:
            header = self._broadcast_header(None)
            bucket = torch.empty(header["length"], dtype=torch.uint8)
            self._broadcast(bucket)
            for tensor_meta in header["meta"].values():
                yield tensor_meta, bucket[tensor_meta.offset : tensor_meta.offset + tensor_meta.chunk_size]
            if header["is_last"]:
                return

    @torch.no_grad()
    async def receive_weights(self, global_steps: int | None = None) -> AsyncGenerator[tuple[str, torch.Tensor], None]:
        """The actor's (name, tensor) pairs, in the order it sent them (a rollout worker)."""
        if self.rank is None or self.rank <= SENDER_RANK:
            raise RuntimeError(f"{CPU_CHECKPOINT_ENGINE} checkpoint engine: only rollout workers receive weights")
        async for name, weight in merge_weight_chunks(self._receive_chunks(), self.bucket_size):
            yield name, weight
