"""CLI of the quickstart (``python -m verl_personadual.quickstart --help``); the stages are
``verl_personadual.apps.quickstart.stages``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from verl_personadual.apps.quickstart import stages
from verl_personadual.apps.quickstart.stages import FIRST_STAGES, Quickstart, say
from verl_personadual.utils.cli import Parser, non_negative
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.outputs import Build, claim_output


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0, 3 with --check-targets when a target is missed; a user error or a failed stage is one
    ``error:`` line on stderr and exit status 2 (``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    from verl_personadual.apps.recipes.compose import ablations

    parser = Parser(
        prog="python -m verl_personadual.quickstart",
        description=stages.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/quickstart"), help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--ablation",
        nargs="+",
        default=["none"],
        choices=ablations(),
        help="RL recipe ablation(s) to run after the shared SFT stage (default: none = PersonaDual)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="Hydra overrides for every RL run (e.g. algorithm.dual_grpo.prefix_kl=mass); the run's "
        "label gets them, so runs with other settings sit side by side in one --out",
    )
    parser.add_argument(
        "--check-targets",
        action="store_true",
        help="exit 3 unless every RL run reaches the targets of verl_personadual.apps.quickstart.report.TARGETS "
        "and its validation shows no mode collapse after step 0 (report.collapse_missed)",
    )
    parser.add_argument(
        "--stop-after",
        choices=FIRST_STAGES,
        metavar="STAGE",
        help=f"stop after this stage (one of {', '.join(FIRST_STAGES)}), e.g. to prepare the data and "
        "model only; a rerun without it continues from there",
    )
    parser.add_argument(
        "--seed",
        type=non_negative,
        help="one seed for the tiny model's weights, SFT and RL (default: the recipes' own seeds and model seed "
        f"{stages.MODEL_SEED}, which the README's figures were measured with)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from verl_personadual.apps.quickstart.report import (
        TARGETS,
        collapse_missed,
        fmt,
        selection_line,
        targets_met,
    )
    from verl_personadual.data.preflight import check_output_dir

    check_output_dir(args.out)
    # inputs: the stage markers and the model's --seed pin them (stages.py); runs with other settings sit side by side
    with claim_output(args.out, Build("quickstart", "quickstart"), overwrite=None):
        qs = Quickstart(
            args.out, args.ablation, progress=not args.no_progress, overrides=args.overrides, seed=args.seed
        )
        runs = qs.run_all(stop_after=args.stop_after)
    if runs is None:
        return 0
    say(f"report: {qs.out / 'report.md'}")
    status = 0
    before = runs["sft"]
    for a in qs.runs:
        after = runs[f"rl-{a}"]
        met = targets_met(after)
        missed = [
            f"{k} {fmt(after.get(k))} (target {TARGETS[k][0]} {TARGETS[k][1]})" for k, ok in met.items() if not ok
        ]
        collapse = collapse_missed(qs.rl_curves(a))
        if collapse:
            missed.append(collapse)
        say(
            f"rl-{a}: p(better mode) {fmt(before['p_better'])} -> {fmt(after['p_better'])}; free accuracy "
            f"{fmt(after['free_acc'])} of upper bound {fmt(after['upper_bound'])}; unknown-mode rate "
            f"{fmt(after['unknown_rate'])}" + (f"; below target: {', '.join(missed)}" if missed else "; targets met")
        )
        if missed and args.check_targets:
            status = 3
    for a in qs.runs:
        print(selection_line(a, before, runs[f"rl-{a}"]), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
