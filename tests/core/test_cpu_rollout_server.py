"""The `hf_cpu` rollout server's sampling seeds: a request's sample depends on what it asks and at which step, not on
when it arrived, so a resumed run samples what the uninterrupted run sampled.

The server class is used directly (no Ray actor): its `generate` is the coroutine the actor serves.
"""

from __future__ import annotations

import asyncio
import hashlib
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


def test_server_threads_default_to_torchs_own(monkeypatch):
    """Without ``num_threads`` the server keeps torch's thread count (which OMP_NUM_THREADS sets: the CPU recipes'
    launcher sets 1); an explicit value wins."""
    import torch

    from verl_personadual.core.cpu.rollout import ServerOptions

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert ServerOptions.from_engine_kwargs({}).num_threads == 3
    assert ServerOptions.from_engine_kwargs({"hf_cpu": {"num_threads": 2}}).num_threads == 2
