"""Run a PersonaDual recipe: compose it against verl's real Hydra config, validate it, print it, launch it.

The recipes are Hydra YAMLs in ``recipes/config`` that inherit verl's packaged trainer configs
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

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from verl_personadual.config import DualGRPOConfig
from verl_personadual.names import CPU_DEVICE, ESTIMATOR
from verl_personadual.preflight import PreflightError, check_files, check_model, closest

__all__ = [
    "CONFIG_DIR",
    "STAGES",
    "Stage",
    "ablations",
    "backbones",
    "build_overrides",
    "compose",
    "explain_composition_error",
    "launch_command",
    "main",
    "validate",
]

#: The recipes' Hydra config directory (``recipes/config`` at the repository root).
CONFIG_DIR: Path = Path(__file__).resolve().parents[1] / "recipes" / "config"

#: Config group of the ablation switches (Stage 2 only).
ABLATION_GROUP = "ablation"
#: The ablation that changes nothing: full DualGRPO.
NO_ABLATION = "none"

#: Environment for launched runs: verl imports the plugin without swallowing errors (see plugin.py).
RUN_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_personadual.plugin"}

#: Module that runs verl's SFT trainer on CPU.
CPU_SFT_MODULE = "verl_personadual.cpu.sft"


def run_env(cfg: DictConfig) -> dict[str, str]:
    """Environment variables of a launched run of ``cfg``: :data:`RUN_ENV`, plus ``VERL_PLATFORM=cpu`` when it runs
    on CPU (verl then never probes for an accelerator)."""
    env = dict(RUN_ENV)
    if cfg.trainer.device == CPU_DEVICE:
        env["VERL_PLATFORM"] = CPU_DEVICE
    return env

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
            f"recipe configs not found at {CONFIG_DIR}: run from a source checkout installed with `pip install -e .`"
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


def _quote(value: str) -> str:
    """A path as a Hydra override value: as is when plain, else quoted so ``=``, ``,`` or spaces stay literal."""
    if "'" in value or "\\" in value:
        raise ValueError(f"paths with quotes or backslashes are not supported in overrides: {value!r}")
    return value if _PLAIN.fullmatch(value) else f"'{value}'"


def _files(paths: Sequence[str]) -> str:
    quoted = [_quote(str(Path(p).expanduser().resolve())) for p in paths]
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
) -> list[str]:
    """The Hydra overrides that select a recipe and fill in its run arguments (``extra`` last, so it wins).

    ``model`` is a local directory (made absolute) or a hub id (kept as is).
    """
    spec = STAGES[stage]
    if backbone not in backbones(stage):
        raise ValueError(f"unknown {stage} backbone {backbone!r}; available: {backbones(stage)}")
    if stage == "sft" and ablation != NO_ABLATION:
        raise ValueError("ablations apply to the RL stage only")
    if stage == "rl" and ablation not in ablations():
        raise ValueError(f"unknown ablation {ablation!r}; available: {ablations()}")
    if not train_files:
        raise ValueError("at least one training file is required")
    if stage == "rl" and not val_files:
        raise ValueError("the RL stage needs validation files (free-mode evaluation)")
    name = experiment_name(stage, backbone, ablation)
    model_path = str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model
    out = Path(output_dir).expanduser().resolve() if output_dir else Path.cwd() / "checkpoints" / "persona_dual" / name
    model_key = "actor_rollout_ref.model.path" if stage == "rl" else "model.path"
    overrides = [f"{spec.backbone_group}={backbone}"]
    if stage == "rl":
        overrides.append(f"{ABLATION_GROUP}={ablation}")
    overrides += [
        f"{model_key}={_quote(model_path)}",
        f"data.train_files={_files(train_files)}",
        f"data.val_files={_files(val_files) if val_files else 'null'}",
        f"trainer.experiment_name={name}",
        f"trainer.default_local_dir={_quote(str(out))}",
    ]
    return overrides + list(extra)


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``stage``'s recipe with verl's packaged configs on the search path, as verl's CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=STAGES[stage].config_name, overrides=list(overrides))


def validate(stage: str, cfg: DictConfig) -> None:
    """verl's own checks for the stage; raises on the first problem.

    RL: ``verl.utils.config.validate_config`` exactly as ``main_ppo.main`` calls it (it converts the actor
    section to its dataclass and checks batch divisibility), the rollout and checkpoint-engine dataclass
    conversions verl's workers do, plus the DualGRPO namespace. SFT: the dataclass
    conversions of ``SFTTrainer._build_config`` that need no model on disk (engine, optim, checkpoint, profiler).
    """
    from verl.utils.config import omega_conf_to_dataclass

    if stage == "rl":
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config

        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout.checkpoint_engine)
        if cfg.algorithm.adv_estimator == ESTIMATOR:
            DualGRPOConfig.from_algorithm(cfg.algorithm)
    else:
        for section in ("engine", "optim", "checkpoint", "profiler"):
            omega_conf_to_dataclass(cfg[section])


def launch_command(stage: str, cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """The command that runs the composed recipe with verl (torchrun for SFT, main_ppo for RL; on CPU, SFT runs
    through ``verl_personadual.cpu.sft``, verl's SFT trainer on a gloo process group)."""
    spec = STAGES[stage]
    hydra_args = ["--config-path", str(CONFIG_DIR), "--config-name", spec.config_name, *overrides]
    if stage == "sft" and cfg.trainer.device == CPU_DEVICE:
        return [sys.executable, "-m", CPU_SFT_MODULE, *hydra_args]
    if stage == "sft":
        if cfg.trainer.nnodes != 1:
            raise ValueError("multi-node SFT: start torchrun on every node yourself (see recipes/README.md)")
        launcher = ["torchrun", "--standalone", "--nnodes=1", f"--nproc_per_node={cfg.trainer.n_gpus_per_node}"]
        return [*launcher, "-m", spec.verl_module, *hydra_args]
    return [sys.executable, "-m", spec.verl_module, *hydra_args]


def output_paths(stage: str, cfg: DictConfig) -> dict[str, str]:
    """Where a run of the composed recipe writes its checkpoints and the model the next step uses."""
    root = str(cfg.trainer.default_local_dir)
    if stage == "sft":
        return {"checkpoints": root, "hf_model (input of the RL stage)": f"{root}/global_step_<last>/huggingface"}
    return {
        "checkpoints": root,
        "actor shards (convert with verl.model_merger, see recipes/README.md)": f"{root}/global_step_<N>/actor",
    }


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verl_personadual.recipes",
        description=(
            "Compose a PersonaDual recipe against verl's real Hydra config, validate it with verl's own checks, "
            "then start verl (or, with --dry-run, print the fully composed config and the command, and exit). "
            "Arguments after `--` are extra Hydra overrides, e.g. `-- trainer.n_gpus_per_node=4`."
        ),
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{sft,rl}")
    for stage, help_text in (("sft", "Stage 1: SFT on both modes"), ("rl", "Stage 2: DualGRPO (or an ablation)")):
        p = sub.add_parser(stage, help=help_text, description=help_text)
        p.add_argument("--backbone", required=True, choices=backbones(stage), help="recipe backbone")
        p.add_argument(
            "--model",
            required=True,
            help="model to train: SFT = base checkpoint with mode tokens; RL = the SFT stage's huggingface/ dir",
        )
        p.add_argument("--train-files", required=True, nargs="+", help="training parquet file(s)")
        p.add_argument(
            "--val-files", nargs="+", default=[], required=stage == "rl", help="validation parquet file(s)"
        )
        if stage == "rl":
            p.add_argument("--ablation", default=NO_ABLATION, choices=ablations(), help="ablation / baseline")
        p.add_argument(
            "--output-dir", default=None, help="checkpoint directory (default: ./checkpoints/persona_dual/<experiment>)"
        )
        p.add_argument("--dry-run", action="store_true", help="print the composed config and command; start nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (verl's, for a real run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    try:
        cfg, overrides = _checked_config(args, extra)
        command = launch_command(args.stage, cfg, overrides)
    except (PreflightError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outputs = output_paths(args.stage, cfg)
    if args.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        print(f"# dry run: nothing started. The run would be:\n# {shlex.join(command)}", file=sys.stderr)
        for what, path in outputs.items():
            print(f"# {what}: {path}", file=sys.stderr)
        return 0
    print(f"[persona_dual] {args.stage}: running {shlex.join(command)}", flush=True)
    for what, path in outputs.items():
        print(f"[persona_dual] {what}: {path}", flush=True)
    return subprocess.call(command, env={**os.environ, **run_env(cfg)})


def _rows(paths: Sequence[str], flag: str) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        try:
            total += pq.ParquetFile(Path(path).expanduser()).metadata.num_rows
        except Exception as err:  # pyarrow raises several types for a file that is not parquet
            raise PreflightError(f"{flag} {path}: not a readable parquet file ({type(err).__name__})") from None
    return total


def _check_batch_fits(stage: str, cfg: DictConfig, train_files: Sequence[str], val_files: Sequence[str]) -> None:
    """verl drops the last partial batch: fewer training rows than ``data.train_batch_size`` means no training step
    (SFT then divides by zero), and for SFT, whose validation uses that batch size too, no validation batch
    (``val/loss`` nan)."""
    batch = int(cfg.data.train_batch_size)
    checks = [("--train-files", train_files, "no training step would run")]
    if stage == "sft" and val_files:
        checks.append(("--val-files", val_files, "validation would have no batch (val/loss nan)"))
    for flag, paths, effect in checks:
        rows = _rows(paths, flag)
        if rows == 0:
            raise PreflightError(f"{flag}: no rows")
        if rows < batch:
            raise PreflightError(
                f"{flag}: {rows} rows, fewer than data.train_batch_size={batch}; verl drops partial batches, so "
                f"{effect}: give more rows or a smaller batch (`-- data.train_batch_size=N`, N <= {rows})"
            )


def _checked_config(args: argparse.Namespace, extra: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """Preflight, compose and validate; every failure is a one-line PreflightError or ValueError."""
    from hydra.errors import HydraException

    check_model(args.model)
    check_files(args.train_files, "--train-files")
    check_files(args.val_files, "--val-files")
    overrides = build_overrides(
        stage=args.stage,
        backbone=args.backbone,
        model=args.model,
        train_files=args.train_files,
        val_files=args.val_files,
        ablation=getattr(args, "ablation", NO_ABLATION),
        output_dir=args.output_dir,
        extra=extra,
    )
    try:
        cfg = compose(args.stage, overrides)
    except HydraException as err:
        raise PreflightError(explain_composition_error(args.stage, overrides, err)) from None
    _check_batch_fits(args.stage, cfg, args.train_files, args.val_files)
    # verl's validation prints progress to stdout; keep stdout for the composed config, and the error alone.
    progress = io.StringIO()
    with contextlib.redirect_stdout(progress):
        try:
            validate(args.stage, cfg)
        except AssertionError as err:  # verl checks some settings with assert
            raise ValueError(f"verl rejects the composed config: {err}") from None
    sys.stderr.write(progress.getvalue())
    return cfg, overrides


if __name__ == "__main__":
    sys.exit(main())
