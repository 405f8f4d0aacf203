"""CLI of the RL data builder (``python -m verl_personadual.apps.build_rl --help``); the pipeline is
``verl_personadual.data.rl_rows``. Also the input and ``--llm-*`` arguments shared with the SFT builder.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from verl_personadual.apps.llm_args import add_llm_arguments, llm_config_from_args
from verl_personadual.core import names
from verl_personadual.data import overlap
from verl_personadual.data.personas import (
    AlignedMode,
)
from verl_personadual.data.preflight import check_output_dir
from verl_personadual.data.rl_rows import (
    DEFAULT_TRAIN_COUNTS,
    DEFAULT_VAL_COUNTS,
    FILE_INPUTS,
    SAMPLE_TRAIN_COUNTS,
    SAMPLE_VAL_COUNTS,
    SOURCES,
    BuildConfig,
    build,
)
from verl_personadual.data.samples import rl_sample_paths
from verl_personadual.utils.cli import Parser, non_negative, ratio
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.llm import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_CACHE_DIR,
    ENV_MODEL,
)
from verl_personadual.utils.outputs import OVERWRITE_HELP, Build, claim_output, inputs_from


def parse_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in SOURCES or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected SOURCE=N with SOURCE in {', '.join(SOURCES)}, got {part!r}")
        out[name] = int(value)
    return out


def parse_revision(text: str) -> tuple[str, str]:
    name, sep, rev = text.partition("=")
    if not sep or name not in FILE_INPUTS or not rev:
        raise argparse.ArgumentTypeError(f"expected NAME=REVISION with NAME in {', '.join(FILE_INPUTS)}, got {text!r}")
    return name, rev


def add_input_arguments(
    p: argparse.ArgumentParser, train_default: dict[str, int], val_default: dict[str, int], count_note: str = ""
) -> None:
    """The output, input-file, revision, count and seed options shared by build_rl and build_sft."""
    p.add_argument("--out", type=Path, required=True, help="output directory (a rerun with the same inputs resumes)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument(
        "--samples",
        action="store_true",
        help="use the shipped sample files for every input not given explicitly, sample-sized counts, "
        "and offline-template aligned personas unless --aligned-personas is given",
    )
    for name in FILE_INPUTS:
        p.add_argument(
            f"--{name}",
            type=Path,
            metavar="FILE",
            help=f"local {name} file (.jsonl or .parquet, hub schema); else the hub"
            + ("; its questions are removed from the training items" if name in overlap.filter_rules() else ""),
        )
    p.add_argument(
        "--no-overlap-filter",
        action="store_true",
        help="do not remove training items that are PubMedQA / TriviaQA test questions (the paper does, "
        "Table 5; by default the question lists come from --pubmedqa / --triviaqa or the hub, and "
        "the build stops when one cannot be loaded)",
    )
    p.add_argument(
        "--revision",
        type=parse_revision,
        action="append",
        default=[],
        metavar="NAME=REV",
        help="hub revision (commit / tag) of an input loaded from the hub; repeatable",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed AlignX row (a missing or null field, e.g. a history entry "
        "without a comment) instead of skipping it and counting it in the manifest",
    )
    p.add_argument(
        "--train-counts",
        type=parse_counts,
        default={},
        metavar="SRC=N,...",
        help=f"training items per source{count_note} (default {train_default}, Table 5)",
    )
    p.add_argument(
        "--val-counts",
        type=parse_counts,
        default={},
        metavar="SRC=N,...",
        help=f"validation items per source{count_note} (default {val_default})",
    )
    p.add_argument("--seed", type=non_negative, default=0, help="seed of every random choice (default 0)")


#: Options that do not change what a build writes (output, progress, endpoint location and cache): left out of
#: the inputs its output folder is pinned to (``utils.outputs``).
NOT_INPUTS = frozenset({"out", "overwrite", "no_progress", "llm_base_url", "llm_cache_dir", "llm_concurrency"})


def make_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m verl_personadual.apps.build_rl",
        description=(
            "Build PersonaDual RL data (UltraMedical, FLAN, AlignX with unaligned PersonaHub personas and aligned "
            "LLM-generated personas) as verl 0.9.1 RL parquet: OUT/train.parquet (agent_name="
            f"{names.AGENT_LOOP_FORCED}), OUT/validation.parquet (agent_name={names.AGENT_LOOP_FREE}) and "
            "OUT/manifest.json (counts per source x persona setting, seed, input provenance, filters, skips, LLM "
            "requests made vs served from cache). Same inputs + seed -> byte-identical parquet."
        ),
        epilog=(
            "Quick start, offline: `--samples --out DIR` runs on the shipped sample files with labelled placeholder "
            "aligned personas (--aligned-personas offline-template). Real data: inputs without a local file are "
            "loaded from the Hugging Face hub; aligned personas need an OpenAI-compatible endpoint "
            f"({ENV_BASE_URL}, {ENV_MODEL}, {ENV_API_KEY}, or the --llm-* flags); "
            "with none configured the build stops with an error unless --aligned-personas offline-template. "
            f"Replies are cached ({ENV_CACHE_DIR} or --llm-cache-dir), so a re-run or a resumed run "
            "sends only the requests that never succeeded. Errors (bad input naming file/row/field, "
            "too few items, failed LLM requests) exit with status 2."
        ),
    )
    add_input_arguments(p, DEFAULT_TRAIN_COUNTS, DEFAULT_VAL_COUNTS)
    p.add_argument(
        "--aligned-personas",
        type=AlignedMode,
        choices=list(AlignedMode),
        default=None,
        help="llm (default; needs an endpoint) or offline-template (labelled placeholders, no endpoint)",
    )
    p.add_argument(
        "--multi-turn-ratio",
        type=ratio,
        default=0.0,
        metavar="R",
        help="share of each split's rows turned into two-turn rows: a finished exchange from the other "
        "family (objective / personalized) first (verl_personadual.data.multiturn; default 0: none)",
    )
    add_llm_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The build configuration of parsed arguments; PreflightError when ``--out`` cannot be written."""
    check_output_dir(args.out)
    defaults = rl_sample_paths() if args.samples else {}
    paths = {name: getattr(args, name) or defaults.get(name) for name in FILE_INPUTS}
    train = (dict(SAMPLE_TRAIN_COUNTS) if args.samples else dict(DEFAULT_TRAIN_COUNTS)) | args.train_counts
    val = (dict(SAMPLE_VAL_COUNTS) if args.samples else dict(DEFAULT_VAL_COUNTS)) | args.val_counts
    aligned = args.aligned_personas or (AlignedMode.OFFLINE_TEMPLATE if args.samples else AlignedMode.LLM)
    llm = llm_config_from_args(args) if aligned is AlignedMode.LLM else None
    return BuildConfig(
        out_dir=args.out,
        paths=paths,
        revisions=dict(args.revision),
        train_counts=train,
        val_counts=val,
        seed=args.seed,
        aligned=aligned,
        llm=llm,
        progress=not args.no_progress,
        multi_turn_ratio=getattr(args, "multi_turn_ratio", 0.0),  # build_sft reuses this without the option
        overlap_filter=not args.no_overlap_filter,
        strict=args.strict,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`_main` under ``run_cli`` (a user error: one ``error:`` line, exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = make_parser().parse_args(argv)
    cfg = config_from_args(args)
    build_spec = Build("build_rl", "rl-data", inputs_from(vars(args), NOT_INPUTS))
    with claim_output(args.out, build_spec, overwrite=args.overwrite) as claim:
        if cfg.aligned is AlignedMode.OFFLINE_TEMPLATE:
            print("aligned personas: OFFLINE TEMPLATE placeholders (not question-specific)", file=sys.stderr)
        manifest = build(replace(cfg, write_dir=claim.dir))
    for split, out in manifest["outputs"].items():
        print(f"{split}: {out['rows']} rows -> {out['path']}")
    print(f"manifest -> {cfg.out_dir / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
