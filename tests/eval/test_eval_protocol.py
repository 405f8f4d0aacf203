"""The paper's evaluation protocol in the harness: Table 7 sizes, the extract-then-verify judge, several sampling
seeds reported as mean ± 95 % t-interval, the Table 1 layout, and the Table 1 baselines (prompt styles, systems)."""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from openai_server import OpenAITestServer

from verl_personadual.apps.eval_cli import main, run_parser, style_and_decodings
from verl_personadual.apps.recipes.compose import CONFIG_DIR
from verl_personadual.core.prompts import DataSource, PersonaSetting, answer_instruction
from verl_personadual.data.benchmarks import DEFAULT_SIZES
from verl_personadual.data.eval_sets import EvalRow, write_eval_set
from verl_personadual.eval import report
from verl_personadual.eval.baselines import PromptStyle, build_messages
from verl_personadual.eval.generate import Decoding, DecodingParams, HFGenerator
from verl_personadual.eval.intervals import Interval, format_interval, mean_interval, seeds_caption
from verl_personadual.eval.judge import ExtractVerifyJudge, JudgeVerdict, parse_verdict
from verl_personadual.eval.run import (
    SAMPLING_TEMPERATURE,
    RunConfig,
    RunError,
    grade_with_judge,
    run,
)
from verl_personadual.eval.store import PredictionStore, read_predictions
from verl_personadual.eval.systems import get_system, systems
from verl_personadual.utils.llm import LLMClient, LLMConfig

# --- Table 7 sizes, the sampling temperature -------------------------------------------------------------------


def test_default_sizes_are_the_papers_table_7():
    assert DEFAULT_SIZES == {
        "mmlu_pro": 1000,
        "supergpqa": 1000,
        "triviaqa": 1000,
        "pubmedqa": 1000,
        "math500": 500,
        "personafeedback": 1000,
        "fspo_roleplay": 1500,
    }


def test_multi_seed_runs_sample_at_the_recipes_temperature():
    rl = yaml.safe_load((CONFIG_DIR / "persona_dual_rl.yaml").read_text())
    assert SAMPLING_TEMPERATURE == rl["actor_rollout_ref"]["rollout"]["temperature"] == 0.6


# --- the extract-then-verify judge -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('The response concludes maybe.\n{"extracted": "maybe", "answer": "no"}', JudgeVerdict("maybe", False)),
        ('{"extracted": "\\\\frac{1}{2}", "answer": "yes"}', JudgeVerdict("\\frac{1}{2}", True)),
        ('```json\n{"extracted": "", "answer": "no"}\n```', JudgeVerdict("", False)),
        ('{"answer": "Yes"}', JudgeVerdict("", True)),  # no extracted key: verdict only
        ("It is probably right.", None),
        ('{"extracted": "yes", "answer": "unsure"}', None),
    ],
)
def test_parse_verdict(reply: str, verdict: JudgeVerdict | None):
    assert parse_verdict(reply) == verdict


def _judge_reply(body: dict) -> str:
    """A scripted judge: reads the response out of the prompt; 'garbage' gets a reply without a verdict."""
    content = body["messages"][-1]["content"]
    response = content.split("Response:\n", 1)[1].split("\n\nReply with", 1)[0]
    if "garbage" in response:
        return "I cannot tell."
    extracted = "yes" if "is yes" in response else "no"
    reference = content.split("Reference answer:\n", 1)[1].split("\n\n", 1)[0]
    return json.dumps({"extracted": extracted, "answer": "yes" if extracted == reference else "no"})


def test_judge_grades_free_form_answers_is_cached_and_leaves_failures_unjudged(tmp_path: Path):
    items = [
        ("Does X cause Y?", "yes", "Weighing the trials, the answer is yes, it does."),  # no JSON: rules find none
        ("Does X cause Y?", "no", "Weighing the trials, the answer is yes, it does."),
        ("Does X cause Y?", "no", "garbage"),
    ]
    with OpenAITestServer(reply=_judge_reply) as srv:
        config = LLMConfig(base_url=srv.base_url, model="judge", cache_dir=tmp_path, max_retries=0)
        judge = ExtractVerifyJudge(LLMClient(config, progress=False))
        assert judge.judge_many(items) == [JudgeVerdict("yes", True), JudgeVerdict("yes", False), None]
        assert srv.requests == 3 and {b["temperature"] for b in srv.bodies} == {0.0}
        again = ExtractVerifyJudge(LLMClient(config, progress=False))
        assert again.judge_many(items) == [JudgeVerdict("yes", True), JudgeVerdict("yes", False), None]
        assert srv.requests == 4  # the two verdicts came from the cache; the rejected reply was not cached


