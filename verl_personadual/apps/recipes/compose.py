"""Run a PersonaDual recipe: compose it against verl's real Hydra config, validate it, print it, launch it.

The recipes are Hydra YAMLs shipped in this package (``config/``; the repository's ``recipes/config`` links there) that
inherit verl's packaged trainer configs
(``ppo_trainer`` for Stage 2, ``sft_trainer_engine`` for Stage 1). This module composes them exactly as
verl's entry points would (same config directory, same overrides), runs verl's own validation, and then
either prints the composed config (``--dry-run``) or starts verl::

    python -m verl_personadual.recipes sft --backbone qwen3_8b --model M --train-files sft.parquet [--dry-run]
    python -m verl_personadual.recipes rl  --backbone qwen3_8b --model SFT_HF --train-files train.parquet \\
        --val-files val.parquet [--ablation no_dual_adv] [--dry-run] [-- extra.hydra=overrides ...]

Before composing, the CLI checks that ``--model`` and every data file exist (``preflight``); a Hydra override that
cannot apply (an unknown key, a ``+`` on an existing one, bad syntax) and a config verl's validation rejects are
reported in one line (:func:`explain_composition_error`), with the known keys and the closest one; exit status 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from verl_personadual.data.preflight import (
    PreflightError,
)
from verl_personadual.utils.text import closest

__all__ = [
    "ADDED_KEY_PREFIXES",
    "CONFIG_DIR",
    "STAGES",
    "Stage",
    "ablations",
    "backbones",
    "build_overrides",
    "compose",
    "explain_composition_error",
    "split_overrides",
]

#: The recipes' Hydra config directory: package data of this package (the repository's ``recipes/config`` links here).
CONFIG_DIR: Path = Path(str(resources.files(__package__) / "config"))

#: Config group of the ablation switches (Stage 2 only).
ABLATION_GROUP = "ablation"
#: The ablation that changes nothing: full DualGRPO.
NO_ABLATION = "none"


#: Dotted key prefixes the recipe YAMLs add to verl's YAML config on purpose (Hydra merges new keys from config
#: files): the plugin's namespaces (DualGRPO switches, trainer settings), ``ray.init`` keyword arguments (verl
#: passes ``ray_kwargs.ray_init`` to ``ray.init`` as is), Hugging Face config overrides (passed to the model's
#: config as is), and ``mixed_precision`` of verl's FSDP engine config (a dataclass field verl's YAML omits).
ADDED_KEY_PREFIXES: tuple[str, ...] = (
    "algorithm.dual_grpo.",
    "trainer.v1.persona_dual.",
    "ray_kwargs.ray_init.",
    "actor_rollout_ref.model.override_config.",
    "model.override_config.",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.",
    "actor_rollout_ref.ref.fsdp_config.mixed_precision.",
    "engine.mixed_precision.",
)


#: Overrides that make ``main_ppo`` join a running Ray cluster instead of starting a local one (multi-node RL).
#: ``address=auto`` fails when no cluster is running, rather than starting a one-node cluster that then waits
#: forever for the other nodes' GPUs.
RAY_CLUSTER_OVERRIDES = ("+ray_kwargs.ray_init.address=auto",)

#: Override values made only of these characters need no quoting in Hydra's override grammar.
_PLAIN = re.compile(r"[A-Za-z0-9_./:-]+")


@dataclass(frozen=True)
class Stage:
    """One training stage: its primary recipe, its backbone config group and the verl module that runs it."""

    name: str
    config_name: str
    backbone_group: str
    verl_module: str
    experiment_suffix: str


STAGES: dict[str, Stage] = {
    "sft": Stage("sft", "persona_dual_sft", "sft_backbone", "verl.trainer.sft_trainer", "sft"),
    "rl": Stage("rl", "persona_dual_rl", "rl_backbone", "verl.trainer.main_ppo", "dual_grpo"),
}


def _group_options(group: str) -> list[str]:
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"recipe configs not found at {CONFIG_DIR}: the installed package is incomplete (reinstall "
            f"verl-personadual)"
        )
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def backbones(stage: str) -> list[str]:
    """Backbone names available for ``stage`` (one YAML each in its backbone group)."""
    return _group_options(STAGES[stage].backbone_group)


def ablations() -> list[str]:
    """Stage 2 ablation names (one YAML each in ``recipes/config/ablation``)."""
    return _group_options(ABLATION_GROUP)


def experiment_name(stage: str, backbone: str, ablation: str = NO_ABLATION) -> str:
    """``<backbone>_<stage>[_<ablation>]``, e.g. ``qwen3_8b_dual_grpo_no_dual_adv``."""
    parts = [backbone, STAGES[stage].experiment_suffix] + ([] if ablation == NO_ABLATION else [ablation])
    return "_".join(parts)


def quote(value: str) -> str:
    """A path as a Hydra override value: as is when plain, else quoted so ``=``, ``,`` or spaces stay literal."""
    if "'" in value or "\\" in value:
        raise PreflightError(f"paths with quotes or backslashes are not supported in overrides: {value!r}")
    return value if _PLAIN.fullmatch(value) else f"'{value}'"


def _files(paths: Sequence[str]) -> str:
    quoted = [quote(str(Path(p).expanduser().resolve())) for p in paths]
    return quoted[0] if len(quoted) == 1 else "[" + ",".join(quoted) + "]"


def build_overrides(
    stage: str,
    backbone: str,
    model: str,
    train_files: Sequence[str],
    val_files: Sequence[str] = (),
    ablation: str = NO_ABLATION,
    output_dir: str | None = None,
    extra: Sequence[str] = (),
    nnodes: int | None = None,
) -> list[str]:
    """The Hydra overrides that select a recipe and fill in its run arguments (``extra`` last, so it wins).

    ``model`` is a local directory (made absolute) or a hub id (kept as is). ``nnodes`` (default: the
    backbone's, 1) sets ``trainer.nnodes``; for the RL stage with ``nnodes > 1`` it also makes ``main_ppo``
    join the running Ray cluster (``RAY_CLUSTER_OVERRIDES``).
    """
    spec = STAGES[stage]
    if backbone not in backbones(stage):
        raise PreflightError(f"unknown {stage} backbone {backbone!r}; available: {backbones(stage)}")
    if stage == "sft" and ablation != NO_ABLATION:
        raise PreflightError("ablations apply to the RL stage only")
    if stage == "rl" and ablation not in ablations():
        raise PreflightError(f"unknown ablation {ablation!r}; available: {ablations()}")
    if not train_files:
        raise PreflightError("at least one training file is required")
    if stage == "rl" and not val_files:
        raise PreflightError("the RL stage needs validation files (free-mode evaluation)")
    if nnodes is not None and nnodes < 1:
        raise PreflightError(f"nnodes must be >= 1, got {nnodes}")
    name = experiment_name(stage, backbone, ablation)
    model_path = str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model
    out = Path(output_dir).expanduser().resolve() if output_dir else Path.cwd() / "checkpoints" / "persona_dual" / name
    model_key = "actor_rollout_ref.model.path" if stage == "rl" else "model.path"
    overrides = [f"{spec.backbone_group}={backbone}"]
    if stage == "rl":
        overrides.append(f"{ABLATION_GROUP}={ablation}")
    overrides += [
        f"{model_key}={quote(model_path)}",
        f"data.train_files={_files(train_files)}",
        f"data.val_files={_files(val_files) if val_files else 'null'}",
        f"trainer.experiment_name={name}",
        f"trainer.default_local_dir={quote(str(out))}",
    ]
    if nnodes is not None:
        overrides.append(f"trainer.nnodes={nnodes}")
        if stage == "rl" and nnodes > 1:
            overrides += RAY_CLUSTER_OVERRIDES
    return overrides + list(extra)


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``stage``'s recipe with verl's packaged configs on the search path, as verl's CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=STAGES[stage].config_name, overrides=list(overrides))


_CANNOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_ALREADY_THERE = re.compile(r"Could not append to config\. An item is already at '([^']+)'")


def _unknown_key_message(stage: str, key: str, overrides: Sequence[str], err_text: str) -> str:
    """One line for an override that cannot apply to ``key``: when a component of ``key`` does not exist, the
    deepest existing section, its keys and the closest one (read from the recipe composed without that override)."""
    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        node: object = compose(stage, rest)
    except Exception:  # another override fails too: name this key without the list
        return f"unknown config key {key!r} (prefix it with '+' only to add a key the config does not define)"
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return f"cannot set {key!r}: {'.'.join(parts[:depth])} is a value, not a section"
        if part not in node:
            break
        node = node[part]
    else:  # the key exists: the value is what does not fit
        detail = [line.strip() for line in err_text.splitlines()[1:] if line.strip()]
        return f"cannot set {key!r}: {detail[0] if detail else 'Hydra refused the value'}"
    section = ".".join(parts[:depth]) or "<top level>"
    known = sorted(str(k) for k in node.keys())
    guess = closest(parts[depth], known)
    hint = f"; did you mean {'.'.join(parts[:depth] + [guess])!r}?" if guess else ""
    return f"unknown config key {key!r}; known keys under {section}: {', '.join(known)}{hint}"


def explain_composition_error(stage: str, overrides: Sequence[str], err: Exception) -> str:
    """One line for a Hydra composition error of ``overrides`` (module docstring)."""
    text = str(err)
    found = _CANNOT_OVERRIDE.search(text)
    if found:
        return _unknown_key_message(stage, found.group(1), overrides, text)
    found = _ALREADY_THERE.search(text)
    if found:
        return f"{found.group(1)} already exists in the recipe: drop the '+' ({found.group(1)}=VALUE)"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines() if line.strip()]
    return f"cannot apply the overrides: {' '.join(lines) or type(err).__name__}"


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(cli_args, hydra_overrides)``: the command line split at the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def compose_checked(stage: str, overrides: Sequence[str]) -> DictConfig:
    """:func:`compose`, with a Hydra composition error turned into a one-line PreflightError
    (:func:`explain_composition_error`: an unknown key with the known keys under its section and the closest)."""
    from hydra.errors import HydraException

    try:
        return compose(stage, overrides)
    except HydraException as err:
        raise PreflightError(explain_composition_error(stage, overrides, err)) from None
