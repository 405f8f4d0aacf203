"""The dual-mode agent loops, driven through verl's real agent-loop worker on CPU.

Each session runs exactly as verl's v1 worker runs it (``AgentLoopWorker._run_agent_loop`` with
``session_id=i``): verl's registry lookup, hydra instantiation, continuous-token prompt building, and verl's
padding postprocess. The rollout server is an in-process generator implementing the server manager's
``generate`` contract with a tiny randomly initialised Qwen3 (seeded sampling on CPU), or a scripted one.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import hydra.errors
import numpy as np
import pytest
import torch
from conftest import build_tiny_model
from omegaconf import DictConfig
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopWorker,
    DictConfigWrap,
    _agent_loop_registry,
)
from verl.workers.rollout.replica import TokenOutput

from verl_personadual.core import plugin
from verl_personadual.core.config import ConfigError
from verl_personadual.core.modes import Mode, PrefixResolutionError, resolve_prefixes
from verl_personadual.core.names import AGENT_LOOP_FORCED, AGENT_LOOP_FREE, MODE_FIELD, RESPONSE_LENGTH_FIELD
from verl_personadual.core.rollout import FORCED_FIELD, ForcedModeAgentLoop, forced_mode

MESSAGES = [{"role": "user", "content": "I am a nurse. My question is: which vitamin deficiency causes scurvy?"}]
SAMPLING = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)
PROMPT_LENGTH = 64
FILLER = [30, 31, 32]  # ordinary token ids for scripted outputs


class TinyModelServer:
    """In-process rollout server: ``generate`` per verl's ``LLMServerClient.generate`` contract.

    Samples from a tiny random Qwen3 with a seed per call (deterministic), always fills ``max_tokens``
    (``min_new_tokens``), and returns the sampled tokens' log-probs. Records every request.
    """

    def __init__(self, model_dir: Path, pad_token_id: int):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.pad_token_id = pad_token_id
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any):
        self.calls.append({"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params)})
        max_tokens = sampling_params["max_tokens"]
        torch.manual_seed(len(self.calls))
        with torch.no_grad():
            out = self.model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                do_sample=True,
                temperature=sampling_params["temperature"],
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.pad_token_id,
            )
            lp = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
        ids = out.sequences[0, len(prompt_ids) :].tolist()
        self.calls[-1]["returned"] = (ids, lp.tolist())
        return TokenOutput(token_ids=ids, log_probs=lp.tolist() if sampling_params.get("logprobs") else None)


class ScriptedServer:
    """Returns the given ids (ignoring ``max_tokens``) with log-prob -1.0 each; records every request."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any):
        self.calls.append({"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params)})
        return TokenOutput(token_ids=list(self.token_ids), log_probs=[-1.0] * len(self.token_ids))


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory, text_tokenizer_dir: Path) -> Path:
    """Tiny random Qwen3 with the text-prefix tokenizer (prefixes encode as several tokens)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3_text"), text_tokenizer_dir)


def make_config(ppo_config: DictConfig, model_dir: Path, n: int, response_length: int, **dual_grpo: Any) -> DictConfig:
    """verl's generated PPO config with the model, lengths, n and ``algorithm.dual_grpo`` overrides."""
    cfg = copy.deepcopy(ppo_config)
    cfg.actor_rollout_ref.model.path = str(model_dir)
    cfg.actor_rollout_ref.rollout.name = "vllm"
    cfg.actor_rollout_ref.rollout.n = n
    cfg.data.max_prompt_length = PROMPT_LENGTH
    cfg.data.max_response_length = response_length
    if dual_grpo:
        cfg.algorithm.dual_grpo = dual_grpo
    return cfg


def run_group(
    cfg: DictConfig,
    server: Any,
    agent_name: str,
    sessions: list[int] | None = None,
    sampling: dict[str, Any] = SAMPLING,
    **row: Any,
) -> list:
    """Run one prompt's sessions concurrently as verl's v1 worker does; returns the padded outputs."""
    worker = AgentLoopWorker(cfg, llm_client=server)
    n = cfg.actor_rollout_ref.rollout.n
    trajectory = {"step": 1, "sample_index": 0, "rollout_n": 0, "validate": False}
    fields = dict(raw_prompt=MESSAGES, uid="uid0", global_steps=1, data_source="flan", **row)

    async def main() -> list:
        return await asyncio.gather(
            *[
                worker._run_agent_loop(sampling, trajectory, agent_name=agent_name, trace=False, session_id=i, **fields)
                for i in (range(n) if sessions is None else sessions)
            ]
        )

    return asyncio.run(main())


def templated_prompt(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def test_registered_and_loaded_by_plugin() -> None:
    assert "verl_personadual.core.rollout" in plugin.REGISTERING_MODULES
    assert _agent_loop_registry[AGENT_LOOP_FORCED] == {"_target_": "verl_personadual.core.rollout.ForcedModeAgentLoop"}
    assert _agent_loop_registry[AGENT_LOOP_FREE] == {"_target_": "verl_personadual.core.rollout.FreeModeAgentLoop"}


def test_forced_mode_split() -> None:
    assert [forced_mode(i, 4) for i in range(4)] == [Mode.GENERAL] * 2 + [Mode.PERSONALIZED] * 2
    assert [int(forced_mode(i, 8)) for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="outside the group"):
        forced_mode(4, 4)


def check_forced_group(outs, server: TinyModelServer, tokenizer, n: int, response_length: int) -> None:
    """Exact checks of one forced group generated by ``TinyModelServer``."""
    prefixes = resolve_prefixes(tokenizer)
    prompt = templated_prompt(tokenizer)
    assert len(outs) == len(server.calls) == n
    # sessions run concurrently: find each output's request by prompt + returned tokens == prompt + response
    expected_modes = [Mode.GENERAL] * (n // 2) + [Mode.PERSONALIZED] * (n // 2)
    seen = {Mode.GENERAL: 0, Mode.PERSONALIZED: 0}
    for session, out in enumerate(outs):
        mode = expected_modes[session]
        pfx = list(prefixes.ids[mode])
        response = out.response_ids[0].tolist()
        call = next(c for c in server.calls if c["prompt_ids"] + c["returned"][0] == prompt + response)
        assert call["prompt_ids"] == prompt + pfx  # the server received prompt + forced prefix
        assert call["sampling_params"] == {**SAMPLING, "max_tokens": response_length - len(pfx)}  # length cap
        gen_ids, gen_lp = call["returned"]
        assert len(gen_ids) == response_length - len(pfx)
        # response = prefix + generated, exactly response_length long, all with mask 1 (prefix gets gradient)
        assert out.response_ids[0].tolist() == pfx + gen_ids
        assert out.response_mask[0].tolist() == [1] * response_length
        assert out.attention_mask[0, -response_length:].tolist() == [1] * response_length
        # forced tokens' rollout log-probs are the documented 0.0; generated ones are the server's
        assert out.response_logprobs[0, : len(pfx)].tolist() == [0.0] * len(pfx)
        assert torch.allclose(out.response_logprobs[0, len(pfx) :], torch.tensor(gen_lp))
        # the unpadded prompt is the templated prompt alone (no prefix in it)
        assert out.prompt_ids[0, -len(prompt) :].tolist() == prompt
        assert out.attention_mask[0, :PROMPT_LENGTH].sum().item() == len(prompt)
        assert out.extra_fields[MODE_FIELD] == mode.name.lower()
        assert out.extra_fields[FORCED_FIELD] is True
        assert out.extra_fields[RESPONSE_LENGTH_FIELD] == response_length  # prefix + generated
        assert prefixes.mode_of_ids(out.response_ids[0].tolist()) == int(mode)
        seen[mode] += 1
    assert seen == {Mode.GENERAL: n // 2, Mode.PERSONALIZED: n // 2}
    assert SAMPLING == dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)


@pytest.mark.parametrize("n", [4, 8])
def test_forced_dedicated_tokens(n: int, ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    response_length = 6
    server = TinyModelServer(tiny_model_dir, tokenizer.pad_token_id)
    outs = run_group(make_config(ppo_config, tiny_model_dir, n, response_length), server, AGENT_LOOP_FORCED)
    check_forced_group(outs, server, tokenizer, n, response_length)
    ids = resolve_prefixes(tokenizer).ids
    assert [o.response_ids[0, 0].item() for o in outs] == [ids[Mode.GENERAL][0]] * (n // 2) + [
        ids[Mode.PERSONALIZED][0]
    ] * (n // 2)


@pytest.mark.parametrize("n", [4, 8])
def test_forced_text_prefix(n: int, ppo_config, text_model_dir: Path, text_tokenizer) -> None:
    prefixes = resolve_prefixes(text_tokenizer, require_single_token=False)
    assert min(prefixes.length(m) for m in Mode) > 1
    response_length = max(prefixes.length(m) for m in Mode) + 3
    server = TinyModelServer(text_model_dir, text_tokenizer.pad_token_id)
    cfg = make_config(ppo_config, text_model_dir, n, response_length, require_mode_tokens=False)
    outs = run_group(cfg, server, AGENT_LOOP_FORCED)
    check_forced_group(outs, server, text_tokenizer, n, response_length)


def test_forced_truncates_overlong_server_output(ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    pers = resolve_prefixes(tokenizer).ids[Mode.PERSONALIZED][0]
    server = ScriptedServer(FILLER * 3)  # 9 tokens, ignores max_tokens=3
    outs = run_group(make_config(ppo_config, tiny_model_dir, 2, 4), server, AGENT_LOOP_FORCED, sessions=[1])
    assert outs[0].response_ids[0].tolist() == [pers] + FILLER
    assert outs[0].response_logprobs[0].tolist() == [0.0, -1.0, -1.0, -1.0]


def test_forced_keeps_a_smaller_max_tokens_and_empty_generation(ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    gen = resolve_prefixes(tokenizer).ids[Mode.GENERAL][0]
    server = ScriptedServer([])
    cfg = make_config(ppo_config, tiny_model_dir, 2, 8)
    outs = run_group(cfg, server, AGENT_LOOP_FORCED, sessions=[0], sampling={**SAMPLING, "max_tokens": 2})
    assert server.calls[0]["sampling_params"]["max_tokens"] == 2
    assert outs[0].response_ids[0].tolist() == [gen] + [tokenizer.pad_token_id] * 7
    assert outs[0].response_mask[0].tolist() == [1] + [0] * 7
    assert outs[0].response_logprobs[0].tolist() == [0.0] * 8


@pytest.mark.parametrize(
    ("returned", "mode"),
    [("personalized", "personalized"), ("general", "general"), ("none", "unknown")],
)
@pytest.mark.parametrize("agent_name", [AGENT_LOOP_FREE, AGENT_LOOP_FORCED])
def test_free_records_what_the_model_chose(
    returned: str, mode: str, agent_name: str, ppo_config, tiny_model_dir: Path, tokenizer
) -> None:
    """The free loop, and the forced loop with prefix_forcing=false ("w/o PfxSmp"), do not force anything."""
    ids = resolve_prefixes(tokenizer).ids
    head = [] if returned == "none" else list(ids[Mode.parse(returned)])
    server = ScriptedServer(head + FILLER)
    cfg = make_config(ppo_config, tiny_model_dir, 2, 8, prefix_forcing=False)
    outs = run_group(cfg, server, agent_name)
    prompt = templated_prompt(tokenizer)
    for out, call in zip(outs, server.calls):
        assert call["prompt_ids"] == prompt
        assert call["sampling_params"] == {**SAMPLING, "max_tokens": 8}
        k = len(head + FILLER)
        assert out.response_ids[0].tolist() == head + FILLER + [tokenizer.pad_token_id] * (8 - k)
        assert out.response_mask[0].tolist() == [1] * k + [0] * (8 - k)
        assert out.response_logprobs[0, :k].tolist() == [-1.0] * k
        assert out.extra_fields[MODE_FIELD] == mode
        assert out.extra_fields[FORCED_FIELD] is False
        assert out.extra_fields[RESPONSE_LENGTH_FIELD] == k  # unpadded


def test_free_with_tiny_model(ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    server = TinyModelServer(tiny_model_dir, tokenizer.pad_token_id)
    outs = run_group(make_config(ppo_config, tiny_model_dir, 2, 5), server, AGENT_LOOP_FREE)
    prefixes = resolve_prefixes(tokenizer)
    names = {0: "general", 1: "personalized", -1: "unknown"}
    for out in outs:
        call = next(c for c in server.calls if c["returned"][0] == out.response_ids[0].tolist())
        assert call["prompt_ids"] == templated_prompt(tokenizer)
        assert out.extra_fields[MODE_FIELD] == names[prefixes.mode_of_ids(call["returned"][0])]


def construction_error(cfg: DictConfig, agent_name: str = AGENT_LOOP_FORCED, kind: type = ValueError) -> BaseException:
    """The error the loop's constructor raised (verl instantiates loops with hydra, which wraps it)."""
    with pytest.raises(hydra.errors.InstantiationException) as err:
        run_group(cfg, ScriptedServer(FILLER), agent_name, sessions=[0])
    assert type(err.value.__cause__) is kind
    return err.value.__cause__


@pytest.mark.parametrize("n", [1, 3, 5])
def test_odd_or_small_n_refused(n: int, ppo_config, tiny_model_dir: Path) -> None:
    err = construction_error(make_config(ppo_config, tiny_model_dir, n, 8), kind=ConfigError)
    assert f"rollout.n must be even and >= 2; got n={n}" in str(err)


@pytest.mark.parametrize(
    ("key", "value"),
    [("rollout_is", "token"), ("rollout_rs", "token_k1"), ("bypass_mode", True)],
)
def test_rollout_correction_refused(key: str, value: Any, ppo_config, tiny_model_dir: Path) -> None:
    cfg = make_config(ppo_config, tiny_model_dir, 4, 8)
    cfg.algorithm.rollout_correction[key] = value
    err = construction_error(cfg, kind=ConfigError)
    assert "placeholders (0.0)" in str(err) and key in str(err)
    # honest log-probs everywhere without forcing: accepted
    cfg.algorithm.dual_grpo = {"prefix_forcing": False}
    assert len(run_group(cfg, ScriptedServer(FILLER), AGENT_LOOP_FORCED, sessions=[0])) == 1
    assert len(run_group(cfg, ScriptedServer(FILLER), AGENT_LOOP_FREE, sessions=[0])) == 1


@pytest.mark.parametrize("agent_name", [AGENT_LOOP_FORCED, AGENT_LOOP_FREE])
def test_tokenizer_not_as_configured_refused(
    agent_name: str, ppo_config, tiny_model_dir: Path, text_model_dir: Path
) -> None:
    err = construction_error(make_config(ppo_config, text_model_dir, 4, 16), agent_name, PrefixResolutionError)
    assert "not dedicated tokens" in str(err)
    # require_mode_tokens=false accepts either kind: dedicated tokens still resolve.
    cfg = make_config(ppo_config, tiny_model_dir, 4, 16, require_mode_tokens=False)
    assert len(run_group(cfg, ScriptedServer(FILLER), agent_name, sessions=[0])) == 1


@pytest.mark.parametrize("only_mode", ["general", "personalized"])
def test_only_mode_forces_every_session_into_one_mode(only_mode: str, ppo_config, tiny_model_dir: Path, tokenizer):
    """G-SFT-RL / P-SFT-RL baselines: any n (here odd), every rollout forced into the configured mode."""
    mode = Mode.parse(only_mode)
    prefix = list(resolve_prefixes(tokenizer).ids[mode])
    server = TinyModelServer(tiny_model_dir, tokenizer.pad_token_id)
    outs = run_group(make_config(ppo_config, tiny_model_dir, 3, 6, only_mode=only_mode), server, AGENT_LOOP_FORCED)
    prompt = templated_prompt(tokenizer)
    assert sorted(c["prompt_ids"] == prompt + prefix for c in server.calls) == [True] * 3
    for out in outs:
        assert out.response_ids[0, : len(prefix)].tolist() == prefix
        assert out.extra_fields[MODE_FIELD] == only_mode and out.extra_fields[FORCED_FIELD] is True


def test_response_length_too_short_refused(ppo_config, text_model_dir: Path, text_tokenizer) -> None:
    longest = max(resolve_prefixes(text_tokenizer).length(m) for m in Mode)
    err = construction_error(make_config(ppo_config, text_model_dir, 2, longest, require_mode_tokens=False))
    assert "leaves no room to generate" in str(err)


def test_session_outside_group_refused(ppo_config, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="outside the group"):
        cfg = make_config(ppo_config, tiny_model_dir, 2, 8)
        run_group(cfg, ScriptedServer(FILLER), AGENT_LOOP_FORCED, sessions=[2])


class RecordingServer(ScriptedServer):
    """A scripted server that also records the request id and priority, and returns per-token routed experts
    (value = position in prompt + output, one layer, top-1) as an MoE model's vLLM server does."""

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], priority: int = 0, **_: Any
    ):
        self.calls.append({"prompt_ids": list(prompt_ids), "request_id": request_id, "priority": priority})
        total = len(prompt_ids) + len(self.token_ids)
        experts = np.arange(total, dtype=np.int64).reshape(total, 1, 1)
        return TokenOutput(
            token_ids=list(self.token_ids), log_probs=[-1.0] * len(self.token_ids), routed_experts=experts
        )


@pytest.mark.parametrize("agent_name", [AGENT_LOOP_FORCED, AGENT_LOOP_FREE])
def test_verl_single_turn_features_come_along(agent_name: str, ppo_config, tiny_model_dir: Path, tokenizer) -> None:
    """Both loops are verl's single-turn loop: the row's priority reaches the server, request ids are verl's
    deterministic ``det-<priority>`` under full_determinism, and routed experts of prompt + prefix + generated
    tokens land at those tokens' positions."""
    cfg = make_config(ppo_config, tiny_model_dir, 2, 8)
    cfg.actor_rollout_ref.rollout.full_determinism = True
    server = RecordingServer(FILLER)
    out = run_group(cfg, server, agent_name, sessions=[1], priority=7)[0]
    call = server.calls[0]
    assert call["priority"] == 7 and call["request_id"] == "det-7"
    prompt = templated_prompt(tokenizer)
    head = list(resolve_prefixes(tokenizer).ids[Mode.PERSONALIZED]) if agent_name == AGENT_LOOP_FORCED else []
    assert call["prompt_ids"] == prompt + head
    n = len(prompt) + len(head) + len(FILLER)
    start = PROMPT_LENGTH - len(prompt)
    assert out.routed_experts.shape == (1, PROMPT_LENGTH + 8, 1, 1)
    assert out.routed_experts[0, start : start + n, 0, 0].tolist() == list(range(n))
    assert out.response_ids[0, : len(head) + 3].tolist() == head + FILLER


def test_prefixes_are_resolved_once_per_tokenizer(ppo_config, tiny_model_dir: Path, tokenizer_dir: Path) -> None:
    """verl builds one loop object per rollout; all of them share one resolution of the tokenizer's prefixes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    first = resolve_prefixes(tok, require_single_token=True)
    assert resolve_prefixes(tok, require_single_token=True) is first
    assert resolve_prefixes(AutoTokenizer.from_pretrained(tokenizer_dir), require_single_token=True) is not first
    tok.add_tokens(["<an_added_token>"])  # the vocabulary changed: resolved again
    again = resolve_prefixes(tok, require_single_token=True)
    assert again is not first and again.ids == first.ids
    loops = []
    worker = AgentLoopWorker(make_config(ppo_config, tiny_model_dir, 2, 8), llm_client=ScriptedServer(FILLER))
    for _ in range(2):
        loops.append(
            ForcedModeAgentLoop(
                trainer_config=DictConfigWrap(config=worker.config),
                server_manager=worker.llm_client,
                tokenizer=worker.tokenizer,
                processor=None,
                dataset_cls=worker.dataset_cls,
                data_config=DictConfigWrap(worker.config.data),
            )
        )
    assert loops[0].prefixes is loops[1].prefixes
