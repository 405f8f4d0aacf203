"""The CPU rollout backend's generation engine (``verl_personadual.core.cpu.generation``) against independent
references:
``transformers``' own ``generate``, a plain forward pass through the model, and verl's log-prob function."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl.utils.torch_functional import logprobs_from_logits

from verl_personadual.core.cpu.generation import (
    BatchGenerator,
    GenerationRequest,
    SamplingParams,
    SamplingParamsError,
)

TEXTS = [
    "I am a nurse. My question is: which vitamin",
    "Reason step by step",
    '{"answer": "B"} the answer is',
    "General mode personalized mode persona user question options think answer because the",
    "abc",
]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(model_and_tok):
    _, tok = model_and_tok
    return [tok.encode(t) for t in TEXTS]


def engine(model_and_tok, **kw) -> BatchGenerator:
    model, tok = model_and_tok
    return BatchGenerator(model, [tok.eos_token_id], tok.pad_token_id, decode=tok.decode, **kw)


def params(**kw) -> SamplingParams:
    return SamplingParams.from_request(kw, default_max_tokens=12, max_possible_tokens=1000)


def test_greedy_equals_transformers_generate_token_for_token(model_and_tok, prompts):
    model, tok = model_and_tok
    out = engine(model_and_tok).generate(
        [GenerationRequest(p, params(temperature=0, ignore_eos=True)) for p in prompts]
    )
    for p, res in zip(prompts, out, strict=True):
        ref = model.generate(
            torch.tensor([p]), do_sample=False, max_new_tokens=12, min_new_tokens=12, pad_token_id=tok.pad_token_id
        )[0, len(p) :].tolist()
        assert res.token_ids == ref
        assert res.stop_reason == "completed"


def test_batched_and_one_at_a_time_give_the_same_greedy_tokens(model_and_tok, prompts):
    gen = engine(model_and_tok)
    sp = params(temperature=0, max_tokens=16, logprobs=True)
    batched = gen.generate([GenerationRequest(p, sp) for p in prompts])
    single = [gen.generate([GenerationRequest(p, sp)])[0] for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    for b, s in zip(batched, single, strict=True):
        assert b.log_probs == pytest.approx(s.log_probs, abs=1e-5)


def test_sampling_depends_only_on_the_request_seed(model_and_tok, prompts):
    gen = engine(model_and_tok)
    sp = params(temperature=1.0, top_p=0.9, top_k=50, max_tokens=10, ignore_eos=True)
    batched = gen.generate(
        [GenerationRequest(p, sp, torch.Generator().manual_seed(7 + i)) for i, p in enumerate(prompts)]
    )
    single = [
        gen.generate([GenerationRequest(p, sp, torch.Generator().manual_seed(7 + i))])[0] for i, p in enumerate(prompts)
    ]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    other = gen.generate(
        [GenerationRequest(p, sp, torch.Generator().manual_seed(1000 + i)) for i, p in enumerate(prompts)]
    )
    assert [r.token_ids for r in other] != [r.token_ids for r in batched]


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_log_probs_equal_the_actors_recomputation(model_and_tok, prompts, temperature):
    """verl's actor recomputes log_softmax(logits / temperature) at every response position (top_p = 1, top_k = -1)."""
    model, _ = model_and_tok
    sp = params(temperature=temperature, max_tokens=12, logprobs=True, ignore_eos=True)
    out = engine(model_and_tok).generate(
        [GenerationRequest(p, sp, torch.Generator().manual_seed(i)) for i, p in enumerate(prompts)]
    )
    for p, res in zip(prompts, out, strict=True):
        ids = torch.tensor([p + res.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float() / temperature
        actor = logprobs_from_logits(logits, torch.tensor(res.token_ids))
        assert torch.allclose(torch.tensor(res.log_probs), actor, atol=1e-4), (res.log_probs, actor.tolist())


def test_stop_conditions(model_and_tok, prompts):
    model, tok = model_and_tok
    gen = engine(model_and_tok)
    free = gen.generate([GenerationRequest(prompts[0], params(temperature=0, max_tokens=8, ignore_eos=True))])[0]
    assert len(free.token_ids) == 8
    # the 4th greedy token as a stop id: generation ends right after it, the stop token included
    stop_id = free.token_ids[3]
    first = free.token_ids.index(stop_id)
    stopped = gen.generate(
        [GenerationRequest(prompts[0], params(temperature=0, max_tokens=8, stop_token_ids=[stop_id]))]
    )[0]
    assert stopped.token_ids == free.token_ids[: first + 1]
    # a stop string: ends at the first token whose decoded output contains it
    text = tok.decode(free.token_ids[:5])
    cut = next(k for k in range(1, 9) if text[-2:] in tok.decode(free.token_ids[:k]))
    by_string = gen.generate([GenerationRequest(prompts[0], params(temperature=0, max_tokens=8, stop=[text[-2:]]))])[0]
    assert by_string.token_ids == free.token_ids[:cut]
    # EOS ends a response unless ignore_eos; forced here by making EOS the only allowed stop of a 1-token vocab pick
    eos_engine = BatchGenerator(model, [free.token_ids[2]], tok.pad_token_id)
    ended = eos_engine.generate([GenerationRequest(prompts[0], params(temperature=0, max_tokens=8))])[0]
    assert ended.token_ids == free.token_ids[: free.token_ids.index(free.token_ids[2]) + 1]


def test_top_k_one_and_tiny_top_p_are_greedy(model_and_tok, prompts):
    gen = engine(model_and_tok)
    greedy = gen.generate([GenerationRequest(p, params(temperature=0, max_tokens=6, ignore_eos=True)) for p in prompts])
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        sampled = gen.generate(
            [
                GenerationRequest(p, params(temperature=1.3, max_tokens=6, ignore_eos=True, logprobs=True, **kw))
                for p in prompts
            ]
        )
        assert [r.token_ids for r in sampled] == [r.token_ids for r in greedy]
        # the truncated distribution has one token: its log-prob is 0
        assert all(lp == pytest.approx(0.0, abs=1e-6) for r in sampled for lp in r.log_probs)


def test_repetition_penalty_matches_a_hand_computed_step(model_and_tok, prompts):
    model, _ = model_and_tok
    p = prompts[3]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p])).logits[0, -1].float()
    penalised = logits.clone()
    for t in set(p):
        penalised[t] = logits[t] / 5.0 if logits[t] > 0 else logits[t] * 5.0
    res = engine(model_and_tok).generate(
        [GenerationRequest(p, params(temperature=0, max_tokens=1, repetition_penalty=5.0, logprobs=True))]
    )[0]
    assert res.token_ids == [int(penalised.argmax())]
    assert res.log_probs[0] == pytest.approx(float(torch.log_softmax(penalised, -1).max()), abs=1e-5)