def test_grade_with_judge_keeps_both_verdicts():
    rule = {"correct": 0.0, "score": 0.1, "pred": ""}
    assert grade_with_judge(rule, JudgeVerdict("yes", True)) == {
        "correct": 1.0,
        "score": 0.1,
        "pred": "",
        "rule_correct": 0.0,
        "judge_correct": 1.0,
        "judge_pred": "yes",
        "grader": "judge",
    }
    assert grade_with_judge(rule, None) == {
        "correct": 0.0,
        "score": 0.1,
        "pred": "",
        "rule_correct": 0.0,
        "judge_correct": None,
        "judge_pred": None,
        "grader": "rule",
    }


# --- baselines: prompt styles and systems ----------------------------------------------------------------------


def _eval_row(benchmark: str = "pubmedqa", setting: str = "aligned", persona: str | None = "A nurse.", n: int = 0):
    family = "preference" if benchmark in ("personafeedback", "fspo_roleplay") else "yes_no_maybe"
    return EvalRow(
        f"{benchmark}:{n}|{setting}",
        f"{benchmark}:{n}",
        benchmark,
        "t",
        family,
        setting,
        "Does X cause Y?",
        "yes",
        [],
        persona,
        None if persona is None else "p",
    )


def test_baseline_prompt_formats():
    row = _eval_row()
    instruction = answer_instruction("yes_no_maybe")
    persona_turn = f"I am a nurse. My question is:\n\nDoes X cause Y?\n\n{instruction}"
    cot = build_messages(row, PromptStyle.COT)
    assert cot == [
        {
            "role": "user",
            "content": persona_turn + "\n\nThink it through step by step before you answer: "
            "work out what exactly is asked, recall the facts and rules that apply, reason from them one step "
            "at a time, and check your result.",
        }
    ]
    personal = build_messages(row, PromptStyle.PERSONAL)[0]["content"]
    assert personal.startswith(persona_turn + "\n\nPersonalize your answer: analyse what I told you about myself")
    assert build_messages(_eval_row(setting="none", persona=None), PromptStyle.PERSONAL) == [
        {"role": "user", "content": f"Does X cause Y?\n\n{instruction}"}
    ]
    # AlignX's released generation scripts (eval/gen_ica.py, eval/gen_pba.py), our question as the post.
    assert build_messages(row, PromptStyle.ALIGNXPERT_ICA) == [
        {
            "role": "system",
            "content": "Generate a task-specific response based on user historical behavior and preferences.",
        },
        {
            "role": "user",
            "content": f"***Task***\n\n**Post:**\nDoes X cause Y?\n\n{instruction}\n\n"
            "***Historical Behavior and User Preferences***\n\nA nurse.\n\n***Response:***\n\n",
        },
    ]
    assert build_messages(row, PromptStyle.ALIGNXPERT_PBA) == [
        {"role": "system", "content": "Generate a task-specific response based on user preferences."},
        {
            "role": "user",
            "content": f"***Task***\n\n**Post:**\nDoes X cause Y?\n\n{instruction}\n\n"
            "***User Preferences***\n\nA nurse.\n\n***Response:***\n\n",
        },
    ]


def test_every_table_1_row_is_a_system():
    assert [s.label for s in systems()] == [
        "Backbone",
        "CoT",
        "G-SFT-RL",
        "Personal-Prompt",
        "P-SFT-RL",
        "AlignXpert-ICA",
        "AlignXpert-PBA",
        "PersonaDual-Prompt",
        "PersonaDual-Router",
        "PersonaDual",
        "FPPS-H",
        "FPPS-S",
        "FPPS-M",
    ]
    assert get_system("g_sft_rl").decoding is Decoding.GENERAL
    assert get_system("p_sft_rl").decoding is Decoding.PERSONALIZED
    assert get_system("persona_dual_router").decoding is Decoding.ROUTER
    assert [s.name for s in systems() if s.dual_mode] == ["g_sft_rl", "p_sft_rl", "persona_dual_router", "persona_dual"]


