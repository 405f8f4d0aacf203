"""FPPS model-side core (verl_personadual.eval.fpps) on a tiny random Qwen3 in float64; no downloads, no tokenizer.

Every expected value comes from hand computation or an independent reference: the model's own forward with
``output_hidden_states`` / ``.logits``, a naive full-recompute greedy loop (no cache, no padding), scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from verl_personadual.eval.fpps.layers import (
    answer_ppl_by_layer,
    layer_scores,
    rank_layers,
    reciprocal_rank_fusion,
    select_layer,
)
from verl_personadual.eval.fpps.model_io import decoder_parts
from verl_personadual.eval.fpps.probe import (
    Probe,
    fit_probe,
    last_prompt_states,
    last_prompt_states_by_layer,
    response_mean_states,
    steering_vector,
)
from verl_personadual.eval.fpps.steer import FppsConfig, fpps_generate

HIDDEN = 32
PERSONA = [[5, 17, 33, 8, 41, 12, 9], [22, 3, 50, 11]]
FREE = [[9, 12, 8], [40, 2, 19, 7, 61]]
PAD = 0


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=64,
        hidden_size=HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        initializer_range=0.3,
    )
    return Qwen3ForCausalLM(config).double().eval()


def _hidden(model: Qwen3ForCausalLM, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """transformers' own hidden states of one unpadded sequence: index l + 1 = output of block l (l < last)."""
    with torch.no_grad():
        return tuple(h[0] for h in model(torch.tensor([ids]), output_hidden_states=True).hidden_states)


Edit = Callable[[torch.Tensor], torch.Tensor]


def _naive_greedy(
    model: Qwen3ForCausalLM,
    prompt: list[int],
    steps: int,
    edit_for: Callable[[list[int]], Edit] | None = None,
    layer: int = 0,
) -> list[int]:
    """Greedy decoding by recomputing the whole sequence every step, no cache, no padding; at each step
    ``edit_for(generated so far)`` (if given) gives the map of block ``layer``'s full output [S, d] to the steered
    one."""
    out: list[int] = []
    for _ in range(steps):
        handle = None
        if edit_for is not None:
            edit = edit_for(out)
            handle = model.model.layers[layer].register_forward_hook(lambda _m, _a, o, e=edit: e(o[0])[None])
        try:
            with torch.no_grad():
                out.append(int(model(torch.tensor([prompt + out])).logits[0, -1].argmax()))
        finally:
            if handle is not None:
                handle.remove()
    return out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-z)))


def _probe(seed: int, scale: float = 1.0) -> Probe:
    rng = np.random.default_rng(seed)
    return Probe(weight=rng.normal(size=HIDDEN) * scale, bias=float(rng.normal()))


# 1. the soft hook adds exactly γ·(p̂ − 0.5)·s_f at layer L, at the steered positions only


