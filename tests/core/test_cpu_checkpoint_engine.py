"""The ``gloo`` checkpoint engine (verl_personadual/core/cpu/checkpoint_engine.py) driven as verl's
``CheckpointEngineManager`` drives it: ``prepare`` on every worker, ``build_topology`` from their metadata,
``init_process_group`` on all at once, ``send_weights`` / ``receive_weights`` concurrently, ``finalize``. Each
worker runs in a thread of its own (a gloo group is per process group object, not per process). Expected values:
the tensors the sender was given, byte for byte."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from verl_personadual.core.names import CPU_CHECKPOINT_ENGINE


def _engines(actor_ranks: int, rollout_workers: int, bucket_size: int):
    from verl.checkpoint_engine import CheckpointEngineRegistry

    new = CheckpointEngineRegistry.new
    actors = [
        new(CPU_CHECKPOINT_ENGINE, bucket_size=bucket_size, is_master=i == 0, host="127.0.0.1")
        for i in range(actor_ranks)
    ]
    rollouts = [new(CPU_CHECKPOINT_ENGINE, bucket_size=bucket_size) for _ in range(rollout_workers)]
    return actors, rollouts


def _sync(actors, rollouts, weights: list[tuple[str, torch.Tensor]], global_steps: int) -> list[dict]:
    """One weight sync as verl's manager runs it; returns what each rollout worker received."""
    metadata = [e.prepare() for e in actors + rollouts]
    actor_kwargs, rollout_kwargs = type(actors[0]).build_topology(len(actors), len(rollouts), metadata)
    received: list[dict] = [{} for _ in rollouts]
    errors: list[BaseException] = []

    def actor(i: int) -> None:
        engine = actors[i]
        engine.init_process_group(**{k: v[i] for k, v in actor_kwargs.items()})
        asyncio.run(engine.send_weights(iter(weights), global_steps=global_steps))

    def rollout(i: int) -> None:
        engine = rollouts[i]
        engine.init_process_group(**{k: v[i] for k, v in rollout_kwargs.items()})

        async def drain() -> dict:
            return {name: t.clone() async for name, t in engine.receive_weights(global_steps=global_steps)}

        received[i] = asyncio.run(drain())

    def guarded(fn, i):
        try:
            fn(i)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(actor, i)) for i in range(len(actors))]
    threads += [threading.Thread(target=guarded, args=(rollout, i)) for i in range(len(rollouts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]
    for e in actors + rollouts:
        e.finalize()
    return received


def _weights(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("embed", torch.randn(7, 5, generator=g)),  # 140 bytes: split over two 100-byte buckets
        ("norm", torch.randn(3, generator=g)),
        ("half", torch.randn(4, 2, generator=g).to(torch.bfloat16)),
        ("ids", torch.arange(6, dtype=torch.int64)),
    ]


def test_rollout_workers_receive_the_actors_tensors_exactly_across_buckets_and_syncs(capfd):
    actors, rollouts = _engines(actor_ranks=2, rollout_workers=2, bucket_size=100)
    for step in (0, 1):  # a second sync builds a new group on the same store
        sent = _weights(seed=step)
        received = _sync(actors, rollouts, sent, global_steps=step)
        for got in received:
            assert list(got) == [name for name, _ in sent]  # the order the actor sent them in
            for name, tensor in sent:
                assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape
                assert torch.equal(got[name], tensor), name
    out = capfd.readouterr().out
    # 140 + 12 + 16 + 48 bytes; buckets of <= 100: [embed 0:100] [embed 100:140, norm, half] [ids]
    for step, sync in ((0, 1), (1, 2)):
        line = f"sync {sync} (global step {step}): 4 tensors, 216 bytes in 3 bucket(s) to 2 rollout worker(s)"
        assert f"[{CPU_CHECKPOINT_ENGINE} checkpoint engine] {line}" in out


def test_topology_is_actor_rank_0_plus_every_rollout_worker():
    from verl_personadual.core.cpu.checkpoint_engine import GlooCheckpointEngine

    master = {"host": "h", "port": 1, "sync": 1}
    actor, rollout = GlooCheckpointEngine.build_topology(3, 2, [master, {}, {}, {}, {}])
    assert actor == {"rank": [0, -1, -1], "world_size": [3, 3, 3], "master": [master] * 3}
    assert rollout == {"rank": [1, 2], "world_size": [3, 3], "master": [master] * 2}
    with pytest.raises(ValueError, match="actor rank 0 must be the master"):
        GlooCheckpointEngine.build_topology(1, 1, [{}, {}])


def test_a_rollout_worker_cannot_send_and_the_sender_cannot_receive():
    actors, rollouts = _engines(actor_ranks=1, rollout_workers=1, bucket_size=100)
    with pytest.raises(RuntimeError, match="send_weights before init_process_group"):
        asyncio.run(rollouts[0].send_weights(iter([])))
    actors[0].rank = 0

    async def receive():
        return [x async for x in actors[0].receive_weights()]

    with pytest.raises(RuntimeError, match="only rollout workers receive weights"):
        asyncio.run(receive())
