"""`python -m verl_personadual.recipes` on wrong input: one `error:` line (exit 2, nothing on stdout) for a missing
model or data file, too few rows for a batch, a Hydra key typo (with the known keys and the closest one) and a
DualGRPO key typo; a dry run prints no warning."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from verl_personadual.apps.recipes import cli as recipes_cli
from verl_personadual.apps.recipes import compose as R
from verl_personadual.core.config import DualGRPOConfig

REPO = Path(__file__).resolve().parents[2]
DUAL_KEYS = sorted(f.name for f in fields(DualGRPOConfig))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Toy RL rows that also carry an SFT ``messages`` column, so that one file passes both stages' data checks."""
    from verl_personadual.data import toy

    d = tmp_path_factory.mktemp("recipes_cli")
    toy.build(d / "toy")
    rows = pd.read_parquet(d / "toy" / "rl" / "train.parquet").head(20)
    rows["messages"] = [[*p, {"role": "assistant", "content": "ok"}] for p in rows["prompt"]]
    out = {}
    for name, n in (("train", 20), ("val", 8), ("small", 3)):
        out[name] = str(d / f"{name}.parquet")
        rows.head(n).to_parquet(out[name])
    (d / "notparquet.parquet").write_text("hello")
    out["bad"] = str(d / "notparquet.parquet")
    return out


def rl_args(model: Path, data: dict[str, str], *extra: str, train: str = "train") -> list[str]:
    return [
        "rl",
        "--backbone",
        "cpu_tiny",
        "--model",
        str(model),
        "--train-files",
        data[train],
        "--val-files",
        data["val"],
        "--dry-run",
        *extra,
    ]


def error_of(argv: list[str], capsys) -> str:
    assert recipes_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_hydra_key_typo_is_one_line_with_the_known_keys_and_the_closest(tiny_model_dir, data, capsys):
    assert error_of(rl_args(tiny_model_dir, data, "--", "algorithm.dual_grpo.betta=1.0"), capsys) == (
        f"error: unknown config key 'algorithm.dual_grpo.betta'; known keys under algorithm.dual_grpo: "
        f"{', '.join(DUAL_KEYS)}; did you mean 'algorithm.dual_grpo.beta'?\n"
    )
    top = sorted(R.compose("rl", R.build_overrides("rl", "cpu_tiny", "/m", [data["train"]], [data["val"]])).keys())
    assert error_of(rl_args(tiny_model_dir, data, "--", "algoritm.dual_grpo.beta=1.0"), capsys) == (
        f"error: unknown config key 'algoritm.dual_grpo.beta'; known keys under <top level>: {', '.join(top)}; "
        "did you mean 'algorithm'?\n"
    )


def test_plus_on_a_typo_or_an_existing_key_is_one_line(tiny_model_dir, data, capsys):
    assert error_of(rl_args(tiny_model_dir, data, "--", "+algorithm.dual_grpo.betta=1.0"), capsys) == (
        f"error: unknown key(s) under algorithm.dual_grpo: ['betta']; known keys: {DUAL_KEYS}; did you mean 'beta'?\n"
    )
    assert error_of(rl_args(tiny_model_dir, data, "--", "+algorithm.dual_grpo.beta=1.0"), capsys) == (
        "error: algorithm.dual_grpo.beta already exists in the recipe: drop the '+' (algorithm.dual_grpo.beta=VALUE)\n"
    )
    assert error_of(rl_args(tiny_model_dir, data, "--", "rl_backbone=nope"), capsys) == (
        "error: cannot apply the overrides: In 'persona_dual_rl': Could not find 'rl_backbone/nope' Available options "
        "in 'rl_backbone': cpu_tiny cpu_toy llama31_8b qwen3_0p6b qwen3_8b\n"
    )


def test_dry_run_checks_the_model_and_the_files(tiny_model_dir, data, tmp_path, capsys):
    assert (
        error_of(rl_args(tmp_path / "nope", data), capsys) == f"error: --model {tmp_path / 'nope'}: no such directory\n"
    )
    missing = str(tmp_path / "missing.parquet")
    argv = ["sft", "--backbone", "cpu_tiny", "--model", str(tiny_model_dir), "--train-files", missing, "--dry-run"]
    assert error_of(argv, capsys) == f"error: --train-files {missing}: no such file\n"
    assert error_of(rl_args(tiny_model_dir, data, train="bad"), capsys) == (
        f"error: --train-files {data['bad']}: not a readable parquet file (ArrowInvalid)\n"
    )
    assert error_of(rl_args(tiny_model_dir, data, train="small"), capsys) == (
        "error: --train-files: 3 rows, fewer than data.train_batch_size=4; verl drops partial batches, so no training "
        "step would run: give more rows or a smaller batch (`-- data.train_batch_size=N`, N <= 3)\n"
    )
    argv = [
        "sft",
        "--backbone",
        "cpu_tiny",
        "--model",
        str(tiny_model_dir),
        "--train-files",
        data["train"],
        "--val-files",
        data["small"],
        "--dry-run",
    ]
    assert error_of(argv, capsys) == (
        "error: --val-files: 3 rows, fewer than data.train_batch_size=4; verl drops partial batches, so validation "
        "would have no batch (val/loss nan): give more rows or a smaller batch (`-- data.train_batch_size=N`, N <= 3)\n"
    )


def test_dry_run_prints_no_warning(tiny_model_dir, data):
    """No 'no accelerator' / 'engine is not available' warnings on a CPU machine (verl's plain environment)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "verl_personadual.recipes", *rl_args(tiny_model_dir, data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert lines[:2] == [
        "[validate_config] All configuration checks passed successfully!",
        "# dry run: nothing started. The run would be:",
    ]
    assert len(lines) == 4 and all(line.startswith("# ") for line in lines[1:]), proc.stderr
    # cpu_tiny has trainer.save_freq=-1: verl's RL trainer saves nothing, so no checkpoint folder is announced
    assert (
        lines[3]
        == "# checkpoints: none: trainer.save_freq=-1, so verl saves no checkpoint (set it > 0 to keep the trained "
        "model)"
    )