@pytest.mark.parametrize("steer_first_token", [True, False])
def test_soft_hook_adds_exactly_the_scaled_vector_at_generated_positions(model, steer_first_token):
    layer, gamma, steps = 1, 2.0, 5
    probe = _probe(1, scale=0.05)  # p̂ = 0.67 and 0.22 here: away from 0, 0.5 and 1
    vector = np.random.default_rng(2).normal(size=HIDDEN)
    config = FppsConfig(
        variant="soft",
        layer=layer,
        probe=probe,
        gamma=gamma,
        steering_vector=vector,
        steer_first_token=steer_first_token,
    )
    seen: list[torch.Tensor] = []
    handle = model.model.layers[layer + 1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        gens = fpps_generate(model, list(zip(PERSONA, FREE)), config, max_new_tokens=steps, eos_ids=[], pad_id=PAD)
    finally:
        handle.remove()
    assert len(seen) == steps  # one prefill and steps - 1 decode forwards
    observed = torch.cat(seen, dim=1)
    for row, (prompt, gen) in enumerate(zip(PERSONA, gens)):
        assert len(gen.token_ids) == steps and not gen.hit_eos
        reference = _hidden(model, prompt + gen.token_ids[:-1])[layer + 1]  # unhooked output of block `layer`
        p_hat = _sigmoid(float(reference[len(prompt) - 1].numpy() @ probe.weight) + probe.bias)
        assert gen.p_hat == pytest.approx(p_hat, abs=1e-12)
        coef = gamma * (p_hat - 0.5)
        assert abs(coef) > 0.05 and gen.soft_coef == pytest.approx(coef, abs=1e-12)
        first = len(prompt) - 1 if steer_first_token else len(prompt)
        expected = reference.clone()
        expected[first:] += coef * torch.from_numpy(vector)
        got = observed[row, observed.shape[1] - len(reference) :]
        torch.testing.assert_close(got[:first], reference[:first], atol=1e-12, rtol=0)  # prompt positions untouched
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)

        def add(h: torch.Tensor, start: int = first, c: float = coef) -> torch.Tensor:
            h = h.clone()
            h[start:] += c * torch.from_numpy(vector)
            return h

        assert gen.token_ids == _naive_greedy(model, prompt, steps, lambda _generated: add, layer)


# 2. FPPS-H: τ = 0 gives the persona-free generation (at the last layer), τ > 1 the plain personalized one


@pytest.mark.parametrize("variant", ["hard", "mixed"])
def test_hard_tau_zero_reproduces_persona_free_generation(model, variant):
    steps, last = 8, 2
    vector = np.ones(HIDDEN)
    config = FppsConfig(variant=variant, layer=last, probe=_probe(3), tau=0.0, gamma=3.0, steering_vector=vector)
    gens = fpps_generate(model, list(zip(PERSONA, FREE)), config, max_new_tokens=steps, eos_ids=[], pad_id=PAD)
    for persona, free, gen in zip(PERSONA, FREE, gens):
        reference = _naive_greedy(model, free, steps)
        assert reference != _naive_greedy(model, persona, steps)  # the test is not vacuous
        assert gen.hard and gen.token_ids == reference
    # eos: stop before the first eos the reference emits
    eos = _naive_greedy(model, FREE[0], steps)[3]
    (gen,) = fpps_generate(model, [(PERSONA[0], FREE[0])], config, max_new_tokens=steps, eos_ids=[eos], pad_id=PAD)
    reference = _naive_greedy(model, FREE[0], steps)
    assert gen.hit_eos and gen.token_ids == reference[: reference.index(eos)]


def test_hard_tau_above_one_reproduces_personalized_generation(model):
    steps = 8
    for config in (
        FppsConfig(variant="hard", layer=1, probe=_probe(4), tau=1.5),
        FppsConfig(variant="mixed", layer=1, probe=_probe(4), tau=1.5, gamma=0.0, steering_vector=np.ones(HIDDEN)),
    ):
        gens = fpps_generate(model, list(zip(PERSONA, FREE)), config, max_new_tokens=steps, eos_ids=[], pad_id=PAD)
        for persona, gen in zip(PERSONA, gens):
            assert not gen.hard and gen.token_ids == _naive_greedy(model, persona, steps)
    with torch.no_grad():
        reference = model.generate(torch.tensor([PERSONA[0]]), max_new_tokens=steps, do_sample=False)
    assert gens[0].token_ids == reference[0, len(PERSONA[0]) :].tolist()


