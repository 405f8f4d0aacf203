"""DualGRPO switches, read from verl's Hydra config under ``algorithm.dual_grpo`` (names.CONFIG_NAMESPACE).

Defaults are the paper's values. Unknown keys in the namespace are an error (a typo would otherwise silently
run the paper default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from verl_personadual.core.modes import Mode
from verl_personadual.core.names import AGENT_LOOP_FORCED, CONFIG_NAMESPACE, TRAINER_SETTINGS
from verl_personadual.utils.errors import UserError
from verl_personadual.utils.text import closest

__all__ = [
    "ConfigError",
    "DualGRPOConfig",
    "TrainerSettings",
    "PREFIX_KL_CHOICES",
    "BASELINE_CHOICES",
    "UNKNOWN_MODE_ADVANTAGE_CHOICES",
]

#: Values of ``algorithm.dual_grpo.prefix_kl`` (see ``DualGRPOConfig``).
PREFIX_KL_CHOICES = ("ref", "mass", "rollout")
#: Values of ``algorithm.dual_grpo.baseline`` (see ``DualGRPOConfig``).
BASELINE_CHOICES = ("mode", "group")
#: Values of ``algorithm.dual_grpo.unknown_mode_advantage`` (see ``DualGRPOConfig``).
UNKNOWN_MODE_ADVANTAGE_CHOICES = ("zero", "group")
#: ``algorithm.rollout_correction`` settings that would consume the forced tokens' placeholder log-probs.
ROLLOUT_CORRECTION_KEYS = ("rollout_is", "rollout_rs")


class ConfigError(UserError, ValueError):
    """A config value the plugin refuses; the message names the key (``algorithm.dual_grpo.beta``)."""


@dataclass(frozen=True)
class DualGRPOConfig:
    """Every ``algorithm.dual_grpo.*`` key with its default.

    Attributes:
        beta: weight of the advantage on prefix tokens (paper: 2.0); for a text prefix every prefix token gets it.
        inter_mode: add the inter-mode term mu_m - mu_other (paper Eq. 7). False, with ``baseline``, gives the
            two readings of the paper's "w/o DualAdv" ablation (recipes/README.md, "Ablations").
        baseline: what a row's reward is compared with in the first term. ``"mode"`` (the paper, Eq. 6): mu_m,
            the mean reward of the group's rows in the row's mode; ``"group"``: the mean over all the group's
            rows, both modes (standard GRPO's r - mu_group, without std). ``"group"`` needs ``inter_mode`` off.
        norm_by_std: divide that first term by the std of the rewards it was centred on (the mode's rows for
            ``baseline="mode"``, the group's for ``"group"``); the paper has none.
        epsilon: added to that std.
        prefix_forcing: training rollouts are forced n/2 per mode (False = "w/o PfxSmp": the model picks).
        require_mode_tokens: the prefixes must be dedicated tokens (False also accepts multi-token text prefixes).
        unknown_mode_advantage: the advantage of a row whose response does not start with a valid mode prefix
            (possible only when the model picks its own prefix, ``prefix_forcing`` off). ``"zero"`` (default, our
            choice; the paper has no such rows): no gradient from it, so a correct prefix-less response is not
            reinforced and free sampling cannot learn to drop the mode prefix; ``"group"``: r - the group's mean
            reward on every token (plain GRPO's treatment). Either way its reward counts in the group mean of
            ``baseline="group"``.
        only_mode: None, or "general" / "personalized": force every training rollout into that one mode
            (the paper's G-SFT-RL / P-SFT-RL baselines); the inter-mode term is then 0 in every group.
        prefix_kl: what the actor's KL loss (``actor.use_kl_loss``) anchors the mode-prefix tokens to (see
            ``PREFIX_KL_CHOICES``). ``"ref"`` (the paper: every response token is tied to the SFT reference);
            ``"mass"``: the reference log-prob of a forced prefix token becomes the rollout policy's, shifted so
            that the two mode tokens together keep the reference's probability mass: the KL then keeps the
            mode tokens from losing probability but no longer pulls the choice between them back to the SFT
            model (single-token prefixes, both modes in every group); ``"rollout"``: the rollout policy's
            log-prob (the KL only limits one step's change). Forced prefixes are not samples from the policy,
            so verl's sampled-token KL estimators (``low_var_kl``) are no KL of the mode choice on them.
    """

    beta: float = 2.0
    inter_mode: bool = True
    baseline: str = "mode"
    norm_by_std: bool = False
    epsilon: float = 1e-6
    prefix_forcing: bool = True
    require_mode_tokens: bool = True
    unknown_mode_advantage: str = "zero"
    only_mode: str | None = None
    prefix_kl: str = "ref"

    def __post_init__(self) -> None:
        if not isinstance(self.beta, (int, float)) or self.beta < 0:
            raise ConfigError(f"algorithm.{CONFIG_NAMESPACE}.beta must be a number >= 0, got {self.beta!r}")
        if not isinstance(self.epsilon, (int, float)) or self.epsilon <= 0:
            raise ConfigError(f"algorithm.{CONFIG_NAMESPACE}.epsilon must be > 0, got {self.epsilon!r}")
        if self.prefix_kl not in PREFIX_KL_CHOICES:
            raise ConfigError(
                f"algorithm.{CONFIG_NAMESPACE}.prefix_kl must be one of {PREFIX_KL_CHOICES}, got {self.prefix_kl!r}"
            )
        for name, choices in (
            ("baseline", BASELINE_CHOICES),
            ("unknown_mode_advantage", UNKNOWN_MODE_ADVANTAGE_CHOICES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"algorithm.{CONFIG_NAMESPACE}.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )
        for name in ("inter_mode", "norm_by_std", "prefix_forcing", "require_mode_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"algorithm.{CONFIG_NAMESPACE}.{name} must be true/false, got {getattr(self, name)!r}"
                )
        if self.baseline == "group" and self.inter_mode:
            raise ConfigError(
                f"algorithm.{CONFIG_NAMESPACE}.baseline=group compares each reward with the whole group's mean, which "
                "already holds the mode difference; adding inter_mode's mu_m - mu_other on top is neither DualGRPO "
                "nor GRPO. Set inter_mode=false (the no_dual_adv ablation) or baseline=mode"
            )
        if self.only_mode is not None:
            try:
                Mode.parse(self.only_mode)
            except ValueError as exc:
                raise ConfigError(f"algorithm.{CONFIG_NAMESPACE}.only_mode: {exc}") from None
            if not self.prefix_forcing:
                raise ConfigError(
                    f"algorithm.{CONFIG_NAMESPACE}.only_mode={self.only_mode!r} forces one mode, which contradicts "
                    "prefix_forcing=false"
                )

    @property
    def single_mode(self) -> Mode | None:
        """The one mode every training rollout is forced into, or None (both modes, n/2 each)."""
        return None if self.only_mode is None else Mode.parse(self.only_mode)

    @property
    def prefix_requirement(self) -> bool | None:
        """``require_single_token`` for ``modes.resolve_prefixes``: True (dedicated tokens) or None (either kind)."""
        return True if self.require_mode_tokens else None

    def check_forced_rollout(self, n: int, rollout_correction: Mapping[str, Any] | None) -> None:
        """The settings the forced-mode agent loop (``AGENT_LOOP_FORCED``, the training rows') accepts, checked
        where it is built and before a launch (``apps/recipes/validate.validate``); raises ``ConfigError``.

        With ``prefix_forcing`` (default) each group of ``n = actor_rollout_ref.rollout.n`` rollouts is split in
        half between the two modes: ``n`` must be even and >= 2 (``only_mode``: any ``n >= 1``); and
        ``algorithm.rollout_correction`` must not use rollout log-probs (``rollout_is`` / ``rollout_rs`` set, or
        ``bypass_mode``), which are placeholders on the forced prefix tokens. Nothing applies without forcing.
        """
        if not self.prefix_forcing:
            return
        if self.single_mode is None and (n < 2 or n % 2):
            raise ConfigError(
                f"{AGENT_LOOP_FORCED} splits each group exactly in half between the two modes, so "
                f"actor_rollout_ref.rollout.n must be even and >= 2; got n={n}"
            )
        if self.single_mode is not None and n < 1:
            raise ConfigError(f"actor_rollout_ref.rollout.n must be >= 1; got n={n}")
        correction = rollout_correction or {}
        misuse = [f"{k}={correction.get(k)!r}" for k in ROLLOUT_CORRECTION_KEYS if correction.get(k) is not None]
        if correction.get("bypass_mode", False):
            misuse.append("bypass_mode=True")
        if misuse:
            raise ConfigError(
                f"{AGENT_LOOP_FORCED}: forced prefix tokens were not sampled, so their rollout log-probs are "
                f"placeholders (0.0); algorithm.rollout_correction {', '.join(misuse)} would use them. Leave "
                "rollout_is/rollout_rs null and bypass_mode false, or set "
                f"algorithm.{CONFIG_NAMESPACE}.prefix_forcing=false"
            )

    @classmethod
    def from_algorithm(cls, algorithm: Any) -> "DualGRPOConfig":
        """Read the namespace from ``config.algorithm`` (a DictConfig, a mapping, verl's AlgoConfig, or None)."""
        if algorithm is None:
            return cls()
        section = algorithm.get(CONFIG_NAMESPACE, None) if hasattr(algorithm, "get") else None
        if section is None:
            section = getattr(algorithm, CONFIG_NAMESPACE, None)
        return cls.from_mapping(section or {})

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> "DualGRPOConfig":
        known = {f.name for f in fields(cls)}
        given = dict(section.items())
        unknown = sorted(set(given) - known)
        if unknown:
            guesses = [g for g in (closest(k, sorted(known)) for k in unknown) if g]
            hint = f"; did you mean {', '.join(repr(g) for g in guesses)}?" if guesses else ""
            raise ConfigError(
                f"unknown key(s) under algorithm.{CONFIG_NAMESPACE}: {unknown}; known keys: {sorted(known)}{hint}"
            )
        return cls(**given)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainerSettings:
    """Every ``trainer.v1.persona_dual.*`` key (names.TRAINER_SETTINGS) with its default, read by both of the
    plugin's trainers.

    Attributes:
        replay_poll_interval_s: seconds verl's replay buffer sleeps between checks for finished rollouts (verl
            hard-codes 2.0 with no config key; each training step waits for at least one such interval, which
            dominates a small CPU step).
        token_dump_dir: when set, the PersonaDual trainer writes ``<dir>/<step>.jsonl`` per training step: every
            row's token ids with the mode prefix kept, its mode, reward, rollout and actor log-probs and
            advantages (``trainer.TOKEN_DUMP_FIELDS``); ``<dir>/<step>_<k>.jsonl`` for the k-th actor update of a
            step when ``trainer.v1.separate_async.parameter_sync_step`` > 1. verl's own
            ``trainer.rollout_data_dir`` decodes with ``skip_special_tokens``, which drops dedicated mode tokens.
            Off by default.
    """

    replay_poll_interval_s: float = 2.0
    token_dump_dir: str | None = None

    def __post_init__(self) -> None:
        value = self.replay_poll_interval_s
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"trainer.v1.{TRAINER_SETTINGS}.replay_poll_interval_s must be > 0, got {value!r}")
        if self.token_dump_dir is not None and not (isinstance(self.token_dump_dir, str) and self.token_dump_dir):
            raise ConfigError(
                f"trainer.v1.{TRAINER_SETTINGS}.token_dump_dir must be a directory path or null, got "
                f"{self.token_dump_dir!r}"
            )

    @classmethod
    def from_trainer(cls, trainer: Any) -> "TrainerSettings":
        """Read the section from ``config.trainer`` (absent section or keys -> defaults; unknown keys -> error)."""
        v1 = trainer.get("v1", None) if trainer is not None else None
        section = (v1.get(TRAINER_SETTINGS, None) if v1 is not None else None) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) under trainer.v1.{TRAINER_SETTINGS}: {unknown}; known keys: {sorted(known)}"
            )
        return cls(**dict(section.items()))
