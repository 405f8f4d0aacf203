"""CLI: add a finished first turn to RL rows (``python -m verl_personadual.apps.build_multiturn --help``); the
row logic is ``verl_personadual.data.multiturn``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq

from verl_personadual.data import multiturn
from verl_personadual.data.families import Selector
from verl_personadual.data.multiturn import add_first_turns, write_rows
from verl_personadual.data.preflight import check_files, check_rl_parquet
from verl_personadual.utils.cli import Parser, non_negative, ratio
from verl_personadual.utils.errors import UserError, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`_main` under ``run_cli`` (a user error: one ``error:`` line, exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = Parser(
        prog="python -m verl_personadual.apps.build_multiturn",
        description=multiturn.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--in", dest="src", required=True, type=Path, help="RL parquet (build_rl or toy schema)")
    p.add_argument("--out", required=True, type=Path, help="output parquet")
    p.add_argument("--ratio", type=ratio, required=True, help="share of rows given a first turn, in [0, 1]")
    p.add_argument("--seed", type=non_negative, default=0, help="seed (default 0)")
    p.add_argument(
        "--personalized",
        type=Selector.parse,
        metavar="FIELD=V[,V...]",
        help="rows that are personalized questions (default: personalized sources; toy: task=helpful)",
    )
    a = p.parse_args(argv)
    check_files([a.src], "--in")
    check_rl_parquet(str(a.src), "--in")
    if a.out.resolve() == a.src.resolve():
        raise UserError(f"--out {a.out}: is the --in file; write the multi-turn rows to another file")
    rows = pq.read_table(a.src).to_pylist()
    splits = {r["extra_info"]["split"] for r in rows}
    if len(splits) != 1:
        raise UserError(f"{a.src}: rows of several splits {sorted(splits)}; give one split's file")
    out = add_first_turns(rows, a.ratio, a.seed, splits.pop(), a.personalized)
    write_rows(out, a.out)
    two = sum(r["extra_info"]["turns"] == 2 for r in out)
    print(f"{two} of {len(out)} rows with a first turn -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