# --- tables ----------------------------------------------------------------------------------------------------


def _fake_run(path: Path, correct: dict[tuple[str, str, str], list[float]], style: str = "persona") -> None:
    """A finished run directory: (benchmark, setting, decoding) -> correctness of items 0, 1, ..."""
    rows = {}
    for (bench, setting, _), values in correct.items():
        for n in range(len(values)):
            row = _eval_row(bench, setting, None if setting == "none" else "A nurse.", n)
            rows[row.row_id] = row
    path.mkdir(parents=True)
    write_eval_set(path / "eval_set.jsonl", list(rows.values()))
    store = PredictionStore(path / "predictions.jsonl")
    store.append(
        {"row_id": f"{b}:{n}|{s}", "benchmark": b, "setting": s, "decoding": d, "correct": c, "mode": "unknown"}
        for (b, s, d), values in correct.items()
        for n, c in enumerate(values)
    )
    (path / "run_config.json").write_text(json.dumps({"prompt_style": style}))


RUN = {
    ("pubmedqa", "unaligned", "free"): [1.0, 0.0],
    ("pubmedqa", "aligned", "free"): [1.0, 1.0],
    ("pubmedqa", "none", "free"): [0.0, 0.0],
    ("personafeedback", "aligned", "free"): [1.0, 0.0],
}


def test_table_1_markdown_is_the_papers_layout(tmp_path: Path):
    _fake_run(tmp_path / "r", RUN)
    report.write_report(tmp_path / "r")
    assert (tmp_path / "r" / "tables" / "table1.md").read_text().split("\n\n")[0] == (
        "| system | PubMedQA | Obj. avg. | P.FB. | Pers. avg. |\n"
        "|---|---|---|---|---|\n"
        "| free | 50.00 / 100.00 | 50.00 / 100.00 | 50.00 | 50.00 |\n"
        "| free (no persona) | 0.00 | 0.00 | – | – |"
    )
    assert (tmp_path / "r" / "tables" / "table1.md").read_text().split("\n\n")[1] == (
        'Accuracy (%). Objective benchmarks: unaligned / aligned persona. "(no persona)" rows: the objective '
        "benchmarks without persona (the paper's No-Persona Upperbound row). Personalized benchmarks: aligned (each "
        "user's own persona).\n"
    )
    with open(tmp_path / "r" / "tables" / "table1.csv") as f:
        assert next(csv.reader(f)) == [
            "system",
            "pubmedqa/unaligned_%",
            "pubmedqa/aligned_%",
            "objective/unaligned_%",
            "objective/aligned_%",
            "personafeedback_%",
            "personalized_%",
            "pubmedqa/none_%",
            "objective/none_%",
        ]


# Student-t 0.975 quantiles from a t table (two-sided 95 %), by degrees of freedom: reference values, not scipy's.
T975 = {1: 12.7062047362, 2: 4.30265272975}


