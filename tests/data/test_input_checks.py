"""Training inputs are checked by the command that receives them, before verl or Ray starts and in ``--dry-run``
(issue 22, items 2 and 3): RL / SFT parquet columns, types and rows, empty personas, and the checkpoint's mode
tokens (``recipes sft|rl``, ``eval run``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import build_tiny_model

from verl_personadual.apps.eval_cli import main as eval_main
from verl_personadual.apps.recipes import cli as R
from verl_personadual.data.preflight import (
    PreflightError,
    check_rl_parquet,
    check_sft_parquet,
)

AGENTS = ["personadual_forced", "personadual_free", "single_turn_agent"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, list[dict]]:
    """The first rows of the toy task's RL and SFT training files."""
    from verl_personadual.data import toy as toy_data

    d = tmp_path_factory.mktemp("toy_inputs")
    toy_data.build(d)
    return {k: pq.read_table(d / k / "train.parquet").slice(0, 40).to_pylist() for k in ("rl", "sft")}


def _write(path: Path, rows: list[dict], drop: str | None = None) -> str:
    table = pa.Table.from_pylist(rows)
    if drop is not None:
        table = table.drop([drop])
    pq.write_table(table, path)
    return str(path)


def _error(fn, *args) -> str:
    with pytest.raises(PreflightError) as err:
        fn(*args)
    return str(err.value)


def test_rl_parquet_columns_and_rows(toy, tmp_path):
    rows = toy["rl"]
    good = _write(tmp_path / "good.parquet", rows)
    assert check_rl_parquet(good, "--train-files", "prompt", AGENTS) == 40
    f = _write(tmp_path / "np.parquet", rows, drop="prompt")
    assert _error(check_rl_parquet, f, "--train-files", "prompt", AGENTS) == (
        f"--train-files {f}: no column 'prompt' (columns: data_source, reward_model, extra_info, agent_name); an RL "
        "parquet is written by verl_personadual.apps.build_rl or verl_personadual.apps.build_toy"
    )
    f = _write(tmp_path / "nr.parquet", rows, drop="reward_model")
    assert _error(check_rl_parquet, f, "--val-files", "prompt", AGENTS) == (
        f"--val-files {f}: no column 'reward_model' (columns: data_source, prompt, extra_info, agent_name); an RL "
        "parquet is written by verl_personadual.apps.build_rl or verl_personadual.apps.build_toy"
    )

    aligned = next(i for i, r in enumerate(rows) if r["extra_info"]["persona_setting"] == "aligned")
    bad = [dict(r) for r in rows]
    bad[aligned] = {**bad[aligned], "extra_info": {**bad[aligned]["extra_info"], "persona": " "}}
    f = _write(tmp_path / "ep.parquet", bad)
    assert _error(check_rl_parquet, f, "--train-files", "prompt", AGENTS) == (
        f"--train-files {f}, row {aligned}: extra_info.persona is ' ' but persona_setting 'aligned' needs a persona"
    )

    bad = [dict(r) for r in rows]
    bad[5] = {**bad[5], "agent_name": "personadual_forcd"}
    f = _write(tmp_path / "ag.parquet", bad)
    assert _error(check_rl_parquet, f, "--train-files", "prompt", AGENTS) == (
        f"--train-files {f}, row 5: agent_name 'personadual_forcd' is not an agent loop verl knows "
        "(personadual_forced, personadual_free, single_turn_agent)"
    )

    bad = [dict(r) for r in rows]
    bad[2] = {**bad[2], "data_source": "nope", "extra_info": {**bad[2]["extra_info"], "task_family": None}}
    f = _write(tmp_path / "ds.parquet", bad)
    assert _error(check_rl_parquet, f, "--train-files", "prompt", AGENTS).startswith(
        f"--train-files {f}, row 2: data_source='nope' is not one of ["
    )

    bad = [dict(r) for r in rows]
    bad[1] = {**bad[1], "prompt": []}
    f = _write(tmp_path / "pe.parquet", bad)
    assert (
        _error(check_rl_parquet, f, "--train-files", "prompt", AGENTS) == f"--train-files {f}, row 1: prompt is empty"
    )


def test_sft_parquet_columns_and_rows(toy, tmp_path):
    rows = toy["sft"]
    assert check_sft_parquet(_write(tmp_path / "good.parquet", rows), "--train-files") == 40
    f = _write(tmp_path / "nm.parquet", rows, drop="messages")
    assert _error(check_sft_parquet, f, "--train-files") == (
        f"--train-files {f}: no column 'messages' (columns: data_source, extra_info); an SFT parquet is written by "
        "verl_personadual.apps.build_sft or verl_personadual.apps.build_toy"
    )
    bad = [dict(r) for r in rows]
    bad[3] = {**bad[3], "messages": bad[3]["messages"][:1]}
    f = _write(tmp_path / "na.parquet", bad)
    assert _error(check_sft_parquet, f, "--train-files") == (
        f"--train-files {f}, row 3: messages has no assistant message to train on"
    )


