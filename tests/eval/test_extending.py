"""docs/extending.md's worked example, run as written: a reward family, a benchmark and a generator-based system
registered from a file outside the project are listed by ``eval run --help``, evaluated by ``eval run`` and reported
in Table 1 (run and ``compare``), with accuracies computed by hand. Each command runs in its own process (a
registration holds for the process that makes it, so none leaks into other tests). Then the registries' checks: a
benchmark names a registered reward family, and no registration changes a record already registered."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from commands import teach

from verl_personadual.core.prompts import answer_format
from verl_personadual.core.rewards.families import register_family, reward_family
from verl_personadual.data.benchmarks import DEFAULT_SIZES, Benchmark, get_benchmark, is_benchmark, register_benchmark
from verl_personadual.eval.generate import prompt_ids
from verl_personadual.eval.store import read_predictions

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- extending-example:"
#: The fixture rows, in google/boolq's schema; golds yes, yes, no, yes.
ROWS = [
    {
        "question": "is the sun a star",
        "passage": "The Sun is the star at the centre of the Solar System.",
        "answer": True,
    },
    {"question": "is water wet", "passage": "Water wets most surfaces it touches.", "answer": True},
    {"question": "is a whale a fish", "passage": "Whales are marine mammals, not fish.", "answer": False},
    {"question": "can penguins swim", "passage": "Penguins are flightless birds that swim well.", "answer": True},
]
#: The one persona of the unaligned setting's pool, and how the prompt words it.
PERSONA, PERSONA_LEAD = "A sailor.", "I am a sailor. My question is:"
#: The end of every prompt, written out by hand from the example's answer-format clause.
INSTRUCTION = (
    "Reason step by step, then give your final answer on the last line as a JSON object with the key "
    '"answer": yes or no, e.g. {"answer": "no"}.'
)


def example_source() -> str:
    """The Python blocks of docs/extending.md from the example marker on, joined in order."""
    text = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert len(blocks) == 3
    return "\n\n".join(blocks)


def _run(script: Path, *args: str, cwd: Path, status: int = 0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONADUAL_LLM_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout if status == 0 else proc.stderr


@pytest.fixture(scope="module")
def yes_no_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen3 taught on the eight BoolQ prompts (four rows, without a persona and with
    :data:`PERSONA`): a free response opens with ``[General_mode]``,
    ``[General_mode]`` is followed by ``{"answer": "yes"}`` and ``[Personalized_mode]`` by ``{"answer": "no"}``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g, p = tok.convert_tokens_to_ids("[General_mode]"), tok.convert_tokens_to_ids("[Personalized_mode]")
    answer = {m: tok.encode(json.dumps({"answer": a}), add_special_tokens=False) for m, a in ((g, "yes"), (p, "no"))}
    seqs = []
    for row in ROWS:
        for lead in ("", f"{PERSONA_LEAD}\n\n"):
            content = f"{lead}Passage:\n{row['passage']}\n\nQuestion: {row['question']}?\n\n{INSTRUCTION}"
            ids = prompt_ids(tok, [{"role": "user", "content": content}], {})
            seqs.append((ids, [g]))
            seqs += [(ids + [m], answer[m] + [tok.eos_token_id]) for m in (g, p)]
    return teach(model, tok, seqs, tmp_path_factory.mktemp("yes_no"), steps=400)


def test_a_benchmark_registered_outside_the_project_is_listed_run_and_in_table1(
    yes_no_model: Path, tmp_path: Path
) -> None:
    script, data, pool = _boolq_files(tmp_path)
    help_text = " ".join(_run(script, "run", "--help", cwd=tmp_path).split())
    assert re.search(r"--benchmarks \{[^}]*\bboolq\b[^}]*\}", help_text)
    assert "boolq 1,000" in help_text  # its default size, beside the built-in ones

    out = tmp_path / "run"
    _run(
        script,
        *("run", "--model", str(yes_no_model), "--out", str(out), "--benchmarks", "boolq"),
        *("--data", f"boolq={data}", f"personahub={pool}", "--settings", "none", "unaligned"),
        *("--backend", "hf", "--device", "cpu"),
        *("--max-new-tokens", "12", "--no-progress"),
        cwd=tmp_path,
    )
    records = read_predictions(out / "predictions.jsonl")
    golds = ["yes", "yes", "no", "yes"]
    gold_of = {r["item_id"]: r for r in (json.loads(line) for line in (out / "eval_set.jsonl").open())}
    assert sorted(row["gold"] for row in gold_of.values()) == sorted(golds)
    assert {(r["benchmark"], r["family"]) for r in records} == {("boolq", "yes_no")}
    for setting in ("none", "unaligned"):
        by_decoding = {
            d: sorted(
                (gold_of[r["item_id"]]["gold"], r["pred"])
                for r in records
                if (r["decoding"], r["setting"]) == (d, setting)
            )
            for d in ("free", "general", "personalized")
        }
        assert by_decoding["general"] == by_decoding["free"] == sorted((g, "yes") for g in golds)
        assert by_decoding["personalized"] == sorted((g, "no") for g in golds)
    # 3 of 4 golds are "yes": general (and free, in general mode) 75 %, personalized 25 %, either mode 100 %.
    want = {"free": 75.0, "general": 75.0, "personalized": 25.0, "upper_bound": 100.0}

    _run(script, "compare", "--run", f"b={out}", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    for tables, prefix in ((out / "tables", ""), (tmp_path / "cmp", "b:")):
        with open(tables / "table1.csv") as f:
            table = {row["system"]: row for row in csv.DictReader(f)}
        for setting in ("none", "unaligned"):
            assert {name: float(row[f"boolq/{setting}_%"]) for name, row in table.items()} == {
                f"{prefix}{d}": v for d, v in want.items()
            }
        markdown = (tables / "table1.md").read_text()
        assert markdown.startswith("| system | BoolQ | Obj. avg. |")
        for d, v in want.items():
            assert f"| {prefix}{d} | {v:.2f} | {v:.2f} |" in markdown
        for d in ("general", "personalized"):
            assert f"| {prefix}{d} (no persona) | {want[d]:.2f} | {want[d]:.2f} |" in markdown


def _boolq_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The example script, the fixture rows (:data:`ROWS`) and the one-persona pool, written under ``tmp_path``."""
    script = tmp_path / "boolq_example.py"
    script.write_text(example_source(), encoding="utf-8")
    data = tmp_path / "boolq.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    pool = tmp_path / "personahub.jsonl"
    pool.write_text(json.dumps({"persona": PERSONA}) + "\n", encoding="utf-8")
    return script, data, pool


