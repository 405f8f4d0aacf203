"""CLI: write the toy persona task (``python -m verl_personadual.apps.build_toy --out DIR``); the task itself is
``verl_personadual.data.toy``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from verl_personadual.data.preflight import check_output_dir
from verl_personadual.data.toy import ToySizes, build
from verl_personadual.utils.cli import Parser, count, non_negative
from verl_personadual.utils.errors import run_cli, user_errors


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
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=non_negative, default=0, help="generator seed (default: %(default)s)")
    p.add_argument(
        "--sft-items", type=count, default=d.sft, help="SFT items, one row per mode each (default: %(default)s)"
    )
    p.add_argument("--rl-items", type=count, default=d.rl, help="RL training items (default: %(default)s)")
    p.add_argument("--rl-val-items", type=count, default=d.rl_val, help="RL validation items (default: %(default)s)")
    p.add_argument("--eval-items", type=count, default=d.eval, help="held-out eval items (default: %(default)s)")
    a = p.parse_args(argv)
    check_output_dir(a.out)
    with user_errors(ValueError):  # sizes the generator cannot meet
        manifest = build(a.out, ToySizes(a.sft_items, a.rl_items, a.rl_val_items, a.eval_items), a.seed)
    print(json.dumps(manifest["kinds"], sort_keys=True))
    print(f"toy task written to {a.out} (manifest.json lists the files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
