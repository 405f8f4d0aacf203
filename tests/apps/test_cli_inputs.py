"""Numbers and values that mean nothing are refused before any work, by every command, as one ``error:`` line and
exit status 2 (the bad-input sweep of issue 33): counts >= 1, seeds >= 0, ratios in [0, 1], sizes against what
the source can give, devices this host has, dtypes torch has, eval-set values at load with file and line.

Each case calls the command's ``main`` as ``python -m`` does and checks the exit status, that stderr is exactly one
line, what it names, and that nothing was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from verl_personadual.apps import build_multiturn, build_rl, build_sft, build_toy, cost, eval_cli, tiny_model
from verl_personadual.apps.recipes import cli as recipes
from verl_personadual.utils.llm import ENV_BASE_URL, ENV_MODEL

Main = Callable[[list[str]], int]


def _eval(*extra: str) -> tuple[Main, Callable[[Path, Path], list[str]]]:
    return eval_cli.main, lambda tmp, model: ["run", "--model", str(model), "--out", str(tmp / "out"), *extra]


def _cmd(main: Main, *extra: str) -> tuple[Main, Callable[[Path, Path], list[str]]]:
    return main, lambda tmp, model: ["--out", str(tmp / "out"), *extra]


# name -> (main, argv of (tmp dir, model dir), the error line without "error: " and the "(see ... --help)" tail)
CASES: dict[str, tuple[Main, Callable[[Path, Path], list[str]], str]] = {
    "eval run --batch-size -3": (*_eval("--batch-size", "-3"), "--batch-size: must be an integer >= 1, got '-3'"),
    "eval run --batch-size 0": (*_eval("--batch-size", "0"), "--batch-size: must be an integer >= 1, got '0'"),
    "eval run --limit 0": (*_eval("--limit", "0"), "--limit: must be an integer >= 1, got '0'"),
    "eval run --max-new-tokens 0": (
        *_eval("--max-new-tokens", "0"),
        "--max-new-tokens: must be an integer >= 1, got '0'",
    ),
    "eval run --top-p 0": (*_eval("--top-p", "0"), "--top-p: must be a number in (0, 1], got '0'"),
    "eval run --temperature -1": (*_eval("--temperature", "-1"), "--temperature: must be a number >= 0, got '-1'"),
    "eval run --temperature nan": (*_eval("--temperature", "nan"), "--temperature: must be a number >= 0, got 'nan'"),
    "eval run --seeds 0 -1": (*_eval("--seeds", "0", "-1"), "--seeds: must be an integer >= 0, got '-1'"),
    "eval run --dtype float99": (
        *_eval("--dtype", "float99"),
        "--dtype: 'float99' is not auto or a torch floating-point dtype (bfloat16, float16, float32)",
    ),
    "eval run --dtype int8": (
        *_eval("--dtype", "int8"),
        "--dtype: 'int8' is not auto or a torch floating-point dtype (bfloat16, float16, float32)",
    ),
    "eval run --device gpu": (
        *_eval("--device", "gpu"),
        "--device: 'gpu' is not a torch device (cpu, cuda, cuda:N, mps)",
    ),
    "build_rl --llm-concurrency 0": (
        *_cmd(build_rl.main, "--llm-concurrency", "0"),
        "--llm-concurrency: must be an integer >= 1, got '0'",
    ),
    "eval fpps-fit --calib-fraction 1": (
        eval_cli.main,
        lambda tmp, model: (
            # the bad option before --eval-set: argparse checks options in order and the eval set does not exist
            ["fpps-fit", "--calib-fraction", "1", "--model", str(model), "--out", str(tmp / "o")]
            + ["--eval-set", str(tmp / "e.jsonl")]
        ),
        "--calib-fraction: must be a number in (0, 1), got '1'",
    ),
    "eval run --sizes triviaqa=0": (
        *_eval("--sizes", "triviaqa=0"),
        "bad size 'triviaqa=0': expected <benchmark>=<int >= 1> with a benchmark in ['mmlu_pro', 'supergpqa', "
        "'triviaqa', 'pubmedqa', 'math500', 'personafeedback', 'fspo_roleplay']",
    ),
    "eval fpps-fit --taus inf": (
        eval_cli.main,
        lambda tmp, model: (
            # the bad option before --eval-set: argparse checks options in order and the eval set does not exist
            ["fpps-fit", "--taus", "0.5", "inf", "--model", str(model), "--out", str(tmp / "o")]
            + ["--eval-set", str(tmp / "e.jsonl")]
        ),
        "--taus: must be a finite number, got 'inf'",
    ),
    "eval lexical --top 0": (
        eval_cli.main,
        lambda tmp, model: ["lexical", "--run", f"a={tmp}", "--out", str(tmp / "out"), "--top", "0"],
        "--top: must be an integer >= 1, got '0'",
    ),
    "build_rl --multi-turn-ratio -0.5": (
        *_cmd(build_rl.main, "--samples", "--multi-turn-ratio", "-0.5"),
        "--multi-turn-ratio: must be a number in [0, 1], got '-0.5'",
    ),
    "build_rl --seed -1": (
        *_cmd(build_rl.main, "--samples", "--seed", "-1"),
        "--seed: must be an integer >= 0, got '-1'",
    ),
    "build_sft --max-length 0": (
        *_cmd(build_sft.main, "--samples", "--max-length", "0"),
        "--max-length: must be an integer >= 1, got '0'",
    ),
    "build_sft --max-tokens -5": (
        *_cmd(build_sft.main, "--samples", "--max-tokens", "-5"),
        "--max-tokens: must be an integer >= 1, got '-5'",
    ),
    "build_sft --tokenizer /nonexistent": (
        *_cmd(build_sft.main, "--samples", "--tokenizer", "/nonexistent", "--max-length", "64"),
        "--tokenizer: /nonexistent: no such directory",
    ),
    "build_toy --sft-items -1": (
        *_cmd(build_toy.main, "--sft-items", "-1"),
        "--sft-items: must be an integer >= 1, got '-1'",
    ),
    "build_toy --rl-items 0": (
        *_cmd(build_toy.main, "--rl-items", "0"),
        "--rl-items: must be an integer >= 1, got '0'",
    ),
    # 15 % of 10,000,000 eval items are of kind none (1,500,000 + the 15 % of the default other splits: 240 + 153 +
    # 9); the generator has 4 domains x 16 things x 8 qualities x 2 book verdicts = 1,024 persona-free items
    "build_toy --eval-items 10000000": (
        *_cmd(build_toy.main, "--eval-items", "10000000"),
        "the sizes (sft 1600, rl 1024, rl_val 64, eval 10000000 items) ask for 1500402 distinct 'none' items; the "
        "occupations toy generator has 1024: ask for fewer items",
    ),
    "build_multiturn --ratio 1.5": (
        build_multiturn.main,
        lambda tmp, model: ["--in", str(tmp / "rl.parquet"), "--out", str(tmp / "out.parquet"), "--ratio", "1.5"],
        "--ratio: must be a number in [0, 1], got '1.5'",
    ),
    "tiny_model --hidden 0": (*_cmd(tiny_model.main, "--hidden", "0"), "--hidden: must be an integer >= 1, got '0'"),
    "tiny_model --layers -1": (*_cmd(tiny_model.main, "--layers", "-1"), "--layers: must be an integer >= 1, got '-1'"),
    "cost --train-rows 0": (
        cost.main,
        lambda tmp, model: ["--backbone", "qwen3_8b", "--train-rows", "0"],
        "--train-rows: must be an integer >= 1, got '0'",
    ),
    "cost --nnodes 0": (
        cost.main,
        lambda tmp, model: ["--backbone", "qwen3_8b", "--nnodes", "0"],
        "--nnodes: must be an integer >= 1, got '0'",
    ),
    "cost --mfu 0": (
        cost.main,
        lambda tmp, model: ["--backbone", "qwen3_8b", "--mfu", "0"],
        "--mfu: must be a number in (0, 1], got '0'",
    ),
    "recipes sft --nnodes 0": (
        recipes.main,
        lambda tmp, model: [
            "sft",
            "--backbone",
            "cpu_toy",
            "--model",
            str(model),
            "--train-files",
            "x",
            "--nnodes",
            "0",
        ],
        "--nnodes: must be an integer >= 1, got '0'",
    ),
    "build_toy without --out": (
        build_toy.main,
        lambda tmp, model: ["--seed", "1"],
        "the following arguments are required: --out",
    ),
}


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL):
        monkeypatch.delenv(var, raising=False)


def _refused(main: Main, argv: list[str], capsys) -> str:
    """Run ``main(argv)``; assert exit status 2 and one stderr line ``error: ...``; return the message."""
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert (status, len(lines)) == (2, 1), captured.err[-3000:]
    assert lines[0].startswith("error: ") and "error" not in captured.out
    return lines[0][len("error: ") :]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_value_is_refused_before_any_work(name, tmp_path, tiny_model_dir, capsys):
    main, argv, says = CASES[name]
    message = _refused(main, argv(tmp_path, tiny_model_dir), capsys)
    assert message.split(" (see python -m ")[0] == says
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="a host without a CUDA device")
def test_cuda_device_on_a_cpu_host_is_refused(tmp_path, tiny_model_dir, capsys):
    main, argv = _eval("--device", "cuda")
    message = _refused(main, argv(tmp_path, tiny_model_dir), capsys)
    assert message.startswith("--device: 'cuda': this host has 0 CUDA device(s) visible to torch; use --device cpu")
    assert list(tmp_path.iterdir()) == []


def _eval_row(**changes) -> dict:
    row = {
        "row_id": "q1|none",
        "item_id": "q1",
        "benchmark": "triviaqa",
        "task": "triviaqa",
        "family": "open_qa",
        "setting": "none",
        "question": "Which planet is the largest?",
        "gold": '["Jupiter"]',
        "choices": [],
        "persona": None,
        "persona_id": None,
    }
    return row | changes


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"choices": "abc"}, "field 'choices': expected a list of str, got 'abc'"),
        ({"choices": ["A", 1]}, "field 'choices': expected a list of str, got ['A', 1]"),
        ({"persona_id": 7}, "field 'persona_id': expected str or null, got 7"),
    ],
)
def test_eval_set_values_are_checked_at_load_with_file_and_line(change, says, tmp_path, tiny_model_dir, capsys):
    eval_set = tmp_path / "set.jsonl"
    rows = [_eval_row(), _eval_row(row_id="q2|none", item_id="q2", **change)]
    eval_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["run", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--eval-set", str(eval_set)]
    message = _refused(eval_cli.main, [*argv, "--backend", "hf", "--device", "cpu", "--benchmarks", "triviaqa"], capsys)
    assert message == f"{eval_set}, line 2, {says}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]  # no run folder