def test_hard_at_a_middle_layer_replaces_with_the_lockstep_persona_free_state(model):
    """FPPS-H at L = 1 against a naive reference: at each step recompute the persona-free sequence over the same
    generated tokens and copy its block-1 output into the persona sequence's steered positions."""
    steps, layer = 6, 1
    config = FppsConfig(variant="hard", layer=layer, probe=_probe(5), tau=0.0)
    gens = fpps_generate(model, list(zip(PERSONA, FREE)), config, max_new_tokens=steps, eos_ids=[], pad_id=PAD)
    for persona, free, gen in zip(PERSONA, FREE, gens):

        def replace(generated: list[int], p: list[int] = persona, f: list[int] = free) -> Edit:
            free_states = _hidden(model, f + generated)[layer + 1][len(f) - 1 :]

            def edit(h: torch.Tensor) -> torch.Tensor:
                h = h.clone()
                h[len(p) - 1 :] = free_states
                return h

            return edit

        reference = _naive_greedy(model, persona, steps, replace, layer)
        assert gen.token_ids == reference
        assert reference != _naive_greedy(model, persona, steps)  # the replacement changed the output
        # τ = 0 below the last layer is NOT the persona-free run: the layers above L still attend to the persona
        # prompt's keys and values (README: "τ = 0 reproduces the persona-free run" holds at the last layer only)
        assert gen.token_ids != _naive_greedy(model, free, steps)


# 2b. FPPS-M: rows below τ get exactly FPPS-S's soft steering (same γ, s_f), rows at or above τ FPPS-H's swap


def test_mixed_soft_branch_equals_soft_on_rows_below_tau(model):
    layer, gamma, steps = 1, 2.0, 6
    probe = _probe(1, scale=0.05)  # p̂ = 0.67 (row 0) and 0.22 (row 1): τ = 0.5 gates row 0 only
    vector = np.random.default_rng(2).normal(size=HIDDEN)
    pairs = list(zip(PERSONA, FREE))
    common = {"layer": layer, "probe": probe, "gamma": gamma, "steering_vector": vector}
    mixed = fpps_generate(
        model, pairs, FppsConfig("mixed", tau=0.5, **common), max_new_tokens=steps, eos_ids=[], pad_id=PAD
    )
    soft = fpps_generate(model, pairs, FppsConfig("soft", **common), max_new_tokens=steps, eos_ids=[], pad_id=PAD)
    hard = fpps_generate(
        model, pairs, FppsConfig("hard", layer, probe, tau=0.5), max_new_tokens=steps, eos_ids=[], pad_id=PAD
    )
    assert [g.hard for g in mixed] == [True, False]
    below, above = 1, 0
    assert mixed[below].token_ids == soft[below].token_ids
    assert mixed[below].soft_coef == soft[below].soft_coef == pytest.approx(gamma * (mixed[below].p_hat - 0.5))
    assert mixed[above].token_ids == hard[above].token_ids and mixed[above].soft_coef == 0.0
    # not vacuous: the soft steering changed row 1's output, and the two branches differ on row 0
    assert soft[below].token_ids != _naive_greedy(model, PERSONA[below], steps)
    assert soft[above].token_ids != hard[above].token_ids


# 3. layer ranking and reciprocal-rank fusion on planted Δ tables


