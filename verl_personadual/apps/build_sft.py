"""CLI of the SFT data builder (``python -m verl_personadual.apps.build_sft --help``); the pipeline is
``verl_personadual.data.sft_rows``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from verl_personadual.apps import build_rl
from verl_personadual.apps.llm_args import add_llm_arguments, llm_config_from_args
from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import (
    PERSONALIZED_SOURCES,
    DataSource,
)
from verl_personadual.data import rl_rows, samples
from verl_personadual.data.personas import AlignedMode
from verl_personadual.data.rl_rows import BuildError
from verl_personadual.data.sft_rows import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TRAIN_COUNTS,
    DEFAULT_VAL_COUNTS,
    EXPERT_REASONING,
    SAMPLE_TRAIN_COUNTS,
    SAMPLE_VAL_COUNTS,
    SFT_SAMPLE_INPUTS,
    SFTConfig,
    build,
    sample_paths,
)
from verl_personadual.utils.cli import Parser, count, existing_dir, non_negative_number
from verl_personadual.utils.errors import run_cli
from verl_personadual.utils.outputs import Build, claim_output, inputs_from


def make_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m verl_personadual.apps.build_sft",
        description=(
            "Build PersonaDual SFT data: expert trajectories in general and personalized mode for UltraMedical, "
            "FLAN and AlignX items (personas as in build_rl), gain-based selection graded by the project's reward, "
            "written as verl 0.9.1 multi-turn SFT parquet (column `messages`): OUT/train.parquet, "
            "OUT/validation.parquet and OUT/manifest.json (kept general / personalized / dropped per source x "
            "persona setting, selection decisions, expert accuracy, expert prompt version, requests made vs served "
            "from cache). Selection and normalisation rules: verl_personadual/data/sft_selection.py."
        ),
        epilog=(
            "The expert is any OpenAI-compatible endpoint (a hosted DeepSeek-R1, a local vLLM server): "
            "PERSONADUAL_LLM_BASE_URL, PERSONADUAL_LLM_MODEL, PERSONADUAL_LLM_API_KEY or the --llm-* flags; it also "
            "writes the aligned personas unless --aligned-personas offline-template. With --samples and no endpoint, "
            "the expert replies are recorded placeholders replayed offline (verl_personadual.data.samples) and "
            "the items come from verl_personadual/samples/sft/ (disjoint from build_rl --samples). Every reply is "
            "cached "
            "(PERSONADUAL_LLM_CACHE_DIR or --llm-cache-dir): a re-run or a resumed run sends only requests that "
            "never succeeded. Pass --exclude-rl RL_OUT_DIR so that no SFT item is also an RL item. Train with "
            "recipes/config/persona_dual_sft.yaml (data.train_files=OUT/train.parquet, "
            "data.val_files=OUT/validation.parquet) from a checkpoint prepared by "
            "`python -m verl_personadual.apps.add_mode_tokens`."
        ),
    )
    build_rl.add_input_arguments(p, DEFAULT_TRAIN_COUNTS, DEFAULT_VAL_COUNTS, count_note=" before selection")
    p.add_argument(
        "--exclude-rl",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a build_rl output directory whose items (train + validation) must not be used; repeatable",
    )
    p.add_argument(
        "--aligned-personas",
        type=AlignedMode,
        choices=list(AlignedMode),
        default=None,
        help="llm (default) or offline-template (labelled placeholders)",
    )
    p.add_argument(
        "--temperature",
        type=non_negative_number,
        default=DEFAULT_TEMPERATURE,
        help=f"expert sampling temperature (default {DEFAULT_TEMPERATURE})",
    )
    p.add_argument(
        "--max-tokens",
        type=count,
        default=DEFAULT_MAX_TOKENS,
        help=f"expert reply token limit (default {DEFAULT_MAX_TOKENS}); truncated replies have no answer "
        "and are counted as unusable",
    )
    p.add_argument(
        "--require-correct",
        action="store_true",
        help="drop items whose kept trajectory is wrong (default: keep, as the paper's rule does)",
    )
    p.add_argument(
        "--tie",
        type=Mode.parse,
        choices=list(Mode),
        default=Mode.GENERAL,
        metavar="{general,personalized}",
        help="mode kept when both trajectories of an objective item are correct (default general: the "
        "persona must change the outcome)",
    )
    p.add_argument(
        "--only-mode",
        type=Mode.parse,
        choices=list(Mode),
        default=None,
        metavar="{general,personalized}",
        help="single-mode SFT data for the paper's single-capability baselines (G-SFT-RL / P-SFT-RL): "
        "one trajectory per item in that mode, no gain-based choice. general: objective items only "
        "(AlignX counts default to 0); personalized: every item",
    )
    p.add_argument(
        "--expert-reasoning",
        choices=sorted(EXPERT_REASONING),
        default="keep",
        help="keep (default): a reasoning expert's thinking (the reply's reasoning_content / reasoning "
        "field, or a think block heading its content) opens the trajectory's reasoning, as plain "
        "text; the paper distils DeepSeek-R1's reasoning trajectories. drop: only the reply's "
        "content is kept. Thinking is long: pair keep with --tokenizer/--max-length",
    )
    p.add_argument(
        "--tokenizer",
        type=existing_dir,
        metavar="DIR",
        help="tokenizer of the model to train; with --max-length, drop rows longer than that",
    )
    p.add_argument(
        "--max-length",
        type=count,
        default=None,
        help="longest row in tokens, counted on --tokenizer's chat template of the whole conversation "
        "(a few template tokens above verl's per-message count for Qwen3, so conservative); the SFT "
        "recipe uses data.max_length=4096 with truncation=error",
    )
    add_llm_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> SFTConfig:
    if (args.tokenizer is None) != (args.max_length is None):
        raise BuildError("--tokenizer and --max-length go together")
    base = build_rl.config_from_args(args)
    train, val = (
        (SAMPLE_TRAIN_COUNTS, SAMPLE_VAL_COUNTS) if args.samples else (DEFAULT_TRAIN_COUNTS, DEFAULT_VAL_COUNTS)
    )
    if args.only_mode is Mode.GENERAL:  # no persona-free answer to a personalized item
        none = {s: 0 for s in rl_rows.SOURCES if DataSource(s) in PERSONALIZED_SOURCES}
        train, val = train | none, val | none
    base = replace(base, train_counts=train | args.train_counts, val_counts=val | args.val_counts)
    if args.samples:
        base = replace(base, paths=base.paths | {n: getattr(args, n) or sample_paths()[n] for n in SFT_SAMPLE_INPUTS})
    expert = llm_config_from_args(args)
    if expert is None and args.samples:
        expert = samples.replay_config()
    return SFTConfig(
        base=base,
        expert=expert,
        exclude_rl=list(args.exclude_rl),
        sampling={"temperature": args.temperature, "max_tokens": args.max_tokens},
        require_correct=args.require_correct,
        tie=args.tie,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        keep_expert_reasoning=EXPERT_REASONING[args.expert_reasoning],
        only_mode=args.only_mode,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`_main` under ``run_cli`` (a user error: one ``error:`` line, exit status 2)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = make_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        cfg = config_from_args(args)
        build_spec = Build("build_sft", "sft-data", inputs_from(vars(args), build_rl.NOT_INPUTS))
        claim = stack.enter_context(claim_output(args.out, build_spec, overwrite=args.overwrite))
        if cfg.base.aligned is AlignedMode.OFFLINE_TEMPLATE:
            print("aligned personas: OFFLINE TEMPLATE placeholders (not question-specific)", file=sys.stderr)
        if samples.is_replay(cfg.expert):
            print(
                "expert trajectories: RECORDED PLACEHOLDER replies for the shipped samples (offline; not written "
                "by an expert model)",
                file=sys.stderr,
            )
        if not cfg.exclude_rl and not args.samples:
            print("warning: no --exclude-rl given: SFT items may also be RL items", file=sys.stderr)
        manifest = build(replace(cfg, base=replace(cfg.base, write_dir=claim.dir)))
    for split, out in manifest["outputs"].items():
        print(f"{split}: {out['rows']} rows -> {out['path']}")
    for src, settings in manifest["selection"]["train"].items():
        for setting, c in settings.items():
            print(
                f"train {src}/{setting}: general {c['general']}, personalized {c['personalized']}, "
                f"dropped {c['dropped']}"
            )
    print(f"manifest -> {cfg.base.out_dir / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