def test_mean_interval_is_the_95_percent_student_t_interval():
    three = mean_interval([60.0, 70.0, 80.0])
    assert (three.n, three.mean, three.std) == (3, 70.0, pytest.approx(10.0))
    assert three.half_width == pytest.approx(T975[2] * 10.0 / 3**0.5)  # 24.841
    assert mean_interval([50.0, 100.0]).half_width == pytest.approx(T975[1] * 25.0)  # std 35.355 / sqrt(2) = 25
    assert mean_interval([42.0]) == Interval(1, 42.0, None, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    assert format_interval(three) == "70.00 ± 24.84" and format_interval(three, 3) == "70.000 ± 24.841"
    assert format_interval(Interval(1, 42.0, None, None)) == "42.00" and format_interval(None) == "–"
    assert seeds_caption([3, 3]) == "mean ± 95 % t-interval half-width over 3 seeds"
    assert seeds_caption([2, 3, 1]) == "mean ± 95 % t-interval half-width over 1-3 seeds"
    assert seeds_caption([1, 1]) == ""


def test_multi_seed_run_reports_mean_and_95_percent_interval(tmp_path: Path):
    seed1 = dict(RUN)
    seed1[("pubmedqa", "unaligned", "free")] = [1.0, 1.0]
    _fake_run(tmp_path / "r" / "seed_0", RUN)
    _fake_run(tmp_path / "r" / "seed_1", seed1)
    report.write_report(tmp_path / "r")
    std = 50.0 / 2**0.5  # sample std of 50 and 100: 35.355
    half = T975[1] * std / 2**0.5  # 317.66: two seeds say little
    md = (tmp_path / "r" / "tables" / "table1.md").read_text()
    assert (
        "| free | 75.00 ± 317.66 / 100.00 ± 0.00 | 75.00 ± 317.66 / 100.00 ± 0.00 | 50.00 ± 0.00 | 50.00 ± 0.00 |" in md
    )
    assert "averaged over seeds (mean ± 95 % t-interval half-width over 2 seeds)" in md
    with open(tmp_path / "r" / "tables" / "table1.csv") as f:
        reader = csv.DictReader(f)
        (row,) = list(reader)
    assert reader.fieldnames[1:4] == ["pubmedqa/unaligned_%", "pubmedqa/unaligned_%_std", "pubmedqa/unaligned_%_ci95"]
    assert float(row["pubmedqa/unaligned_%"]) == 75.0
    assert float(row["pubmedqa/unaligned_%_std"]) == pytest.approx(std, abs=1e-4)
    assert float(row["pubmedqa/unaligned_%_ci95"]) == pytest.approx(half, abs=1e-4)
    assert float(row["objective/unaligned_%_std"]) == pytest.approx(std, abs=1e-4)  # the block average's own spread
    assert float(row["pubmedqa/aligned_%_ci95"]) == 0.0
    # compare reads a multi-seed run the same way, and refuses one with an unfinished seed
    assert main(["compare", "--run", f"pd={tmp_path / 'r'}", "--out", str(tmp_path / "cmp")]) == 0
    assert "| pd:free | 75.00 ± 317.66 / 100.00 ± 0.00 |" in (tmp_path / "cmp" / "table1.md").read_text()
    (tmp_path / "r" / "seed_1" / "predictions.jsonl").write_text("")
    with pytest.raises(report.IncompleteRunError, match="seed_1: no predictions yet"):
        report.read_complete_run("pd", tmp_path / "r")


def test_compare_systems_in_the_papers_sections_and_order(tmp_path: Path, capsys):
    pd = {k: v for k, v in RUN.items()} | {
        ("pubmedqa", s, d): [0.0, 0.0] for s in ("unaligned", "aligned", "none") for d in ("general", "personalized")
    }
    pd |= {("personafeedback", "aligned", d): [1.0, 1.0] for d in ("general", "personalized")}
    _fake_run(tmp_path / "pd", pd)
    _fake_run(tmp_path / "cot", RUN, style="cot")
    _fake_run(tmp_path / "g", {(b, s, "general"): v for (b, s, _), v in RUN.items()})
    args = [
        "compare",
        "--system",
        f"persona_dual={tmp_path / 'pd'}",
        "--system",
        f"g_sft_rl={tmp_path / 'g'}",
        "--system",
        f"cot:CoT (Qwen3-8B)={tmp_path / 'cot'}",
        "--out",
        str(tmp_path / "t1"),
    ]
    assert main(args) == 0
    with open(tmp_path / "t1" / "table1.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["system"], r["section"]) for r in rows] == [
        ("CoT (Qwen3-8B)", "General purpose models"),
        ("G-SFT-RL", "General purpose models"),
        ("PersonaDual", "Dual-mode models"),
    ]
    assert [r["pubmedqa/aligned_%"] for r in rows] == ["100.0000", "100.0000", "100.0000"]
    lines = (tmp_path / "t1" / "table1.md").read_text().splitlines()
    assert lines[2].startswith("| *General purpose models* |") and lines[5].startswith("| *Dual-mode models* |")
    assert lines[6].startswith("| PersonaDual | 50.00 / 100.00 |")
    assert not (tmp_path / "t1" / "table1_toy.md").exists()  # no toy rows, no toy table

    out = tmp_path / "refused"
    for name, run_dir, message in [
        ("cot", tmp_path / "pd", "generated with prompt style 'persona', but CoT uses 'cot'"),
        ("p_sft_rl", tmp_path / "g", "no 'personalized' decoding"),
    ]:
        capsys.readouterr()
        assert main(["compare", "--system", f"{name}={run_dir}", "--out", str(out)]) == 2
        assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")] == [
            f"error: system {name!r} ({run_dir}): {message}; evaluate it with `eval run --system {name}`"
        ]
        assert not out.exists()


