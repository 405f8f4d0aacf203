"""The evaluation CLI on a newcomer's path: --samples offline (recorded personas, a CPU-sized response cap, a
progress bar that moves within a batch), wrong input stopped in one line before anything is written, `compare`
refusing missing or unfinished runs, and tables and plots that say their units and show only what ran."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verl_personadual.apps.eval_cli import SAMPLES_MAX_NEW_TOKENS, main
from verl_personadual.data import samples as sample_replies
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval import report
from verl_personadual.eval.generate import DecodingParams, HFGenerator
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils.llm import ENV_BASE_URL, ENV_MODEL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL):
        monkeypatch.delenv(var, raising=False)


def errors(capsys) -> list[str]:
    """The messages of the `error: ` lines on stderr so far (the CLI convention: one per failed command)."""
    return [line[len("error: ") :] for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def common(model: Path) -> list[str]:
    return ["--model", str(model), "--samples", "--backend", "hf", "--device", "cpu"]


def test_samples_run_needs_no_endpoint(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                *common(tiny_model_dir),
                "--out",
                str(out),
                "--benchmarks",
                "triviaqa",
                "math500",
                "--decoding",
                "general",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "eval_set.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 2 * 3  # 4 items x 2 benchmarks x (none, unaligned, aligned)
    aligned = {(r["benchmark"], r["persona"]) for r in rows if r["setting"] == "aligned"}
    assert aligned == {
        ("triviaqa", sample_replies.eval_personas()["triviaqa"]),
        ("math500", sample_replies.eval_personas()["math500"]),
    }
    manifest = json.loads((out / "eval_manifest.json").read_text())
    assert manifest["persona_llm"]["model"] == sample_replies.REPLAY_MODEL
    assert (manifest["persona_llm"]["requests"], manifest["persona_llm"]["cache_hits"]) == (0, 8)
    assert (
        json.loads((out / "run_config.json").read_text())["decoding"]["max_new_tokens"] == SAMPLES_MAX_NEW_TOKENS == 32
    )
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == 24 and max(p["response_tokens"] for p in preds) <= 32
    # the bar shows responses done and elapsed < remaining (an ETA) once the first decoding step is done
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "generate+score: 100%" in err and "24/24 resp [" in err and "<?]" not in err.split("generate+score: 100%")[1]


def test_samples_judge_and_unrecorded_requests_fail_in_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *common(tiny_model_dir), "--out", str(out), "--judge"]) == 2
    assert errors(capsys) == [
        "--judge needs an LLM endpoint: set PERSONADUAL_LLM_BASE_URL and PERSONADUAL_LLM_MODEL (or --llm-base-url / "
        "--llm-model); the recorded sample replies cover aligned personas only"
    ]
    assert not out.exists()
    own = tmp_path / "mmlu_pro.jsonl"  # the sample rows with other questions: not recorded
    own.write_text(
        "".join(
            json.dumps({**json.loads(line), "question": f"Other question {i}?"}) + "\n"
            for i, line in enumerate(eval_sample_paths()["mmlu_pro"].read_text().splitlines())
        )
    )
    assert (
        main(
            ["run", *common(tiny_model_dir), "--out", str(out), "--benchmarks", "mmlu_pro", "--data", f"mmlu_pro={own}"]
        )
        == 2
    )
    assert errors(capsys) == [
        f"aligned personas: 4 of 4 requests have no recorded reply in {sample_replies.CACHE_DIR} (model "
        f"'{sample_replies.REPLAY_MODEL}', offline replay: nothing was sent); {sample_replies.MISS_HINT}"
    ]
    assert not out.exists()  # failed before writing anything: no empty --out left behind


def test_model_typo_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    typo = tmp_path / "modles" / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "verl_personadual.eval", "run", "--model", str(typo), "--out", str(out), "--samples"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"error: --model {typo}: no such directory\n"
    assert not out.exists()


def short_run(model: Path, out: Path) -> None:
    assert (
        main(
            [
                "run",
                *common(model),
                "--out",
                str(out),
                "--benchmarks",
                "mmlu_pro",
                "--settings",
                "none",
                "--decoding",
                "general",
                "--max-new-tokens",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )


def test_compare_refuses_missing_and_unfinished_runs(tiny_model_dir, tmp_path, capsys):
    good = tmp_path / "good"
    short_run(tiny_model_dir, good)
    cmp_dir = tmp_path / "cmp"

    def refused(*runs: str) -> list[str]:
        capsys.readouterr()
        assert main(["compare", *[x for r in runs for x in ("--run", r)], "--out", str(cmp_dir)]) == 2
        assert not cmp_dir.exists()
        return errors(capsys)

    assert refused("pd=/nonexistent/run", f"base={good}") == ["run 'pd' (/nonexistent/run): no such directory"]
    (tmp_path / "empty").mkdir()
    assert refused(f"e={tmp_path / 'empty'}") == [
        f"run 'e' ({tmp_path / 'empty'}): no eval_set.jsonl (not an `eval run` output directory, or never started)"
    ]
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    lines = (cut / "predictions.jsonl").read_text().splitlines(keepends=True)
    (cut / "predictions.jsonl").write_text("".join(lines[:3]))
    assert refused(f"base={good}", f"cut={cut}") == [
        f"run 'cut' ({cut}): unfinished, decoding 'general' has 3 of 4 rows; finish it with its `eval run` command"
    ]
    (cut / "predictions.jsonl").write_text("")
    assert refused(f"cut={cut}") == [f"run 'cut' ({cut}): no predictions yet; finish it with its `eval run` command"]
    assert main(["compare", "--run", f"a={good}", "--run", f"a={good}", "--out", str(cmp_dir)]) == 2
    assert errors(capsys) == [f"bad --run 'a={good}': label 'a' given twice"]

    assert main(["compare", "--run", f"a={good}", "--run", f"b={good}", "--out", str(cmp_dir)]) == 0
    with open(cmp_dir / "table1.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["system"] for r in table] == ["a:general", "b:general"]
    assert list(table[0]) == ["system", "mmlu_pro/none_%", "objective/none_%"]


def test_hf_generator_calls_its_step_callback_once_per_decoding_step(tiny_model_dir):
    gen = HFGenerator(str(tiny_model_dir), DecodingParams(max_new_tokens=6))
    steps = []
    gen.step_callback = lambda: steps.append(1)
    prompts = [gen.tokenizer.encode(t, add_special_tokens=False) for t in ("Is it", "A question", "x")]
    outs = gen.generate(prompts, [6, 6, 6], [0, 1, 2])
    # a row that stopped at EOS took len + 1 steps (the EOS is not returned); generation stops when all stopped
    assert len(steps) == max(len(o) + 1 if len(o) < 6 else 6 for o in outs)


def records(rows: list[tuple[str, str, str, str, float]]) -> list[dict]:
    return [
        {"row_id": rid, "benchmark": b, "setting": s, "decoding": d, "correct": c, "mode": "unknown"}
        for rid, b, s, d, c in rows
    ]


def test_all_wrong_run_tables_have_units_and_plots_fixed_axes_and_only_what_ran():
    """A run of `--settings none unaligned` where every answer is wrong: axes stay 0-100 %, the legend has no
    'aligned' (personalized benchmarks' rows are labelled 'own persona')."""
    recs = records(
        [
            (f"m{i}|{s}", "mmlu_pro", s, d, 0.0)
            for i in range(2)
            for s in ("none", "unaligned")
            for d in ("free", "general", "personalized")
        ]
        + [
            (f"p{i}|aligned", "personafeedback", "aligned", d, 0.0)
            for i in range(2)
            for d in ("free", "general", "personalized")
        ]
    )
    cells = report.accuracy_cells(recs)
    header, lines = report.table1({"": cells})
    assert header == [
        "system",
        "mmlu_pro/unaligned_%",
        "objective/unaligned_%",
        "personafeedback_%",
        "personalized_%",
        "mmlu_pro/none_%",
        "objective/none_%",
    ]
    assert lines[0] == ["free", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert report.mode_analysis(cells)[0] == [
        "benchmark",
        "setting",
        "items",
        "general_%",
        "personalized_%",
        "free_%",
        "upper_bound_%",
    ]
    mixed = report.mixed_ratio(recs)
    assert mixed[0] == ["personalized_ratio", "free_%", "general_%", "personalized_%"]

    fig = report.accuracy_figure(cells)
    assert [ax.get_ylim() for ax in fig.axes] == [(0.0, 100.0)] * 4  # free, general, personalized, upper_bound
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["none", "unaligned", "own persona"]
    fig = report.mixed_ratio_figure(mixed)
    assert fig.axes[0].get_ylim() == (0.0, 100.0) and fig.axes[0].get_xlim() == (0.0, 1.0)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["free", "general", "personalized"]
    fig = report.mode_rates_figure(report.mode_rates(recs))
    assert fig.axes[0].get_xlim() == (0.0, 100.0)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["unknown"]


def test_toy_benchmark_needs_an_eval_set(tiny_model_dir, tmp_path, capsys):
    from verl_personadual.apps.eval_cli import main as eval_main

    assert (
        eval_main(["run", "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"), "--benchmarks", "toy"]) == 2
    )
    assert "--benchmarks toy needs --eval-set" in capsys.readouterr().err


def test_every_subcommand_has_a_description_and_every_flag_help():
    """`--help` of each eval subcommand explains the command and every argument (read from argparse's actions)."""
    import argparse

    from verl_personadual.apps.eval_cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == [
        "calibration-set",
        "compare",
        "fpps-fit",
        "lexical",
        "mixed",
        "mode-probs",
        "multiturn",
        "report",
        "run",
        "train-router",
    ]
    for name, command in sub.choices.items():
        assert command.description and len(command.description.split()) >= 10, name
        for action in command._actions:
            assert action.help and action.help.strip(), (name, action.option_strings or action.dest)


def test_an_empty_persona_names_its_file_and_row_and_blocks_no_rerun(tiny_model_dir, tmp_path, capsys):
    """An eval set whose aligned row has an empty persona (blanks only) stops before anything is
    written, naming the file, line and row; the corrected file then runs in the same --out."""
    from verl_personadual.data import toy

    toy.build(tmp_path / "toy")
    aligned = [
        json.loads(line)
        for line in (tmp_path / "toy" / "eval_set.jsonl").read_text().splitlines()
        if json.loads(line)["setting"] == "aligned"
    ][:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(aligned[0]) + "\n" + json.dumps({**aligned[1], "persona": "  "}) + "\n")
    out = tmp_path / "run"
    argv = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--benchmarks",
        "toy",
        "--settings",
        "aligned",
        "--decoding",
        "general",
        "--max-new-tokens",
        "2",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*argv, "--eval-set", str(bad)]) == 2
    assert errors(capsys) == [
        f"{bad}, line 2 (row_id {aligned[1]['row_id']!r}), field 'persona': setting 'aligned' "
        "needs a non-empty persona text"
    ]
    assert not out.exists()
    bad.write_text("".join(json.dumps(r) + "\n" for r in aligned))
    assert main([*argv, "--eval-set", str(bad)]) == 0
    assert len(read_predictions(out / "predictions.jsonl")) == 2
