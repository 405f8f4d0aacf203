"""Two-turn RL rows (issue 16, item 5): build_rl's --multi-turn-ratio and the standalone converter on the toy task,
checked against the single-turn build; verl's RLHFDataset loads them and the forced agent loop templates the whole
dialogue through verl's real agent-loop worker."""

from __future__ import annotations

import asyncio
import copy
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
from verl.workers.rollout.replica import TokenOutput

from verl_personadual.apps import build_multiturn, build_rl
from verl_personadual.core import names
from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.core.prompts import format_answer
from verl_personadual.data import multiturn, toy
from verl_personadual.data.families import Selector, family_of


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mt")
    for name, extra in (("single", []), ("multi", ["--multi-turn-ratio", "0.5"])):
        assert build_rl.main(["--samples", "--out", str(root / name), "--no-progress", *extra]) == 0
    return root / "single", root / "multi"


def test_build_rl_two_turn_rows(builds: tuple[Path, Path]) -> None:
    single_dir, multi_dir = builds
    for split, n in (("train", 20), ("validation", 8)):
        single, multi = read(single_dir / f"{split}.parquet"), read(multi_dir / f"{split}.parquet")
        by_id = {r["extra_info"]["source_id"]: r for r in single}
        assert len(multi) == n and sum(r["extra_info"]["turns"] == 2 for r in multi) == math.floor(0.5 * n + 0.5)
        for s, m in zip(single, multi):
            info = dict(m["extra_info"])
            turns, first_id = info.pop("turns"), info.pop("first_turn_source_id")
            # everything but the prompt is the single-turn row's
            assert info == s["extra_info"] and m["reward_model"] == s["reward_model"]
            assert (m["data_source"], m["agent_name"]) == (s["data_source"], s["agent_name"])
            if turns == 1:
                assert m["prompt"] == s["prompt"] and first_id is None
                continue
            first = by_id[first_id]
            assert family_of(first) != family_of(s)
            mode = Mode.PERSONALIZED if first["data_source"] == "alignx" else Mode.GENERAL
            assert m["prompt"] == [
                *first["prompt"],
                {"role": "assistant", "content": mode.prefix + format_answer(first["reward_model"]["ground_truth"])},
                *s["prompt"],
            ]
    assert (
        build_rl.main(
            ["--samples", "--out", str(multi_dir.parent / "bad"), "--multi-turn-ratio", "1.5", "--no-progress"]
        )
        == 2
    )


def test_verl_rlhf_dataset_loads_two_turn_rows(builds: tuple[Path, Path], tokenizer, tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    cfg = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 4096,
            "filter_overlong_prompts": True,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    path = builds[1] / "train.parquet"
    rows = read(path)
    ds = RLHFDataset(data_files=str(path), tokenizer=tokenizer, config=cfg)
    assert len(ds) == len(rows)
    batch = collate_fn([ds[i] for i in range(len(rows))])
    for i, row in enumerate(rows):
        assert [m["role"] for m in batch["raw_prompt"][i]] == [m["role"] for m in row["prompt"]]
        assert batch["extra_info"][i]["turns"] == row["extra_info"]["turns"]
    assert {len(p) for p in batch["raw_prompt"]} == {1, 3}
    assert list(batch["agent_name"]) == [names.AGENT_LOOP_FORCED] * len(rows)


class EchoServer:
    """Returns three fixed ids; records every request (the server manager's ``generate`` contract)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **_) -> TokenOutput:
        self.calls.append(list(prompt_ids))
        return TokenOutput(token_ids=[30, 31, 32], log_probs=[-1.0] * 3)


def test_forced_agent_loop_templates_the_whole_dialogue(
    builds: tuple[Path, Path], ppo_config, tiny_model_dir: Path, tokenizer
) -> None:
    row = next(r for r in read(builds[1] / "train.parquet") if r["extra_info"]["turns"] == 2)
    cfg = copy.deepcopy(ppo_config)
    cfg.actor_rollout_ref.model.path = str(tiny_model_dir)
    cfg.actor_rollout_ref.rollout.name = "vllm"
    cfg.actor_rollout_ref.rollout.n = 2
    cfg.data.max_prompt_length = 2048
    cfg.data.max_response_length = 8
    server = EchoServer()
    worker = AgentLoopWorker(cfg, llm_client=server)
    trajectory = {"step": 1, "sample_index": 0, "rollout_n": 0, "validate": False}

    async def both() -> list:
        return await asyncio.gather(
            *[
                worker._run_agent_loop(
                    {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True},
                    trajectory,
                    agent_name=names.AGENT_LOOP_FORCED,
                    trace=False,
                    session_id=i,
                    raw_prompt=row["prompt"],
                    uid="u",
                    global_steps=1,
                    data_source=row["data_source"],
                )
                for i in range(2)
            ]
        )

    outs = asyncio.run(both())
    text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.encode(text, add_special_tokens=False)
    ids = resolve_prefixes(tokenizer).ids
    first_mode = Mode.PERSONALIZED if row["prompt"][1]["content"].startswith(Mode.PERSONALIZED.prefix) else Mode.GENERAL
    assert ids[first_mode][0] in prompt  # the first turn's mode token is in the history as its own token
    assert sorted(server.calls) == sorted([prompt + list(ids[Mode.GENERAL]), prompt + list(ids[Mode.PERSONALIZED])])
    for out in outs:
        assert out.prompt_ids[0, -len(prompt) :].tolist() == prompt
        assert out.response_ids[0, 1:4].tolist() == [30, 31, 32]


def test_toy_rows_get_first_turns_from_the_other_family(tmp_path: Path) -> None:
    toy.build(tmp_path / "toy", toy.ToySizes(sft=4, rl=40, rl_val=8, eval=4), seed=0)
    src = tmp_path / "toy" / "rl" / "train.parquet"
    out = tmp_path / "mt" / "train.parquet"
    assert (
        build_multiturn.main(["--in", str(src), "--out", str(out), "--ratio", "0.5", "--personalized", "task=helpful"])
        == 0
    )
    single, multi = read(src), read(out)
    by_id = {r["extra_info"]["source_id"]: r for r in single}
    two = [r for r in multi if r["extra_info"]["turns"] == 2]
    assert len(two) == 20
    for r in two:
        first = by_id[r["extra_info"]["first_turn_source_id"]]
        assert (first["extra_info"]["task"] == "helpful") != (r["extra_info"]["task"] == "helpful")
        prefix = Mode.PERSONALIZED.prefix if first["extra_info"]["task"] == "helpful" else Mode.GENERAL.prefix
        assert r["prompt"][1]["content"] == prefix + format_answer(first["reward_model"]["ground_truth"])
    # same seed, same rows; a selector that matches nothing leaves no other family
    again = tmp_path / "again.parquet"
    assert (
        build_multiturn.main(
            ["--in", str(src), "--out", str(again), "--ratio", "0.5", "--personalized", "task=helpful"]
        )
        == 0
    )
    assert again.read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="other family"):
        multiturn.add_first_turns(single, 0.5, 0, "train", Selector.parse("task=nothing"))
