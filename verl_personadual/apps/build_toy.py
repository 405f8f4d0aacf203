"""CLI: write the toy persona task (``python -m verl_personadual.apps.build_toy --out DIR``); the task itself is
``verl_personadual.data.toy``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from verl_personadual.data.preflight import PreflightError, check_output_dir
from verl_personadual.data.toy import ToyKind, ToySizes, ToyVariant, build
from verl_personadual.utils.cli import Parser, count, non_negative
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.outputs import OVERWRITE_HELP, Build, claim_output, inputs_from


def personalized_share(values: Sequence[str] | None) -> dict[str, float] | None:
    """``--personalized-share``: one share for every kind (``0.2``) or ``KIND=SHARE`` for each kind; None stays
    None. A PreflightError names a value that is neither (``toy.check_personalized_share`` checks kinds and range)."""
    if values is None:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return {k.value: _share(values[0]) for k in ToyKind}
    out = {}
    for value in values:
        kind, sep, share = value.partition("=")
        if not sep:
            raise PreflightError(f"--personalized-share {value!r}: expected one SHARE for every kind, or KIND=SHARE")
        out[kind] = _share(share)
    return out


def _share(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PreflightError(f"--personalized-share: {text!r} is not a number") from None


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`_main` under ``run_cli`` (a user error: one ``error:`` line, exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    d = ToySizes()
    p = Parser(
        prog="python -m verl_personadual.apps.build_toy",
        description="Write the toy persona task (see the module docstring): RL and SFT parquet, an eval set for "
        "`python -m verl_personadual.eval run --eval-set`, and a manifest.",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (a rerun with the same inputs resumes)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--seed", type=non_negative, default=0, help="generator seed (default: %(default)s)")
    p.add_argument(
        "--sft-items", type=count, default=d.sft, help="SFT items, one row per mode each (default: %(default)s)"
    )
    p.add_argument("--rl-items", type=count, default=d.rl, help="RL training items (default: %(default)s)")
    p.add_argument("--rl-val-items", type=count, default=d.rl_val, help="RL validation items (default: %(default)s)")
    p.add_argument("--eval-items", type=count, default=d.eval, help="held-out eval items (default: %(default)s)")
    p.add_argument(
        "--variant",
        choices=[v.value for v in ToyVariant],
        default=ToyVariant.OCCUPATIONS.value,
        help="what makes a persona aligned: a domain role vs an unrelated occupation, or the persona's domain being "
        "the question's (default: %(default)s; verl_personadual.data.toy)",
    )
    p.add_argument(
        "--personalized-share",
        nargs="+",
        metavar="SHARE|KIND=SHARE",
        help="SFT mode mix: one trajectory per item, personalized for this share of each kind's items (one share "
        "for all kinds, or KIND=SHARE for each of none misleading helpful agreeing); default: both modes of every item",
    )
    a = p.parse_args(argv)
    check_output_dir(a.out)
    spec = Build("build_toy", "toy-task", inputs_from(vars(a), {"out", "overwrite"}))
    with claim_output(a.out, spec, overwrite=a.overwrite) as claim:
        share = personalized_share(a.personalized_share)
        sizes = ToySizes(a.sft_items, a.rl_items, a.rl_val_items, a.eval_items)
        manifest = build(claim.dir, sizes, a.seed, ToyVariant(a.variant), share)
    print(json.dumps(manifest["kinds"], sort_keys=True))
    print(f"toy task written to {a.out} (manifest.json lists the files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
