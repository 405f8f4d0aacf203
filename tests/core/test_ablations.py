"""What each named ablation (recipes/config/ablation) computes, on real numbers.

One prompt group of 8 rollouts with rewards written out below. Each ablation's recipe is composed exactly as the
CLI composes it, its advantage estimator is run (ours for ``dual_grpo``, verl's own for ``grpo``), and the
summed advantage on the mode-prefix token is compared, per mode, with values computed by hand. That sum is what
the prefix token's policy gradient sees: with forced prefixes every rollout of a mode shares the same prefix
token in the same context, so its gradient is (summed prefix advantage) x grad log pi(prefix).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from verl_personadual.apps.recipes import compose as R
from verl_personadual.apps.recipes import validate as recipes_validate
from verl_personadual.core import names
from verl_personadual.core.advantage import dual_grpo_advantage
from verl_personadual.core.config import DualGRPOConfig

LENGTH = 3  # prefix token + 2 answer tokens
# Forced sampling, n = 8: rollouts 0-3 general, 4-7 personalized.
# mu_general = 0.75, mu_personalized = 0.25, mu_group = 0.5.
FORCED_MODES = [0, 0, 0, 0, 1, 1, 1, 1]
FORCED_REWARDS = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
# Free sampling: the model wrote 5 general, 2 personalized and 1 prefix-less (-1) response.
# mu_general = 0.6, mu_personalized = 0.5, mu_group = (3 + 1 + 1) / 8 = 0.625.
FREE_MODES = [0, 0, 0, 0, 0, 1, 1, -1]
FREE_REWARDS = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]

# Summed prefix-token advantage per mode (general, personalized), by hand; beta = 2 where DualGRPO's estimator runs.
# none:              beta * sum(r - mu_other):  general 2 * (3 - 4 * 0.25) = 4;  personalized 2 * (1 - 4 * 0.75) = -4
# no_dual_adv:       beta * sum(r - mu_group):  2 * (3 - 2) = 2;  2 * (1 - 2) = -2   (= beta * (n/4) * (mu_m - mu_o))
# no_dual_adv_intra: beta * sum(r - mu_m):      2 * (3 - 3) = 0;  2 * (1 - 1) = 0    (mode choice never trained)
# grpo (verl, beta 1, free sampling; prefix-less row: r - mu_group = 0.375 on its first token, not a prefix):
#                    general (1 + 1 + 0 + 1 + 0) - 5 * 0.625 = -0.125;  personalized 1 - 2 * 0.625 = -0.25
# no_dual_adv_no_prefix_forcing (beta 2, free):  2 * -0.125 = -0.25;  2 * -0.25 = -0.5
# no_prefix_forcing (beta 2, free, r - mu_other): general 2 * (3 - 5 * 0.5) = 1;  personalized 2 * (1 - 2 * 0.6) = -0.4
EXPECTED = {
    "none": ("forced", (4.0, -4.0)),
    "no_dual_adv": ("forced", (2.0, -2.0)),
    "no_dual_adv_intra": ("forced", (0.0, 0.0)),
    "no_prefix_forcing": ("free", (1.0, -0.4)),
    "no_dual_adv_no_prefix_forcing": ("free", (-0.25, -0.5)),
    "grpo": ("free", (-0.125, -0.25)),
}


def _batch(modes: list[int], rewards: list[float]):
    b = len(modes)
    token_rewards = torch.zeros(b, LENGTH)
    token_rewards[:, -1] = torch.tensor(rewards)
    mask = torch.ones(b, LENGTH)
    index = np.array(["q"] * b, dtype=object)
    return token_rewards, mask, index, np.array(modes, dtype=np.int8)


def _composed(ablation: str, tmp_path):
    overrides = R.build_overrides(
        "rl", "qwen3_8b", "/m", [str(tmp_path / "t.parquet")], [str(tmp_path / "v.parquet")], ablation
    )
    return R.compose("rl", overrides)


def advantages(ablation: str, tmp_path) -> tuple[torch.Tensor, np.ndarray]:
    """The ablation's token advantages on its batch (forced or free) and the batch's row modes."""
    cfg = _composed(ablation, tmp_path)
    sampling, _ = EXPECTED[ablation]
    dual = DualGRPOConfig.from_algorithm(cfg.algorithm)
    assert dual.prefix_forcing is (sampling == "forced")
    rewards, mask, index, modes = _batch(
        *((FORCED_MODES, FORCED_REWARDS) if sampling == "forced" else (FREE_MODES, FREE_REWARDS))
    )
    if cfg.algorithm.adv_estimator == names.ESTIMATOR:
        adv = dual_grpo_advantage(rewards, mask, index, modes, np.where(modes >= 0, 1, 0), dual)
    else:
        assert cfg.algorithm.adv_estimator == "grpo"
        adv, _ = compute_grpo_outcome_advantage(
            rewards, mask, index, norm_adv_by_std_in_grpo=cfg.algorithm.norm_adv_by_std_in_grpo
        )
    return adv, modes


@pytest.mark.parametrize("ablation", sorted(EXPECTED))
def test_summed_prefix_advantage_per_mode(ablation: str, tmp_path):
    adv, modes = advantages(ablation, tmp_path)
    _, (general, personalized) = EXPECTED[ablation]
    assert adv[modes == 0, 0].sum().item() == pytest.approx(general, abs=1e-6)
    assert adv[modes == 1, 0].sum().item() == pytest.approx(personalized, abs=1e-6)


def test_the_two_readings_of_no_dual_adv_differ_on_the_prefix_only_through_the_mode_credit(tmp_path):
    """Standard-component reading: every row's advantage is the literal one shifted by (mu_m - mu_group), i.e.
    +0.25 for the general rows and -0.25 for the personalized rows of the forced batch (x beta on the prefix)."""
    standard, modes = advantages("no_dual_adv", tmp_path)
    literal, _ = advantages("no_dual_adv_intra", tmp_path)
    shift = torch.where(torch.as_tensor(modes) == 0, 0.25, -0.25)
    torch.testing.assert_close(standard[:, 0] - literal[:, 0], 2.0 * shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(standard[:, 1:] - literal[:, 1:], shift[:, None].expand(-1, 2), rtol=0, atol=1e-6)


def test_grpo_baseline_runs_on_the_plugin_trainer_without_std(tmp_path):
    """The clean GRPO comparison: verl's estimator, no std normalisation, free sampling, and the persona_dual_sync
    trainer (mode metrics; runs on CPU). Its answer tokens get exactly what no_dual_adv_no_prefix_forcing's get
    (r - mu_group); the two differ only by beta on the sampled prefix and by the prefix-less row."""
    cfg = _composed("grpo", tmp_path)
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False
    assert cfg.trainer.v1.trainer_mode == names.TRAINER_MODE
    recipes_validate.validate("rl", cfg)
    grpo, modes = advantages("grpo", tmp_path)
    plain, _ = advantages("no_dual_adv_no_prefix_forcing", tmp_path)
    known = torch.as_tensor(modes >= 0)
    torch.testing.assert_close(plain[known, 1:], grpo[known, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(plain[known, 0], 2.0 * grpo[known, 0], rtol=0, atol=1e-6)
    assert grpo[~known].flatten().tolist() == pytest.approx([0.375] * LENGTH)
    assert plain[~known].flatten().tolist() == [0.0] * LENGTH