def test_max_tokens_is_clamped_to_the_room_left_in_the_context():
    sp = SamplingParams.from_request({"max_tokens": 500}, default_max_tokens=64, max_possible_tokens=20)
    assert sp.max_tokens == 20
    assert SamplingParams.from_request({}, default_max_tokens=64, max_possible_tokens=1000).max_tokens == 64
    assert (
        SamplingParams.from_request({"max_new_tokens": 9}, default_max_tokens=64, max_possible_tokens=1000).max_tokens
        == 9
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"temperatur": 0.6}, "unsupported sampling param(s) ['temperatur']; the CPU rollout backend accepts"),
        ({"temperature": -0.1}, "sampling param temperature=-0.1 must be >= 0 (0 = greedy)"),
        ({"top_p": 0}, "sampling param top_p=0.0 must be in (0, 1]"),
        ({"top_p": 1.5}, "sampling param top_p=1.5 must be in (0, 1]"),
        ({"top_k": 0}, "sampling param top_k=0 must be -1 (all tokens) or >= 1"),
        ({"max_tokens": 0}, "sampling param max_tokens=0 must be >= 1"),
        ({"max_tokens": 2.5}, "sampling param max_tokens=2.5 must be an integer"),
        ({"temperature": float("nan")}, "sampling param temperature=nan must be a finite number"),
        ({"logprobs": 5}, "sampling param logprobs=5: true/false, or 0/1"),
        ({"repetition_penalty": 0}, "sampling param repetition_penalty=0.0 must be > 0 (1 = none)"),
        ({"n": 2}, "sampling param n=2: one sample per request"),
        ({"stop": [""]}, "sampling param stop=[''] must be a string or a list of them"),
        ({"ignore_eos": "yes"}, "sampling param ignore_eos='yes' must be true/false"),
    ],
)
def test_bad_sampling_params_give_a_clear_error(raw, message):
    with pytest.raises(SamplingParamsError) as info:
        SamplingParams.from_request(raw, default_max_tokens=8, max_possible_tokens=100)
    assert str(info.value).startswith(message)


def test_a_prompt_that_fills_the_context_is_refused():
    with pytest.raises(SamplingParamsError, match="leaves no room to generate"):
        SamplingParams.from_request({}, default_max_tokens=8, max_possible_tokens=0)


def test_batches_are_split_at_max_batch_size(model_and_tok, prompts):
    gen = engine(model_and_tok, max_batch_size=2)
    sp = params(temperature=0, max_tokens=3, ignore_eos=True)
    out = gen.generate([GenerationRequest(p, sp) for p in prompts])
    assert len(out) == 5 and gen.forward_passes == 3 * 3  # ceil(5 / 2) batches x 3 tokens