def _planted(deltas: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """PPL tables whose per-example Δ is exactly ``deltas``: PPL_with = 1, PPL_without = 1 − Δ."""
    d = np.asarray(deltas)
    return np.ones_like(d), 1.0 - d


def test_ranking_and_rrf_pick_the_hand_computed_layer():
    # per layer (0..4) mean Δ: factual [0.05, 0.40, 0.30, 0.20, 0.10]; personalized [-0.5, -0.1, -0.3, -0.05, -0.2]
    fact = _planted([[0.00, 0.45, 0.25, 0.20, 0.15], [0.10, 0.35, 0.35, 0.20, 0.05]])
    pers = _planted([[-0.6, -0.1, -0.2, -0.05, -0.2], [-0.4, -0.1, -0.4, -0.05, -0.2]])
    sel = select_layer(fact, pers)
    np.testing.assert_array_equal(sel.fact_ranks, [5, 1, 2, 3, 4])  # Δ up
    np.testing.assert_array_equal(sel.pers_ranks, [1, 4, 2, 5, 3])  # Δ down (most negative first)
    # k = 60: L0 1/65+1/61, L1 1/61+1/64, L2 2/62 = .032258 (largest), L3 1/63+1/65, L4 1/64+1/63
    expected = [1 / 65 + 1 / 61, 1 / 61 + 1 / 64, 2 / 62, 1 / 63 + 1 / 65, 1 / 64 + 1 / 63]
    np.testing.assert_allclose(sel.fused, expected, rtol=1e-12)
    assert sel.layer == 2  # consistently second beats first-in-one, fourth-in-the-other
    # k = 1 rewards the top rank: L1 1/2 + 1/5 = 0.7 beats L0 and L2 (2/3)
    assert select_layer(fact, pers, k=1).layer == 1
    # ranking the personalized group in the wrong direction: L3 (-0.05) first there, L1 (1st, 2nd) wins
    assert select_layer(fact, pers, pers_orientation="up").layer == 1


def test_scores_ranks_and_fusion_primitives():
    ppl_with, ppl_without = np.array([[2.0, 1.0], [4.0, 1.0]]), np.array([[1.0, 2.0], [1.0, 1.0]])
    # per-example Δ: layer 0: 0.5, 0.75 -> mean 0.625; pooled (3 − 1)/3; layer 1: −1, 0 -> mean −0.5, pooled −0.5
    np.testing.assert_allclose(layer_scores(ppl_with, ppl_without, orientation="up"), [0.625, -0.5])
    np.testing.assert_allclose(layer_scores(ppl_with, ppl_without, orientation="down"), [-0.625, 0.5])
    np.testing.assert_allclose(layer_scores(ppl_with, ppl_without, orientation="abs", aggregate="median"), [0.625, 0.5])
    np.testing.assert_allclose(layer_scores(ppl_with, ppl_without, orientation="up", aggregate="pooled"), [2 / 3, -0.5])
    np.testing.assert_array_equal(rank_layers(np.array([0.1, 0.3, 0.1, 0.2])), [3, 1, 4, 2])  # tie: lower index first
    np.testing.assert_allclose(reciprocal_rank_fusion([np.array([1, 2]), np.array([2, 1])], k=0), [1.5, 1.5])
    with pytest.raises(ValueError, match="orientation"):
        layer_scores(ppl_with, ppl_without, orientation="sideways")  # type: ignore[arg-type]


# 4. the probe's sign on a planted feature, and the steering vector


@pytest.mark.parametrize("standardize", [True, False])
def test_probe_learns_the_planted_feature(standardize):
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    pos[:, 3] += 3.0
    neg[:, 3] -= 3.0
    probe = fit_probe(pos, neg, standardize=standardize, seed=0)
    assert probe.weight[3] > 0 and np.abs(probe.weight[3]) == np.abs(probe.weight).max()
    assert (probe.predict(pos) > 0.5).all() and (probe.predict(neg) < 0.5).all()
    # the folded raw-space probe equals scikit-learn's own scaler + regression
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(40), np.zeros(40)]
    z = StandardScaler().fit_transform(x) if standardize else x
    reference = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(z, y).predict_proba(z)[:, 1]
    np.testing.assert_allclose(probe.predict(x), reference, atol=1e-8)


def test_steering_vector_is_the_difference_of_means():
    fact, pers = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(steering_vector(fact, pers), [1.0, 2.0])
    np.testing.assert_allclose(steering_vector(fact, pers, normalize=True), np.array([1.0, 2.0]) / np.sqrt(5.0))


def test_state_readouts_match_transformers_hidden_states(model):
    layer = 1
    feats = last_prompt_states(model, PERSONA, layer, batch_size=2, pad_id=PAD)
    responses = [[7, 8, 9], [30]]
    means = response_mean_states(model, FREE, responses, layer, batch_size=2, pad_id=PAD)
    for row, prompt in enumerate(PERSONA):
        np.testing.assert_allclose(feats[row], _hidden(model, prompt)[layer + 1][-1].numpy(), atol=1e-12)
    for row, (prompt, resp) in enumerate(zip(FREE, responses)):
        states = _hidden(model, prompt + resp)[layer + 1][len(prompt) :]
        np.testing.assert_allclose(means[row], states.mean(dim=0).numpy(), atol=1e-12)
    # every layer in one forward: layer l is last_prompt_states at l (the last layer: the un-normed block output)
    by_layer = last_prompt_states_by_layer(model, PERSONA, batch_size=2, pad_id=PAD)
    assert by_layer.shape == (len(PERSONA), 3, HIDDEN)
    for index in range(3):
        np.testing.assert_allclose(
            by_layer[:, index], last_prompt_states(model, PERSONA, index, batch_size=1), atol=1e-12
        )


