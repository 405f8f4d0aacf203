"""The `hf_cpu` rollout server's sampling seeds: a request's sample depends on what it asks and at which step, not on
when it arrived, so a resumed run samples what the uninterrupted run sampled.

The server class is used directly (no Ray actor): its `generate` is the coroutine the actor serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from verl_personadual.core.cpu.rollout import HFRolloutServer, request_seed

CONFIG = {
    "seed": 7,
    "prompt_length": 8,
    "response_length": 6,
    "max_num_seqs": 8,
    "dtype": "float32",
    "engine_kwargs": {"hf_cpu": {"num_threads": 1}},
}
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": 0}
PROMPT_A, PROMPT_B = [5, 6, 7], [9, 10, 11, 12]


def test_request_seed_is_sha256_of_its_key():
    """Independent reference: the first 8 bytes of SHA-256 of the documented key, shifted into [0, 2**62)."""
    key = "7|1|3|2|5,6,7"
    expected = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 2
    assert request_seed(7, 1, 3, PROMPT_A, 2) == expected
    assert 0 <= expected < 2**62
    assert request_seed(7, 1, 3, PROMPT_A, 2) != request_seed(7, 1, 3, PROMPT_A, 1)
    assert request_seed(7, 1, 3, PROMPT_A, 2) != request_seed(7, 1, 4, PROMPT_A, 2)


async def _serve(server: HFRolloutServer, prompts: list[list[int]], sequential: bool) -> list[tuple[int, ...]]:
    if sequential:
        return [tuple((await server.generate(p, dict(SAMPLING))).token_ids) for p in prompts]
    outs = await asyncio.gather(*(server.generate(p, dict(SAMPLING)) for p in prompts))
    return [tuple(o.token_ids) for o in outs]


async def _sync(server: HFRolloutServer, step: int) -> None:
    await server.update_weights([(k, v.clone()) for k, v in server.model.state_dict().items()], global_steps=step)


@pytest.fixture(scope="module")
def make_server(tiny_model_dir: Path):
    return lambda: HFRolloutServer(CONFIG, {"path": str(tiny_model_dir)}, replica_rank=0)


def test_samples_do_not_depend_on_arrival_order_or_batching(make_server):
    """A, A, B one at a time vs B, A, A in one batch: the same three samples (the k-th A gets the k-th seed)."""
    first = asyncio.run(_serve(make_server(), [PROMPT_A, PROMPT_A, PROMPT_B], sequential=True))
    second = asyncio.run(_serve(make_server(), [PROMPT_B, PROMPT_A, PROMPT_A], sequential=False))
    assert first[0] == second[1] and first[1] == second[2] and first[2] == second[0]
    assert first[0] != first[1]  # two requests of one prompt get two seeds (6 tokens of a 256-token vocabulary)


def test_a_weight_sync_starts_the_next_steps_seeds(make_server):
    """A server synced for step 2, then for step 3, samples at step 3 what a fresh server synced for step 3 (a
    resumed run) samples, and differently from step 2. Each server lives in one event loop, as in its Ray actor."""

    async def run_on() -> tuple[list, list]:
        server = make_server()
        await _sync(server, 2)
        before = await _serve(server, [PROMPT_A, PROMPT_A], sequential=True)
        await _sync(server, 3)
        return before, await _serve(server, [PROMPT_A, PROMPT_A], sequential=True)

    async def resumed() -> list:
        server = make_server()
        await _sync(server, 3)
        return await _serve(server, [PROMPT_A, PROMPT_A], sequential=False)

    before, continued = asyncio.run(run_on())
    assert continued == asyncio.run(resumed())
    assert continued != before


class _HeldGenerator:
    """The server's BatchGenerator, holding each batch until the test releases it (a sync arrives meanwhile)."""

    def __init__(self, engine) -> None:
        self.engine, self.started, self.release = engine, threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.engine, name)  # max_batch_size, forward_passes: the real generator's

    def generate(self, requests):
        self.started.set()
        assert self.release.wait(timeout=60), "the test never released the batch"
        return self.engine.generate(requests)


def test_a_row_is_tagged_with_the_weights_that_generated_it_when_a_sync_arrives_meanwhile(make_server):
    """A sync issued while a batch generates waits for it, then runs before the batch's callers resume; each caller
    still reports the step of the weights that generated its tokens (the token dump's policy_steps), and the next
    request the new step."""

    async def run() -> tuple[int, int, int]:
        server = make_server()
        await _sync(server, 4)
        held = server.engine = _HeldGenerator(server.engine)
        generation = asyncio.create_task(server.generate(PROMPT_A, dict(SAMPLING)))
        assert await asyncio.to_thread(held.started.wait, 60), "the batch never started"
        sync = asyncio.create_task(_sync(server, 5))
        await asyncio.sleep(0.05)  # the sync is waiting for the model
        held.release.set()
        first = await generation
        await sync
        later = await server.generate(PROMPT_B, dict(SAMPLING))
        return first.extra_fields["global_steps"], server.global_steps, later.extra_fields["global_steps"]

    assert asyncio.run(run()) == (4, 5, 5)


def test_server_threads_default_to_torchs_own(monkeypatch):
    """Without ``num_threads`` the server keeps torch's thread count (which OMP_NUM_THREADS sets: the CPU recipes'
    launcher sets 1); an explicit value wins."""
    import torch

    from verl_personadual.core.cpu.rollout import ServerOptions

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert ServerOptions.from_engine_kwargs({}).num_threads == 3
    assert ServerOptions.from_engine_kwargs({"hf_cpu": {"num_threads": 2}}).num_threads == 2