def test_a_generator_based_system_registered_outside_the_project_is_listed_run_and_in_table1(
    yes_no_model: Path, tmp_path: Path
) -> None:
    """The example's ``fixed_mode`` system opens every response in the ``--fixed-mode`` mode. The taught model
    answers "yes" after ``[General_mode]`` and "no" after ``[Personalized_mode]``, so a ``personalized`` run scores
    1 of 4 golds (25 %) and a ``base`` run (free decoding: the model opens in the general mode) 3 of 4 (75 %)."""
    script, data, pool = _boolq_files(tmp_path)
    help_text = " ".join(_run(script, "run", "--help", cwd=tmp_path).split())
    assert re.search(r"--system \{[^}]*\bpersona_dual,fpps_h,fpps_s,fpps_m,fixed_mode\}", help_text)
    assert "fixed_mode = Fixed-mode (persona, free): a dual-mode checkpoint" in help_text
    assert "--fixed-mode {general,personalized} the mode of every response" in help_text

    common = ("--benchmarks", "boolq", "--data", f"boolq={data}", f"personahub={pool}", "--settings", "none")
    common += ("unaligned", "--backend", "hf", "--device", "cpu", "--max-new-tokens", "12", "--no-progress")
    model = ("run", "--model", str(yes_no_model))
    err = _run(script, *model, "--out", str(tmp_path / "x"), *common, "--fixed-mode", "general", cwd=tmp_path, status=2)
    assert err.splitlines()[-1] == "error: --fixed-mode needs --system fixed_mode"
    err = _run(script, *model, "--out", str(tmp_path / "y"), *common, "--system", "fixed_mode", cwd=tmp_path, status=2)
    assert err.splitlines()[-1] == "error: --system fixed_mode needs --fixed-mode general|personalized"

    fixed, base = tmp_path / "fixed", tmp_path / "base"
    _run(
        script,
        *model,
        "--out",
        str(fixed),
        *common,
        "--system",
        "fixed_mode",
        "--fixed-mode",
        "personalized",
        cwd=tmp_path,
    )
    _run(script, *model, "--out", str(base), *common, "--system", "base", cwd=tmp_path)
    config = json.loads((fixed / "run_config.json").read_text())
    assert (config["system"], config["generator"]) == ("fixed_mode", {"fixed_mode": "personalized"})
    records = read_predictions(fixed / "predictions.jsonl")
    assert len(records) == 8  # 4 rows x 2 settings, free decoding only
    assert {(r["decoding"], r["mode"], r["pred"]) for r in records} == {("free", "personalized", "no")}

    _run(
        script,
        "compare",
        "--system",
        f"fixed_mode:P={fixed}",
        "--system",
        f"base={base}",
        "--out",
        str(tmp_path / "t1"),
        cwd=tmp_path,
    )
    with open(tmp_path / "t1" / "table1.csv") as f:
        rows = [(r["system"], r["section"], r["boolq/none_%"], r["boolq/unaligned_%"]) for r in csv.DictReader(f)]
    assert rows == [
        ("Backbone", "General purpose models", "75.0000", "75.0000"),
        ("P", "Fixed-mode models", "25.0000", "25.0000"),
    ]
    markdown = (tmp_path / "t1" / "table1.md").read_text().splitlines()
    assert markdown[2:8] == [
        "| *General purpose models* |  |  |",
        "| Backbone | 75.00 | 75.00 |",
        "| *Fixed-mode models* |  |  |",
        "| P | 25.00 | 25.00 |",
        "| Backbone (no persona) | 75.00 | 75.00 |",
        "| P (no persona) | 25.00 | 25.00 |",
    ]


