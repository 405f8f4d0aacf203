"""DualGRPO advantages: hand-computed tables, properties, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_personadual.core.advantage import (
    compute_dual_grpo_advantage,
    dual_grpo_advantage,
    row_modes,
)
from verl_personadual.core.config import DualGRPOConfig

G, P, U = 0, 1, -1


def make_batch(rows: list[tuple[str, int, int, float]], length: int):
    """rows: (uid, mode, response length, reward) -> rewards at the last valid token, mask, index, modes."""
    b = len(rows)
    rewards = torch.zeros(b, length)
    mask = torch.zeros(b, length)
    for i, (_, _, n, r) in enumerate(rows):
        mask[i, :n] = 1
        if n:
            rewards[i, n - 1] = r
    index = np.array([u for u, _, _, _ in rows], dtype=object)
    modes = np.array([m for _, m, _, _ in rows], dtype=np.int8)
    return rewards, mask, index, modes


# (uid, mode, length, reward). Group a: odd size 5, both modes (mu_g = 1, mu_p = 0.5).
# Group b: personalized only (mu_p = 0.5). Group c: an unknown-mode row (mu_g = 0.5, mu_p = 0, mean 0.375).
# Last row: a verl balance-padding row (own uid, mask all 0).
SINGLE_TOKEN_ROWS = [
    ("a", G, 3, 1.0),
    ("a", G, 4, 1.0),
    ("a", P, 2, 1.0),
    ("a", P, 4, 0.5),
    ("a", P, 1, 0.0),
    ("b", P, 2, 0.9),
    ("b", P, 3, 0.1),
    ("b", P, 4, 0.5),
    ("c", G, 4, 1.0),
    ("c", P, 2, 0.0),
    ("c", U, 3, 0.5),
    ("c", G, 1, 0.0),
    ("pad0f3a", U, 0, 0.0),
]
# A = r - mu_other (both modes), r - mu_m (one mode), r - group mean (unknown); first token x beta=2.
SINGLE_TOKEN_EXPECTED = [
    [1.0, 0.5, 0.5, 0.0],
    [1.0, 0.5, 0.5, 0.5],
    [0.0, 0.0, 0.0, 0.0],
    [-1.0, -0.5, -0.5, -0.5],
    [-2.0, 0.0, 0.0, 0.0],
    [0.8, 0.4, 0.0, 0.0],
    [-0.8, -0.4, -0.4, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [2.0, 1.0, 1.0, 1.0],
    [-1.0, -0.5, 0.0, 0.0],
    [0.125, 0.125, 0.125, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
]


def test_single_token_prefix_table():
    rewards, mask, index, modes = make_batch(SINGLE_TOKEN_ROWS, length=4)
    prefix_len = np.where(modes >= 0, 1, 0)
    cfg = DualGRPOConfig(unknown_mode_advantage="group")
    adv = dual_grpo_advantage(rewards, mask, index, modes, prefix_len, cfg)
    torch.testing.assert_close(adv, torch.tensor(SINGLE_TOKEN_EXPECTED), rtol=0, atol=1e-6)


def test_unknown_mode_rows_get_no_advantage_by_default():
    """The default (unknown_mode_advantage=zero): the prefix-less row of group c (reward 0.5, above its group's
    mean 0.375) is not reinforced; every other row is as in the table."""
    rewards, mask, index, modes = make_batch(SINGLE_TOKEN_ROWS, length=4)
    prefix_len = np.where(modes >= 0, 1, 0)
    adv = dual_grpo_advantage(rewards, mask, index, modes, prefix_len, DualGRPOConfig())
    expected = torch.tensor(SINGLE_TOKEN_EXPECTED)
    expected[10] = 0.0
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_text_prefix_every_prefix_token_gets_beta():
    # Prefix of 3 text tokens. Group t: mu_g = 0.5, mu_p = 1. Group u: two unknown rows (mean 0.5).
    rows = [
        ("t", G, 5, 1.0),
        ("t", G, 6, 0.0),
        ("t", P, 4, 1.0),
        ("t", P, 6, 1.0),
        ("u", U, 3, 0.7),
        ("u", U, 2, 0.3),
    ]
    rewards, mask, index, modes = make_batch(rows, length=6)
    prefix_len = np.where(modes >= 0, 3, 0)
    cfg = DualGRPOConfig(beta=2.0, unknown_mode_advantage="group")
    adv = dual_grpo_advantage(rewards, mask, index, modes, prefix_len, cfg)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [-2.0, -2.0, -2.0, -1.0, -1.0, -1.0],
            [1.0, 1.0, 1.0, 0.5, 0.0, 0.0],
            [1.0, 1.0, 1.0, 0.5, 0.5, 0.5],
            [0.2, 0.2, 0.2, 0.0, 0.0, 0.0],
            [-0.2, -0.2, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_inter_mode_off_is_intra_only():
    rewards, mask, index, modes = make_batch(SINGLE_TOKEN_ROWS, length=4)
    prefix_len = np.where(modes >= 0, 1, 0)
    cfg = DualGRPOConfig(inter_mode=False, beta=1.0, unknown_mode_advantage="group")
    adv = dual_grpo_advantage(rewards, mask, index, modes, prefix_len, cfg)
    # Group a: general r - 1 = [0, 0]; personalized r - 0.5 = [0.5, 0, -0.5]. Group c: g [0.5, -0.5], p [0].
    per_row = [0.0, 0.0, 0.5, 0.0, -0.5, 0.4, -0.4, 0.0, 0.5, 0.0, 0.125, -0.5, 0.0]
    torch.testing.assert_close(adv, torch.tensor(per_row)[:, None] * mask, rtol=0, atol=1e-6)


def test_group_baseline_is_r_minus_the_mean_of_both_modes():
    """baseline=group: A = r - mu_group. Group a: mean of [1, 1, 1, 0.5, 0] = 0.7; group b: 0.5; group c: mean of
    [1, 0, 0.5, 0] = 0.375 (the prefix-less row counts in it, and gets 0 by default); beta 2 on the prefix."""
    rewards, mask, index, modes = make_batch(SINGLE_TOKEN_ROWS, length=4)
    prefix_len = np.where(modes >= 0, 1, 0)
    adv = dual_grpo_advantage(
        rewards, mask, index, modes, prefix_len, DualGRPOConfig(inter_mode=False, baseline="group")
    )
    per_row = [0.3, 0.3, 0.3, -0.2, -0.7, 0.4, -0.4, 0.0, 0.625, -0.375, 0.0, -0.375, 0.0]
    expected = torch.tensor(per_row)[:, None] * mask
    expected[:, 0] *= torch.tensor([2.0] * 10 + [1.0, 2.0, 1.0])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_group_baseline_with_std_divides_by_the_group_std():
    rows = [("g", G, 2, 1.0), ("g", G, 2, 0.0), ("g", P, 2, 1.0), ("h", P, 1, 0.3)]
    rewards, mask, index, modes = make_batch(rows, length=2)
    cfg = DualGRPOConfig(inter_mode=False, baseline="group", norm_by_std=True, beta=1.0, epsilon=1e-6)
    adv = dual_grpo_advantage(rewards, mask, index, modes, np.ones(4, dtype=int), cfg)
    std = math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2)  # unbiased std of [1, 0, 1] (mean 2/3)
    expected = [(1 / 3) / (std + 1e-6), (-2 / 3) / (std + 1e-6), (1 / 3) / (std + 1e-6), 0.0]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "switches, message",
    [
        ({"baseline": "group"}, "inter_mode=false"),
        ({"baseline": "groups"}, "baseline must be one of"),
        ({"unknown_mode_advantage": "keep"}, "unknown_mode_advantage must be one of"),
    ],
)
def test_config_refuses_meaningless_combinations(switches, message):
    with pytest.raises(ValueError, match=message):
        DualGRPOConfig(**switches)


def test_norm_by_std_divides_the_intra_term_only():
    rows = [("g", G, 2, 1.0), ("g", G, 2, 0.0), ("g", P, 2, 1.0)]
    rewards, mask, index, modes = make_batch(rows, length=2)
    cfg = DualGRPOConfig(norm_by_std=True, beta=1.0, epsilon=1e-6)
    adv = dual_grpo_advantage(rewards, mask, index, modes, np.ones(3, dtype=int), cfg)
    std_g = math.sqrt(0.5)  # unbiased std of [1, 0]
    expected = [0.5 / (std_g + 1e-6) - 0.5, -0.5 / (std_g + 1e-6) - 0.5, 0.0 / (1 + 1e-6) + 0.5]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nan", "non-finite"),
        ("inf", "non-finite"),
        ("mask_shape", "response_mask shape"),
        ("modes_len", "modes has 2 entries"),
        ("index_len", "index \\(uid\\) has 1 entries"),
        ("mode_code", "mode codes must be"),
        ("prefix_len", "prefix_len out of"),
    ],
)
def test_input_validation(bad: str, message: str):
    rewards, mask = torch.ones(3, 2), torch.ones(3, 2)
    index, modes, plen = np.array(["x", "x", "y"], dtype=object), np.array([0, 1, 0]), np.ones(3, dtype=int)
    if bad == "nan":
        rewards[1, 0] = float("nan")
    elif bad == "inf":
        rewards[2, 1] = float("inf")
    elif bad == "mask_shape":
        mask = torch.ones(3, 3)
    elif bad == "modes_len":
        modes = modes[:2]
    elif bad == "index_len":
        index = index[:1]
    elif bad == "mode_code":
        modes = np.array([0, 2, 0])
    elif bad == "prefix_len":
        plen = np.array([1, 3, 1])
    with pytest.raises(ValueError, match=message):
        dual_grpo_advantage(rewards, mask, index, modes, plen)


def test_registered_estimator_without_trainer_glue_says_what_to_set():
    with pytest.raises(RuntimeError, match="trainer_mode to one of persona_dual_sync, persona_dual_colocate_async, "):
        compute_dual_grpo_advantage(torch.ones(2, 2), torch.ones(2, 2), np.array(["a", "a"], dtype=object), {})


def test_registered_estimator_reads_config_namespace_and_rejects_typos():
    rewards, mask, index, modes = make_batch(SINGLE_TOKEN_ROWS, length=4)
    plen = np.where(modes >= 0, 1, 0)
    with row_modes(modes, plen):
        adv, ret = compute_dual_grpo_advantage(rewards, mask, index, {"dual_grpo": {"beta": 3.0}})
        with pytest.raises(ValueError, match="unknown key\\(s\\) under algorithm.dual_grpo: \\['betta'\\]"):
            compute_dual_grpo_advantage(rewards, mask, index, {"dual_grpo": {"betta": 3.0}})
    assert torch.equal(adv, ret)
    assert adv[0, 0].item() == pytest.approx(1.5)  # 0.5 * beta 3
    assert adv[0, 1].item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- properties


def reference(
    scores: list[float], index: list[str], modes: list[int], inter: bool, baseline: str = "mode", unknown: str = "group"
) -> list[float]:
    """Per-row loop over the definition (independent of the vectorised code)."""
    out = []
    for i, (r, u, m) in enumerate(zip(scores, index, modes)):
        same_group = [j for j in range(len(scores)) if index[j] == u]
        group_mean = sum(scores[j] for j in same_group) / len(same_group)
        if m < 0:
            out.append(r - group_mean if unknown == "group" else 0.0)
            continue
        own = [scores[j] for j in same_group if modes[j] == m]
        oth = [scores[j] for j in same_group if modes[j] == 1 - m]
        mu = sum(own) / len(own)
        first = r - (mu if baseline == "mode" else group_mean)
        out.append(first + ((mu - sum(oth) / len(oth)) if (oth and inter) else 0.0))
    return out


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from([G, P, U]),
        st.integers(1, 5),
        st.floats(-2, 2, allow_nan=False, width=32),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=150, deadline=None)
@given(
    rows=rows_strategy,
    variant=st.sampled_from([(True, "mode"), (False, "mode"), (False, "group")]),
    unknown=st.sampled_from(["zero", "group"]),
    seed=st.integers(0, 2**16),
)
def test_properties(rows, variant: tuple[bool, str], unknown: str, seed: int):
    inter, baseline = variant
    rewards, mask, index, modes = make_batch(rows, length=5)
    plen = np.where(modes >= 0, 1, 0)
    switches = dict(inter_mode=inter, baseline=baseline, unknown_mode_advantage=unknown)
    cfg = DualGRPOConfig(beta=1.0, **switches)
    adv = dual_grpo_advantage(rewards, mask, index, modes, plen, cfg)
    scores = rewards.sum(-1).double().tolist()
    expected = reference(scores, list(index), modes.tolist(), inter, baseline, unknown)
    torch.testing.assert_close(adv, (torch.tensor(expected)[:, None] * mask).float(), rtol=1e-5, atol=1e-5)

    # Both modes present -> A = r - mu_other (the two terms telescope).
    if inter:
        for i, (u, m) in enumerate(zip(index, modes)):
            grp = [j for j in range(len(rows)) if index[j] == u]
            oth = [scores[j] for j in grp if modes[j] == 1 - m]
            if m >= 0 and oth:
                assert adv[i, 0].item() == pytest.approx(scores[i] - sum(oth) / len(oth), abs=1e-5)

    # Shuffling rows shuffles the output identically.
    perm = np.random.default_rng(seed).permutation(len(rows))
    adv_perm = dual_grpo_advantage(rewards[perm], mask[perm], index[perm], modes[perm], plen[perm], cfg)
    torch.testing.assert_close(adv_perm, adv[perm], rtol=0, atol=1e-6)

    # beta changes only prefix positions of known-mode rows, by exactly the factor beta.
    adv_beta = dual_grpo_advantage(rewards, mask, index, modes, plen, DualGRPOConfig(beta=2.5, **switches))
    torch.testing.assert_close(adv_beta[:, 1:], adv[:, 1:], rtol=0, atol=0)
    factor = torch.where(torch.as_tensor(modes >= 0), 2.5, 1.0)
    torch.testing.assert_close(adv_beta[:, 0], adv[:, 0] * factor, rtol=1e-6, atol=1e-6)
