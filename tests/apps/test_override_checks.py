"""Overrides are composed and validated before any work, and bad input to the small CLIs is one error line
(issue 22, item 4): ``quickstart --set``, ``cost -- KEY=V``, ``verl_personadual.data.multiturn`` on a parquet without
``prompt``."""

from __future__ import annotations

from dataclasses import fields

import pyarrow as pa
import pyarrow.parquet as pq

from verl_personadual.core.config import DualGRPOConfig

DUAL_KEYS = sorted(f.name for f in fields(DualGRPOConfig))


def _stderr_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = (captured.err + captured.out).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_quickstart_set_typo_fails_before_the_first_stage(tmp_path, capsys):
    from verl_personadual.apps.quickstart.cli import main

    out = tmp_path / "qs"
    assert main(["--out", str(out), "--no-progress", "--set", "algorithm.dual_grpo.betta=1"]) == 2
    assert _stderr_line(capsys).endswith(
        "--set for run rl-none+betta=1: unknown config key 'algorithm.dual_grpo.betta'; known keys under "
        f"algorithm.dual_grpo: {', '.join(DUAL_KEYS)}; did you mean 'algorithm.dual_grpo.beta'?"
    )
    assert not out.exists()  # no stage ran, nothing was written
    assert main(["--out", str(out), "--no-progress", "--set", "+algorithm.dual_grpo.betta=1"]) == 2
    assert _stderr_line(capsys).endswith(
        f"--set for run rl-none+betta=1: unknown key(s) under algorithm.dual_grpo: ['betta']; known keys: {DUAL_KEYS}; "
        "did you mean 'beta'?"
    )
    assert main(["--out", str(out), "--no-progress", "--set", "algorithm.dual_grpo.beta=-1"]) == 2
    assert _stderr_line(capsys).endswith(
        "--set for run rl-none+beta=-1: algorithm.dual_grpo.beta must be a number >= 0, got -1"
    )
    assert not out.exists()


def test_cost_override_typo_is_one_error_line(capsys):
    from verl_personadual.apps.cost import main

    assert main(["--backbone", "qwen3_8b", "--", "algorithm.dual_grpo.betta=1"]) == 2
    assert _stderr_line(capsys) == (
        "error: unknown config key 'algorithm.dual_grpo.betta'; known keys under algorithm.dual_grpo: "
        f"{', '.join(DUAL_KEYS)}; did you mean 'algorithm.dual_grpo.beta'?"
    )


def test_multiturn_on_a_parquet_without_prompt_is_one_error_line(tmp_path, capsys):
    from verl_personadual.apps.build_multiturn import main

    src = tmp_path / "rl.parquet"
    pq.write_table(
        pa.table(
            {
                "data_source": ["toy"],
                "reward_model": [{"style": "rule", "ground_truth": "true"}],
                "extra_info": [{"split": "train"}],
            }
        ),
        src,
    )
    assert main(["--in", str(src), "--out", str(tmp_path / "mt.parquet"), "--ratio", "0.5"]) == 2
    assert _stderr_line(capsys) == (
        f"error: --in {src}: no column 'prompt' (columns: data_source, reward_model, extra_info); an RL parquet is "
        "written by verl_personadual.apps.build_rl or verl_personadual.apps.build_toy"
    )
    assert not (tmp_path / "mt.parquet").exists()
