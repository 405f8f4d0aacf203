"""CLI of the recipes: ``python -m verl_personadual.recipes {sft,rl} --backbone B ... [--dry-run] [-- overrides]``
(module docstring of ``verl_personadual.apps.recipes``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from verl_personadual.apps.recipes.compose import (
    NO_ABLATION,
    ablations,
    backbones,
    split_overrides,
)
from verl_personadual.apps.recipes.launch import launch_command, output_paths, run_env
from verl_personadual.apps.recipes.validate import (
    OverlongRows,
    check_batch_fits,
    check_inputs,
    configure,
    drop_overlong_rows,
    find_overlong_rows,
)
from verl_personadual.data.preflight import (
    PreflightError,
    check_files,
    check_model,
)
from verl_personadual.utils.cli import Parser, count
from verl_personadual.utils.errors import run_cli


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m verl_personadual.recipes",
        description=(
            "Compose a PersonaDual recipe against verl's real Hydra config, validate it with verl's own checks, "
            "then start verl (or, with --dry-run, print the fully composed config and the command, and exit). "
            "Before an SFT run, every row of the data is tokenized as verl's SFT trainer will, and rows longer "
            "than data.max_length stop the launch (or are dropped with --drop-overlong). "
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
        p.add_argument("--val-files", nargs="+", default=[], required=stage == "rl", help="validation parquet file(s)")
        if stage == "rl":
            p.add_argument("--ablation", default=NO_ABLATION, choices=ablations(), help="ablation / baseline")
        p.add_argument(
            "--output-dir", default=None, help="checkpoint directory (default: ./checkpoints/persona_dual/<experiment>)"
        )
        p.add_argument(
            "--nnodes",
            type=count,
            default=None,
            help=(
                "nodes (default: the backbone's, 1). Above 1: run this once, on the head node of a running Ray "
                "cluster; it sets trainer.nnodes and joins the cluster (ray_kwargs.ray_init.address=auto)"
                if stage == "rl"
                else "nodes (default: the backbone's, 1). Above 1: run the same command on every node, with "
                "--rdzv-endpoint"
            ),
        )
        if stage == "sft":
            p.add_argument(
                "--rdzv-endpoint",
                default=None,
                metavar="HOST:PORT",
                help="multi-node SFT: torchrun's c10d rendezvous address, the same on every node (e.g. node0:29400)",
            )
            p.add_argument(
                "--text-prefixes",
                action="store_true",
                help=(
                    "the model has no dedicated mode tokens: train on the prefixes as plain text (the RL stage then "
                    "needs `-- algorithm.dual_grpo.require_mode_tokens=false`); default: refuse such a model"
                ),
            )
            p.add_argument(
                "--drop-overlong",
                action="store_true",
                help=(
                    "train on copies of the data files without the rows longer than data.max_length (written "
                    "under <output-dir>/sft_data/ with a manifest of the dropped rows) instead of refusing to start"
                ),
            )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="run every check the launch runs (the SFT data length check included), print the composed config "
            "and the command; start nothing, write nothing",
        )
    return parser


@dataclass(frozen=True)
class RunPlan:
    """A checked run: what :func:`plan_run` found, what the dry run prints and the launch starts.

    Attributes:
        cfg: the composed, validated recipe (with ``--drop-overlong``: on the copies the launch writes).
        command: verl's command line.
        checks_log: what verl's validation printed.
        drops: ``(over-long rows of one file, the copy without them)`` for each file with such rows.
    """

    cfg: DictConfig
    command: list[str]
    checks_log: str
    drops: tuple[tuple[OverlongRows, Path], ...] = ()


def _overlong_drops(args: argparse.Namespace, cfg: DictConfig) -> list[tuple[str, int, OverlongRows, Path]]:
    """``(split, index in the split's files, rows, copy)`` of each data file with rows over ``data.max_length``.

    Raises ``PreflightError`` with the offending files and rows unless ``args.drop_overlong``.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # verl's dataset prints its length
        found = find_overlong_rows(cfg)
    bad = [f for files in found.values() for f in files if f.over]
    if bad and not args.drop_overlong:
        listing = "\n  ".join(f.describe() for f in bad)
        raise PreflightError(
            f"SFT rows longer than data.max_length={cfg.data.max_length} tokens (verl's SFT trainer stops on the "
            f"first one, data.truncation=error):\n  {listing}\nPass --drop-overlong to train without them, or "
            f"rebuild the data with `python -m verl_personadual.apps.build_sft --tokenizer MODEL --max-length "
            f"{cfg.data.max_length}`."
        )
    out_dir = Path(cfg.trainer.default_local_dir) / "sft_data"
    return [
        (split, i, f, out_dir / f"{split}{i}_{Path(f.path).stem}.max{f.max_length}.parquet")
        for split, files in found.items()
        for i, f in enumerate(files)
        if f.over
    ]


def plan_run(args: argparse.Namespace, extra: Sequence[str]) -> RunPlan:
    """Every check of a run, in the order the launch needs them; the dry run and the launch both call this, so a
    config or data that one refuses the other refuses with the same error. Writes nothing.

    The model and files exist; the recipe composes and passes verl's and our config checks (``configure``); the
    data and the model's mode prefixes fit it (``check_inputs``) and fills a batch (``check_batch_fits``); SFT: no
    row is longer than ``data.max_length`` (or, with ``--drop-overlong``, the run trains on copies without those
    rows, which must still fill a batch); verl's command line can be built.
    """
    check_model(args.model)
    check_files(args.train_files, "--train-files")
    check_files(args.val_files, "--val-files")
    train, val = list(args.train_files), list(args.val_files)
    overrides, cfg, checks_log = configure(args, extra, train, val)
    check_inputs(args.stage, args.model, cfg, train, val, text_prefixes=getattr(args, "text_prefixes", False))
    check_batch_fits(args.stage, cfg, train, val)
    drops = _overlong_drops(args, cfg) if args.stage == "sft" else []
    if drops:
        check_batch_fits(args.stage, cfg, train, val, {split: len(f.over) for split, _, f, _ in drops})
        files = {"train": train, "val": val}
        for split, i, _, copy in drops:
            files[split][i] = str(copy)
        overrides, cfg, checks_log = configure(args, extra, files["train"], files["val"])
    command = launch_command(args.stage, cfg, overrides, getattr(args, "rdzv_endpoint", None))
    return RunPlan(cfg, command, checks_log, tuple((f, copy) for _, _, f, copy in drops))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (verl's for a real run, 2 for a recipe or data problem: one
    ``error:`` line, ``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    argv, extra = split_overrides(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    plan = plan_run(args, extra)
    sys.stderr.write(plan.checks_log)  # verl's validation output, once every check passed
    outputs = output_paths(args.stage, plan.cfg)
    if args.dry_run:
        print(OmegaConf.to_yaml(plan.cfg, resolve=True), end="")
        for found, copy in plan.drops:
            print(f"# --drop-overlong: the run drops {found.describe()} and trains on {copy}", file=sys.stderr)
        print(f"# dry run: nothing started. The run would be:\n# {shlex.join(plan.command)}", file=sys.stderr)
        for what, path in outputs.items():
            print(f"# {what}: {path}", file=sys.stderr)
        return 0
    for found, copy in plan.drops:
        drop_overlong_rows(found, copy)
        print(f"[persona_dual] dropped {found.describe()}; training on {copy}", flush=True)
    print(f"[persona_dual] {args.stage}: running {shlex.join(plan.command)}", flush=True)
    for what, path in outputs.items():
        print(f"[persona_dual] {what}: {path}", flush=True)
    return subprocess.call(plan.command, env={**os.environ, **run_env(plan.cfg)})


if __name__ == "__main__":
    sys.exit(main())
