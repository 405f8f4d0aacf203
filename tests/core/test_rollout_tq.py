"""The dual-mode loops under verl's v1 TransferQueue worker: verl itself spawns the n sessions of a prompt
(``AgentLoopWorkerTQ._run_prompt``, ``session_id`` = 0..n-1) and stores the rows; we read them back from TQ."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
from test_rollout import (
    FILLER,
    MESSAGES,
    SAMPLING,
    ScriptedServer,
    TinyModelServer,
    make_config,
)
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

from verl_personadual.core.metrics import mode_codes, mode_metrics
from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.core.names import AGENT_LOOP_FORCED, AGENT_LOOP_FREE, MODE_FIELD
from verl_personadual.core.rollout import FORCED_FIELD

pytestmark = pytest.mark.ray

FIELDS = ["responses", "response_mask", "rollout_log_probs", "session_id", "extra_fields", "data_source"]


def run_prompt(tq, cfg, server, agent_name: str, validate: bool = False) -> tuple[str, str]:
    """One prompt through verl's ``_run_prompt``; returns (uid, group status tag)."""
    worker = AgentLoopWorkerTQ.__ray_metadata__.modified_class(cfg, llm_client=server)
    uid = uuid.uuid4().hex
    prompt = dict(uid=uid, raw_prompt=MESSAGES, global_steps=1, agent_name=agent_name, data_source="flan", index=0)
    trajectory = {"step": 1, "sample_index": 0, "rollout_n": 0, "validate": validate}
    asyncio.run(worker._run_prompt(prompt, dict(SAMPLING), trajectory, trace=False))
    partition = "val" if validate else "train"
    return uid, tq.kv_list(partition_id=partition)[partition][uid]["status"]


@pytest.mark.parametrize("n", [4, 6])
def test_forced_group_in_transfer_queue(n: int, ray_tq, ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    response_length = 5
    server = TinyModelServer(tiny_model_dir, tokenizer.pad_token_id)
    cfg = make_config(ppo_config, tiny_model_dir, n, response_length)
    uid, status = run_prompt(ray_tq, cfg, server, AGENT_LOOP_FORCED)
    assert status == "finished"
    keys = [f"{uid}_{i}_0" for i in range(n)]
    data = ray_tq.kv_batch_get(keys=keys, partition_id="train", select_fields=FIELDS)
    padded = data.to_padded_tensor()
    prefixes = resolve_prefixes(tokenizer)
    modes, plen = prefixes.modes_of(padded["responses"], padded["response_mask"])
    assert modes.tolist() == [0] * (n // 2) + [1] * (n // 2)
    assert plen.tolist() == [1] * n
    assert list(data["session_id"]) == list(range(n))
    assert padded["responses"].shape == (n, response_length)
    assert padded["response_mask"].tolist() == [[1] * response_length] * n
    assert padded["rollout_log_probs"][:, 0].tolist() == [0.0] * n
    extra = list(data["extra_fields"])
    assert [e[MODE_FIELD] for e in extra] == ["general"] * (n // 2) + ["personalized"] * (n // 2)
    assert all(e[FORCED_FIELD] is True for e in extra)
    assert mode_codes([e[MODE_FIELD] for e in extra]).tolist() == modes.tolist()
    # what the lead's trainer would log for this group (rewards made up: personalized rows get 1.0)
    metrics = mode_metrics(modes, modes.astype(float), list(data["data_source"]), ["aligned"] * n, split="train")
    assert metrics["personadual/train/flan/aligned/personalized_rate"] == 0.5
    assert metrics["personadual/train/flan/aligned/reward_gap"] == 1.0


def test_odd_n_fails_the_group(ray_tq, ppo_config, tiny_model_dir: Path) -> None:
    cfg = make_config(ppo_config, tiny_model_dir, 3, 5)
    _, status = run_prompt(ray_tq, cfg, ScriptedServer(FILLER), AGENT_LOOP_FORCED)
    assert status == "failure"


def test_free_validation_group(ray_tq, ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    pers = resolve_prefixes(tokenizer).ids[Mode.PERSONALIZED]
    cfg = make_config(ppo_config, tiny_model_dir, 4, 6)
    cfg.actor_rollout_ref.rollout.val_kwargs.n = 3
    server = ScriptedServer(list(pers) + FILLER)
    uid, status = run_prompt(ray_tq, cfg, server, AGENT_LOOP_FREE, validate=True)
    assert status == "finished" and len(server.calls) == 3
    data = ray_tq.kv_batch_get(keys=[f"{uid}_{i}_0" for i in range(3)], partition_id="val", select_fields=FIELDS)
    padded = data.to_padded_tensor()
    assert padded["responses"].tolist() == [list(pers) + FILLER] * 3
    assert [(e[MODE_FIELD], e[FORCED_FIELD]) for e in data["extra_fields"]] == [("personalized", False)] * 3
    assert np.array_equal(resolve_prefixes(tokenizer).modes_of(padded["responses"])[0], [1, 1, 1])