def _record(**changes) -> Benchmark:
    return replace(get_benchmark("pubmedqa"), **changes)


def test_a_benchmark_must_name_a_registered_reward_family() -> None:
    with pytest.raises(ValueError, match="'yes_no_or_so' is not a registered reward family"):
        register_benchmark(_record(name="pubmedqa_copy", family="yes_no_or_so"))
    assert not is_benchmark("pubmedqa_copy") and "pubmedqa_copy" not in DEFAULT_SIZES


def test_registrations_that_would_change_a_record_are_refused() -> None:
    with pytest.raises(ValueError, match="benchmark 'pubmedqa' is already registered with another record"):
        register_benchmark(_record(default_size=5))
    with pytest.raises(ValueError, match="names no training source"):
        register_benchmark(_record(name="flan"))
    with pytest.raises(ValueError, match="give exactly one of parse and load"):
        register_benchmark(_record(name="pubmedqa_copy", load=get_benchmark("personafeedback").load))
    math = reward_family("math")
    with pytest.raises(ValueError, match="reward family 'math' is already registered with another record"):
        register_family(replace(math, instruction="a number"))
    assert register_benchmark(get_benchmark("pubmedqa")) is get_benchmark("pubmedqa")  # the same record: a no-op
    assert DEFAULT_SIZES["pubmedqa"] == 1000 and not is_benchmark("pubmedqa_copy")
    assert reward_family("math") is math and "simplest form" in answer_format("math")


def test_system_registrations_that_would_change_the_registry_are_refused() -> None:
    from verl_personadual.eval.fpps.system import FPPS_OPTION
    from verl_personadual.eval.systems import SystemOption, ToyMember, get_system, register_system, system_names

    names = system_names()
    fpps_h = get_system("fpps_h")
    assert register_system(fpps_h) is fpps_h  # the same record: a no-op
    with pytest.raises(ValueError, match="system 'fpps_h' is already registered with another record"):
        register_system(replace(fpps_h, label="FPPS-hard"))
    with pytest.raises(ValueError, match="system 'cot_copy': options and toy membership need a generator"):
        register_system(replace(get_system("cot"), name="cot_copy", options=(SystemOption("--x"),)))
    with pytest.raises(ValueError, match="system 'cot_copy': options and toy membership need a generator"):
        register_system(replace(get_system("cot"), name="cot_copy", toy=ToyMember("CoT", "base")))
    other_fpps = SystemOption("--fpps", {"type": str, "help": "another artifact"})
    with pytest.raises(ValueError, match="system 'fpps_x': option --fpps is declared differently by another system"):
        register_system(replace(fpps_h, name="fpps_x", options=(other_fpps,)))
    with_default = SystemOption("--level", {"type": int, "default": 3})
    with pytest.raises(ValueError, match="system 'fpps_x': option --level must not set a default"):
        register_system(replace(fpps_h, name="fpps_x", options=(FPPS_OPTION, with_default)))
    with pytest.raises(ValueError, match="toy member 'X': model must be 'base' or 'sft', got 'rl'"):
        ToyMember("X", "rl")
    assert system_names() == names and names[-3:] == ["fpps_h", "fpps_s", "fpps_m"]