# 5. logit-lens perplexity: last layer = the model's own teacher-forced answer perplexity


def test_logit_lens_ppl_matches_the_models_own_cross_entropy(model):
    prompts, answers = [PERSONA[0], FREE[0]], [[4, 44, 21], [13, 2, 60, 31, 5]]
    ppl = answer_ppl_by_layer(model, prompts, answers, batch_size=2, pad_id=PAD)
    assert ppl.shape == (2, 3)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        start, target = len(prompt) - 1, torch.tensor(answer)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + answer])).logits[0]
        ce = torch.nn.functional.cross_entropy(logits[start : start + len(answer)], target)
        assert ppl[row, -1] == pytest.approx(float(torch.exp(ce)), rel=1e-10)
        # a middle layer: transformers' hidden state of block 0 through the final norm and the head
        h0 = _hidden(model, prompt + answer)[1][start : start + len(answer)]
        with torch.no_grad():
            ce0 = torch.nn.functional.cross_entropy(model.lm_head(model.model.norm(h0)), target)
        assert ppl[row, 0] == pytest.approx(float(torch.exp(ce0)), rel=1e-10)


# 6. batching and left padding do not change the generated tokens


def test_batched_generation_equals_one_at_a_time(model):
    persona = [*PERSONA, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    free = [*FREE, [63]]
    pairs = list(zip(persona, free))
    probe, vector, steps = _probe(1, scale=0.05), np.random.default_rng(7).normal(size=HIDDEN), 7
    p_hats = sorted(
        g.p_hat
        for g in fpps_generate(
            model,
            pairs,
            FppsConfig(variant="hard", layer=1, probe=probe, tau=2.0),
            max_new_tokens=1,
            eos_ids=[],
            pad_id=PAD,
        )
    )
    tau = (p_hats[0] + p_hats[1]) / 2  # the lowest-p̂ row below τ, the other two above: both branches in one batch
    eos = [2, 42]  # so that rows finish at different steps while the batch goes on
    for variant in ("soft", "hard", "mixed"):
        config = FppsConfig(variant=variant, layer=1, probe=probe, tau=tau, gamma=2.5, steering_vector=vector)
        batched = fpps_generate(model, pairs, config, max_new_tokens=steps, eos_ids=eos, pad_id=PAD)
        assert len({g.hit_eos for g in batched}) == 2
        if variant != "soft":
            assert len({g.hard for g in batched}) == 2
        for pair, got in zip(pairs, batched):
            (alone,) = fpps_generate(model, [pair], config, max_new_tokens=steps, eos_ids=eos, pad_id=PAD)
            assert got.token_ids == alone.token_ids and got.hit_eos == alone.hit_eos and got.hard == alone.hard
            assert got.p_hat == pytest.approx(alone.p_hat, abs=1e-12)


def test_unsupported_models_and_bad_layers_raise(model):
    with pytest.raises(ValueError, match="model.model.layers"):
        decoder_parts(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="layer must be an int in 0..2"):
        fpps_generate(
            model,
            [(PERSONA[0], FREE[0])],
            FppsConfig(variant="hard", layer=3, probe=_probe(0)),
            max_new_tokens=1,
            eos_ids=[],
            pad_id=PAD,
        )
    with pytest.raises(ValueError, match="needs a steering vector"):
        FppsConfig(variant="soft", layer=0, probe=_probe(0))
