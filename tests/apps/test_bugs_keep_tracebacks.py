"""A bug is not a user error (verl_personadual.utils.errors): a ValueError planted deep inside a command, where bad
input never raises one, leaves ``main`` as the ValueError itself (Python prints its traceback, exit status 1), not
as one ``error:`` line with exit status 2; the same command's real bad input still is that one line.

One command of each family that used to turn every ValueError of the whole command into a user error: the data
builders (build_rl, build_sft, build_toy, build_multiturn), the recipes, ``eval`` (generation included), and the
checkpoint tools (add_mode_tokens, tiny_model). Each runs in-process on the tiny model and the toy task.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from verl_personadual.apps import add_mode_tokens, build_multiturn, build_rl, build_sft, build_toy, eval_cli, tiny_model
from verl_personadual.apps.recipes import cli as recipes_cli
from verl_personadual.data import toy
from verl_personadual.eval.generate import HFGenerator
from verl_personadual.utils.llm import ENV_BASE_URL, ENV_MODEL

PLANTED = "planted bug: not a user error"
SMALL_TOY = ["--sft-items", "4", "--rl-items", "12", "--rl-val-items", "4", "--eval-items", "4"]


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL):
        monkeypatch.delenv(var, raising=False)


def planted(*args, **kwargs):
    raise ValueError(PLANTED)


def assert_bug_propagates(main, argv: list[str], capsys) -> None:
    with pytest.raises(ValueError, match=PLANTED) as caught:
        main(argv)
    assert type(caught.value) is ValueError  # raised as it was, not turned into a UserError
    assert "error:" not in capsys.readouterr().err


def assert_one_error_line(main, argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bugs_toy") / "toy"
    toy.build(out, toy.ToySizes(sft=4, rl=12, rl_val=4, eval=4), seed=0)
    return out


def test_data_builders(monkeypatch, tmp_path, toy_dir, capsys):
    bad = assert_one_error_line(
        build_rl.main,
        ["--samples", "--ultramedical", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r")],
        capsys,
    )
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in bad
    bad = assert_one_error_line(
        build_toy.main, ["--out", str(tmp_path / "t"), *SMALL_TOY, "--personalized-share", "half"], capsys
    )
    assert bad == "error: --personalized-share: 'half' is not a number"
    bad = assert_one_error_line(
        build_multiturn.main,
        [
            "--in",
            str(toy_dir / "rl" / "train.parquet"),
            "--out",
            str(tmp_path / "m.parquet"),
            "--ratio",
            "1",
            "--personalized",
            "task=nothing",
        ],
        capsys,
    )
    assert "needs a first turn from the other family" in bad

    (tmp_path / "not_rl").mkdir()
    (tmp_path / "not_rl" / "train.parquet").write_text("x")
    argv = ["--samples", "--exclude-rl", str(tmp_path / "not_rl"), "--out", str(tmp_path / "s"), "--no-progress"]
    bad = assert_one_error_line(build_sft.main, argv, capsys)
    assert bad.startswith(f"error: --exclude-rl {tmp_path / 'not_rl'}: {tmp_path / 'not_rl' / 'train.parquet'} is not")

    monkeypatch.setattr("verl_personadual.data.rl_rows.build_prompt", planted)
    assert_bug_propagates(build_rl.main, ["--samples", "--out", str(tmp_path / "rl"), "--no-progress"], capsys)
    monkeypatch.setattr("verl_personadual.data.sft_rows.sft_row", planted)
    assert_bug_propagates(build_sft.main, ["--samples", "--out", str(tmp_path / "sft"), "--no-progress"], capsys)
    monkeypatch.setattr("verl_personadual.data.toy.rl_row", planted)
    assert_bug_propagates(build_toy.main, ["--out", str(tmp_path / "toy"), *SMALL_TOY], capsys)
    monkeypatch.setattr("verl_personadual.data.multiturn.finished_turn", planted)
    argv = ["--in", str(toy_dir / "rl" / "train.parquet"), "--out", str(tmp_path / "mt.parquet"), "--ratio", "0.5"]
    assert_bug_propagates(build_multiturn.main, [*argv, "--personalized", "task=helpful"], capsys)


def test_recipes(monkeypatch, tmp_path, toy_dir, tiny_model_dir, capsys):
    rows = pd.read_parquet(toy_dir / "rl" / "train.parquet")
    rows["messages"] = [[*p, {"role": "assistant", "content": "ok"}] for p in rows["prompt"]]
    rows.to_parquet(tmp_path / "train.parquet")
    argv = ["sft", "--backbone", "cpu_tiny", "--model", str(tiny_model_dir), "--train-files"]
    argv += [str(tmp_path / "train.parquet"), "--dry-run"]
    bad = assert_one_error_line(recipes_cli.main, [*argv, "--", "trainer.total_epochs=0"], capsys)
    assert bad == "error: trainer.total_epochs must be an integer >= 1, got 0"
    monkeypatch.setattr("verl_personadual.apps.recipes.validate.check_step_counts", planted)
    assert_bug_propagates(recipes_cli.main, argv, capsys)


def test_eval(monkeypatch, tmp_path, tiny_model_dir, capsys):
    argv = ["run", "--model", str(tiny_model_dir), "--samples", "--backend", "hf", "--device", "cpu"]
    argv += ["--benchmarks", "triviaqa", "--decoding", "general"]
    bad = assert_one_error_line(eval_cli.main, [*argv, "--out", str(tmp_path / "judge"), "--judge"], capsys)
    assert bad.startswith("error: --judge needs an LLM endpoint")
    bad = assert_one_error_line(eval_cli.main, ["train-router", str(tmp_path / "nope"), "--out", "r.json"], capsys)
    assert bad == f"error: {tmp_path / 'nope' / 'eval_set.jsonl'}: No such file or directory"
    bad = assert_one_error_line(
        eval_cli.main, [*argv, "--eval-set", str(tmp_path / "nope.jsonl"), "--out", "o"], capsys
    )
    assert bad.startswith(f"error: --eval-set: {tmp_path / 'nope.jsonl'}: no such file")
    monkeypatch.setattr(HFGenerator, "generate", planted)
    assert_bug_propagates(eval_cli.main, [*argv, "--out", str(tmp_path / "run")], capsys)


def test_checkpoint_tools(monkeypatch, tmp_path, tiny_model_dir, capsys):
    bad = assert_one_error_line(add_mode_tokens.main, [str(tmp_path / "nope"), str(tmp_path / "a")], capsys)
    assert bad == f"error: BASE_DIR {tmp_path / 'nope'}: no such directory"
    monkeypatch.setattr("verl_personadual.apps.add_mode_tokens.add_mode_tokens", planted)
    assert_bug_propagates(add_mode_tokens.main, [str(tiny_model_dir), str(tmp_path / "with_tokens")], capsys)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    bad = assert_one_error_line(tiny_model.main, ["--out", str(tmp_path / "mine")], capsys)
    assert "holds files that are not an output of this project's commands" in bad
    monkeypatch.setattr("verl_personadual.apps.tiny_model.build_model", planted)
    assert_bug_propagates(tiny_model.main, ["--out", str(tmp_path / "tiny")], capsys)