# --- several sampling seeds, end to end on the tiny model ------------------------------------------------------


def test_seeds_run_one_sampled_run_each_over_one_eval_set(tiny_model_dir: Path, tmp_path: Path):
    from verl_personadual.data.samples import eval_sample_paths

    cfg = RunConfig(
        model=str(tiny_model_dir),
        out_dir=tmp_path / "r",
        benchmarks=[DataSource.MMLU_PRO],
        settings=[PersonaSetting.NONE],
        decodings=[Decoding.FREE],
        paths=eval_sample_paths(),
        sizes={DataSource.MMLU_PRO: 3},
        decoding=DecodingParams(max_new_tokens=4, temperature=SAMPLING_TEMPERATURE),
        seeds=[0, 1],
        progress=False,
    )
    gen = HFGenerator(cfg.model, cfg.decoding)
    run(cfg, generator=gen)
    parts = [read_predictions(tmp_path / "r" / f"seed_{s}" / "predictions.jsonl") for s in (0, 1)]
    assert [len(p) for p in parts] == [3, 3]
    assert [r["row_id"] for r in parts[0]] == [r["row_id"] for r in parts[1]]
    assert [r["response"] for r in parts[0]] != [r["response"] for r in parts[1]]  # different sampling seeds
    for s in (0, 1):
        assert json.loads((tmp_path / "r" / f"seed_{s}" / "run_config.json").read_text())["decoding"]["seed"] == s
    accs = [100 * sum(r["correct"] for r in p) / 3 for p in parts]
    with open(tmp_path / "r" / "tables" / "table1.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["mmlu_pro/none_%"]) == pytest.approx(sum(accs) / 2, abs=1e-4)
    assert float(row["mmlu_pro/none_%_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-4)
    with pytest.raises(RunError, match="same responses for every seed"):
        run(RunConfig(**{**cfg.__dict__, "out_dir": tmp_path / "g", "decoding": DecodingParams(max_new_tokens=4)}))


def test_run_system_presets_and_refuses_contradictions(tiny_model_dir: Path, tmp_path: Path, capsys):
    parser = argparse.ArgumentParser()
    run_parser(parser.add_subparsers(dest="command"))

    def parsed(*extra: str):
        return style_and_decodings(parser.parse_args(["run", "--model", "m", "--out", "o", *extra]))

    assert parsed() == (PromptStyle.PERSONA, [Decoding.FREE, Decoding.GENERAL, Decoding.PERSONALIZED], None)
    assert parsed("--system", "g_sft_rl") == (PromptStyle.PERSONA, [Decoding.GENERAL], get_system("g_sft_rl"))
    assert parsed("--system", "cot", "--decoding", "free", "general") == (
        PromptStyle.COT,
        [Decoding.FREE, Decoding.GENERAL],
        get_system("cot"),
    )
    with pytest.raises(RunError, match="--system cot uses --prompt-style cot, not persona"):
        parsed("--system", "cot", "--prompt-style", "persona")
    with pytest.raises(RunError, match="--system p_sft_rl is read from decoding personalized"):
        parsed("--system", "p_sft_rl", "--decoding", "free")
    out = tmp_path / "greedy"
    assert (
        main(
            [
                "run",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--samples",
                "--seeds",
                "0",
                "1",
                "--temperature",
                "0",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "same responses for every seed" in capsys.readouterr().err and not out.exists()
