"""The main job on the shipped default, runnable on a fresh CPU machine in about a minute.

1. self-check: a fresh ``import verl`` sees every registration of the plugin;
2. RL data: ``data_preprocess.build_rl --samples`` turns the shipped samples of UltraMedical, FLAN, AlignX and
   PersonaHub into verl parquet (offline-template aligned personas, clearly labelled as such);
3. the DualGRPO recipe for one GPU (``qwen3_0p6b``) is composed on that data against verl's real config and
   validated by verl's own checks; the command that would train it is printed, nothing is started.

    python -m verl_personadual.quickstart [--out outputs/quickstart] [--model PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]

SMALL_BACKBONE = "qwen3_0p6b"


def _say(text: str) -> None:
    print(f"[quickstart] {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl_personadual.quickstart",
        description=__doc__.split("\n\n")[0]
        + " Checks the plugin, builds RL parquet from the shipped samples, and composes + validates the "
        "one-GPU DualGRPO recipe on it with verl's own checks (nothing is trained).",
    )
    parser.add_argument("--out", default="outputs/quickstart", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--model",
        default="/path/to/sft_checkpoint",
        help="model path written into the printed training command (default: a placeholder)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)

    from verl_personadual.check import registration_checks

    _say("1/3 self-check: registrations seen by a fresh `import verl`")
    checks = registration_checks()
    for c in checks:
        print(f"    {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if not all(c.ok for c in checks):
        _say("the plugin is not visible to verl; see `python -m verl_personadual.check --help`")
        return 1

    from data_preprocess import build_rl

    rl_dir = out / "rl"
    _say(f"2/3 RL data from the shipped samples -> {rl_dir}")
    status = build_rl.main(["--samples", "--out", str(rl_dir), "--no-progress"])
    if status:
        return status
    manifest = json.loads((rl_dir / "manifest.json").read_text())
    personas = manifest["aligned_personas"]
    _say(
        f"    aligned personas: {personas['mode']} for {personas['items']} items (labelled placeholders; "
        "pass --aligned-personas llm with an endpoint to build_rl for real ones)"
    )
    for split in ("train", "validation"):
        counts = manifest.get("counts", {}).get(split)
        if counts:
            print(f"    {split}: {json.dumps(counts, sort_keys=True)}")

    from verl_personadual import recipes

    _say(f"3/3 compose + validate the DualGRPO recipe '{SMALL_BACKBONE}' on that data (verl's own checks)")
    overrides = recipes.build_overrides(
        stage="rl",
        backbone=SMALL_BACKBONE,
        model=args.model,
        train_files=[str(rl_dir / "train.parquet")],
        val_files=[str(rl_dir / "validation.parquet")],
        output_dir=str(out / "checkpoints"),
    )
    cfg = recipes.compose("rl", overrides)
    with contextlib.redirect_stdout(sys.stderr):
        recipes.validate("rl", cfg)
    dual = cfg.algorithm.dual_grpo
    print(
        f"    estimator={cfg.algorithm.adv_estimator} trainer_mode={cfg.trainer.v1.trainer_mode} "
        f"n={cfg.actor_rollout_ref.rollout.n} beta={dual.beta} inter_mode={dual.inter_mode} "
        f"reward={cfg.reward.custom_reward_function.path}"
    )
    _say("done. On a GPU machine (pip install -e '.[gpu]'), train with:")
    print("    " + shlex.join(recipes.launch_command("rl", cfg, overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