def _dry(stage: str, model: Path, train: str, val: str | None, *extra: str) -> list[str]:
    argv = [stage, "--backbone", "cpu_toy", "--model", str(model), "--train-files", train]
    return argv + (["--val-files", val] if val else []) + ["--dry-run", *extra]


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_recipes_dry_run_checks_data_and_mode_tokens(toy, tmp_path, tiny_model_dir, text_tokenizer_dir, capsys):
    rl = _write(tmp_path / "rl.parquet", toy["rl"])
    sft = _write(tmp_path / "sft.parquet", toy["sft"])
    no_prompt = _write(tmp_path / "np.parquet", toy["rl"], drop="prompt")
    no_messages = _write(tmp_path / "nm.parquet", toy["sft"], drop="messages")
    assert R.main(_dry("rl", tiny_model_dir, no_prompt, rl)) == 2
    assert _last_error(capsys).endswith(
        f"error: --train-files {no_prompt}: no column 'prompt' (columns: data_source, "
        "reward_model, extra_info, agent_name); an RL parquet is written by "
        "verl_personadual.apps.build_rl or verl_personadual.apps.build_toy"
    )
    assert R.main(_dry("sft", tiny_model_dir, no_messages, None)) == 2
    assert _last_error(capsys).endswith(
        f"error: --train-files {no_messages}: no column 'messages' (columns: "
        "data_source, extra_info); an SFT parquet is written by "
        "verl_personadual.apps.build_sft or verl_personadual.apps.build_toy"
    )

    text_model = build_tiny_model(tmp_path / "text_model", text_tokenizer_dir)
    assert R.main(_dry("rl", text_model, rl, rl)) == 2
    line = _last_error(capsys)
    assert (
        f"error: --model {text_model}: the mode prefixes are not dedicated tokens ([General_mode] encodes as 5 tokens, "
        "[Personalized_mode] encodes as 5 tokens); " in line
    )
    assert line.endswith(
        "add them with `python -m verl_personadual.apps.add_mode_tokens`, or use plain-text prefixes "
        "(algorithm.dual_grpo.require_mode_tokens=false)"
    )
    assert R.main(_dry("rl", text_model, rl, rl, "--", "algorithm.dual_grpo.require_mode_tokens=false")) == 0
    capsys.readouterr()
    assert R.main(_dry("sft", text_model, sft, None)) == 2
    assert _last_error(capsys).endswith(
        "add them with `python -m verl_personadual.apps.add_mode_tokens`, or train on plain-text prefixes with "
        "--text-prefixes "
        "(the RL stage then needs algorithm.dual_grpo.require_mode_tokens=false)"
    )
    # the suite's tokenizers (not trained on the toy's words) make the toy rows longer than cpu_toy's
    # data.max_length (128): the dry run checks that too, as the launch does
    assert R.main(_dry("sft", text_model, sft, None, "--text-prefixes")) == 2
    assert "SFT rows longer than data.max_length=128 tokens" in _last_error(capsys)
    assert R.main(_dry("sft", text_model, sft, None, "--text-prefixes", "--", "data.max_length=256")) == 0
    capsys.readouterr()
    assert R.main(_dry("sft", tiny_model_dir, sft, None, "--", "data.max_length=256")) == 0


def test_eval_run_refuses_a_model_without_mode_tokens_unless_a_baseline(tmp_path, text_tokenizer_dir, capsys, caplog):
    text_model = build_tiny_model(tmp_path / "text_model", text_tokenizer_dir)
    capsys.readouterr()
    base = [
        "run",
        "--model",
        str(text_model),
        "--samples",
        "--benchmarks",
        "mmlu_pro",
        "--settings",
        "none",
        "--limit",
        "1",
        "--max-new-tokens",
        "8",
        "--no-progress",
        "--backend",
        "hf",
        "--device",
        "cpu",
    ]
    out = tmp_path / "dual"
    assert eval_main([*base, "--out", str(out)]) == 2
    line = (capsys.readouterr().err + caplog.text).strip().splitlines()[-1]  # stderr, or the log line
    assert f"--model {text_model}: the mode prefixes are not dedicated tokens (" in line
    assert "algorithm.dual_grpo.require_mode_tokens=false" in line and "verl_personadual.apps.add_mode_tokens" in line
    assert not (out / "predictions.jsonl").exists()
    assert eval_main([*base, "--out", str(tmp_path / "base"), "--system", "base"]) == 0
    assert eval_main([*base, "--out", str(tmp_path / "text"), "--text-prefixes"]) == 0
