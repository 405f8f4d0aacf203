"""Eval harness pieces: loaders on the shipped fixtures (hub schemas) and on bad input, seeded sampling, the saved
eval set, scoring of hand-written outputs for every benchmark (malformed ones included), the predictions store,
the baselines (prompt styles, router) and the comparison table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from verl_personadual.apps.eval_cli import main
from verl_personadual.core.modes import PREFIX_TEXT, Mode
from verl_personadual.core.prompts import DataSource, PersonaSetting
from verl_personadual.data.benchmarks import (
    benchmark_names,
    load_benchmark,
    parse_sizes,
    sample_items,
)
from verl_personadual.data.common import SchemaError
from verl_personadual.data.eval_sets import (
    EvalRow,
    PersonaAssignmentError,
    build_eval_set,
    read_eval_set,
    write_eval_set,
)
from verl_personadual.data.personahub import Persona
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval.baselines import (
    PromptStyle,
    Router,
    build_messages,
    mode_from_text,
    router_labels,
)
from verl_personadual.eval.run import score_response
from verl_personadual.eval.store import PredictionStore, StoreError, read_predictions

PATHS = eval_sample_paths()


def _items(name: str, seed: int = 0):
    return load_benchmark(name, PATHS[name], seed=seed)[0].items


def test_fixtures_load_in_hub_schema() -> None:
    built_in = ["mmlu_pro", "supergpqa", "triviaqa", "pubmedqa", "math500", "personafeedback", "fspo_roleplay"]
    assert benchmark_names() == built_in
    assert {b: len(_items(b)) for b in built_in} == dict.fromkeys(built_in, 4)
    mmlu = _items("mmlu_pro")[0]
    assert (mmlu.source_id, mmlu.gold, mmlu.task) == ("mmlu_pro:7", "B", "math")
    assert mmlu.question == "What is 2 + 3?\n\nA. 4\nB. 5\nC. 6"  # "N/A" padding dropped
    assert _items("supergpqa")[1].gold == "D"
    assert json.loads(_items("triviaqa")[0].gold) == ["Jupiter", "Planet Jupiter"]
    pub = _items("pubmedqa")[2]
    assert pub.gold == "maybe" and pub.question.startswith("Abstract:\nA small pilot study")
    assert _items("math500")[1].gold == "\\frac{3}{4}"
    for name in ("personafeedback", "fspo_roleplay"):
        for item in _items(name):
            assert item.family.value == "preference" and item.persona
            # the gold letter points at the preferred response
            assert item.question.split("Response " + item.gold + ":\n", 1)[1].startswith(
                item.choices["AB".index(item.gold)]
            )
    pf = _items("personafeedback")
    assert [i.task for i in pf] == ["general/easy", "general/easy", "general/medium", "specific/hard"]
    assert pf[0].persona.startswith("Alice. Demographics: Age: 30; Occupation: nurse")
    assert _items("fspo_roleplay")[0].persona == "A bookish retiree who dislikes crowds."
    # A/B order is seeded: same seed, same order; across seeds both letters occur
    assert [i.gold for i in _items("fspo_roleplay", 5)] == [i.gold for i in _items("fspo_roleplay", 5)]
    letters = {i.gold for s in range(6) for i in _items("fspo_roleplay", s)}
    assert letters == {"A", "B"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_input_names_file_row_field(tmp_path: Path) -> None:
    good = json.loads(PATHS["mmlu_pro"].read_text().splitlines()[0])
    bad = dict(good, answer="D")  # D is "N/A" padding
    with pytest.raises(SchemaError, match=r"bad\.jsonl, line 2, field 'answer'.*not the letter"):
        load_benchmark("mmlu_pro", _write(tmp_path / "bad.jsonl", [good, bad]))
    missing = {k: v for k, v in good.items() if k != "options"}
    with pytest.raises(SchemaError, match=r"line 1, field 'options': missing field"):
        load_benchmark("mmlu_pro", _write(tmp_path / "m.jsonl", [missing]))
    pub = json.loads(PATHS["pubmedqa"].read_text().splitlines()[0])
    with pytest.raises(SchemaError, match=r"field 'final_decision'.*'perhaps'"):
        load_benchmark("pubmedqa", _write(tmp_path / "p.jsonl", [dict(pub, final_decision="perhaps")]))
    with pytest.raises(SchemaError, match=r"field 'context.contexts': missing"):
        load_benchmark("pubmedqa", _write(tmp_path / "p2.jsonl", [dict(pub, context={"labels": []})]))
    tq = json.loads(PATHS["triviaqa"].read_text().splitlines()[0])
    hidden = dict(tq, question_id="tc_9", answer=dict(tq["answer"], aliases=[]))
    loaded, _ = load_benchmark("triviaqa", _write(tmp_path / "t.jsonl", [tq, hidden]))
    assert len(loaded.items) == 1 and loaded.skipped.as_dict() == {"no_gold": 1}
    with pytest.raises(SchemaError, match="no usable item"):
        load_benchmark("triviaqa", _write(tmp_path / "t2.jsonl", [hidden]))
    fs = json.loads(PATHS["fspo_roleplay"].read_text().splitlines()[0])
    with pytest.raises(SchemaError, match=r"field 'score_persona.persona_description'"):
        load_benchmark("fspo_roleplay", _write(tmp_path / "f.jsonl", [dict(fs, score_persona={})]))
    pf = tmp_path / "pf"
    (pf / "persona").mkdir(parents=True)
    (pf / "data" / "general").mkdir(parents=True)
    _write(pf / "persona" / "all_personas.jsonl", [{"Name": "Ann", "Demographics": {"Age": 3}}])
    _write(pf / "data" / "general" / "easy.jsonl", [{"user_id": "7", "question": "q", "chosen": "a", "reject": "b"}])
    with pytest.raises(SchemaError, match=r"easy\.jsonl, line 1, field 'user_id': '7' is not a persona"):
        load_benchmark("personafeedback", pf)


def test_sampling_is_seeded_subset() -> None:
    pool = _items("math500")
    a, b = sample_items(pool, 2, 1, "math500"), sample_items(pool, 2, 1, "math500")
    assert a == b and len(a) == 2 and [pool.index(i) for i in a] == sorted(pool.index(i) for i in a)
    assert sample_items(pool, 10, 1, "math500") == pool
    assert {tuple(i.source_id for i in sample_items(pool, 2, s, "math500")) for s in range(8)} != {
        tuple(x.source_id for x in a)
    }
    assert parse_sizes(["mmlu_pro=3"]) == {DataSource.MMLU_PRO: 3}
    with pytest.raises(ValueError, match="bad size 'mmlu=3'"):
        parse_sizes(["mmlu=3"])


def test_eval_set_assignment_and_roundtrip(tmp_path: Path) -> None:
    items = _items("mmlu_pro")[:2] + _items("fspo_roleplay")[:1]
    pool = [Persona("p1", "A sailor."), Persona("p2", "A baker."), Persona("p3", "A pilot.")]
    settings = [PersonaSetting.NONE, PersonaSetting.UNALIGNED]
    rows = build_eval_set(items, settings, pool, seed=0, client=None)
    assert [r.row_id for r in rows] == [
        "mmlu_pro:7|none",
        "mmlu_pro:7|unaligned",
        "mmlu_pro:12|none",
        "mmlu_pro:12|unaligned",
        f"{items[2].source_id}|aligned",
    ]
    assert rows[0].persona is None and rows[1].persona in {"A sailor.", "A baker.", "A pilot."}
    assert rows[1].persona != rows[3].persona  # the pool is consumed without repeats
    assert rows[4].persona == "A bookish retiree who dislikes crowds."
    assert build_eval_set(items, settings, pool, seed=0, client=None) == rows
    with pytest.raises(PersonaAssignmentError, match="PERSONADUAL_LLM_BASE_URL"):
        build_eval_set(items, [PersonaSetting.ALIGNED], pool, seed=0, client=None)
    path = tmp_path / "eval_set.jsonl"
    write_eval_set(path, rows)
    assert read_eval_set(path) == rows
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["setting"] = "half"
    path.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(SchemaError, match=r"eval_set\.jsonl, line 2, field 'setting': 'half'"):
        read_eval_set(path)


def _row(name: str, index: int = 0, setting: str = "none", persona: str | None = None) -> EvalRow:
    item = _items(name)[index]
    return EvalRow(
        f"{item.source_id}|{setting}",
        item.source_id,
        name,
        item.task,
        item.family.value,
        setting,
        item.question,
        item.gold,
        list(item.choices),
        persona or item.persona,
        item.persona_id,
    )


# (benchmark, item index, response, correct, has_answer)
CASES = [
    ("mmlu_pro", 0, 'Two plus three is five.\n{"answer": "B"}', 1.0, 1.0),
    ("mmlu_pro", 0, '{"answer": "5"}', 1.0, 1.0),  # option text names option B
    ("mmlu_pro", 0, '{"answer": "D"}', 0.0, 0.0),  # D is padding, not a valid letter
    ("mmlu_pro", 0, 'I think {"answer": ', 0.0, 0.0),  # broken JSON: nothing extracted
    ("supergpqa", 1, "So, the answer is (D).", 1.0, 1.0),
    ("supergpqa", 1, '{"answer": "A"}', 0.0, 1.0),
    ("triviaqa", 0, '{"answer": "planet jupiter"}', 1.0, 1.0),
    ("triviaqa", 0, '{"answer": "Saturn"}', 0.0, 1.0),
    ("triviaqa", 1, "", 0.0, 0.0),
    ("pubmedqa", 1, '{"answer": "No"}', 1.0, 1.0),
    ("pubmedqa", 1, '{"answer": "yes and no"}', 0.0, 0.0),  # hedging is invalid
    ("math500", 1, 'Divide by 2: {"answer": "\\\\frac{3}{4}"}', 1.0, 1.0),
    ("math500", 1, "\\boxed{0.75}", 1.0, 1.0),
    ("math500", 0, '{"answer": "31"}', 0.0, 1.0),
    ("math500", 0, "{{{{", 0.0, 0.0),
]


@pytest.mark.parametrize(("name", "index", "text", "correct", "has_answer"), CASES)
def test_scoring_hand_written_outputs(name: str, index: int, text: str, correct: float, has_answer: float) -> None:
    res = score_response(_row(name, index), text, int(Mode.GENERAL))
    assert (res["correct"], res["has_answer"]) == (correct, has_answer)
    assert res["mode"] == 0.0


@pytest.mark.parametrize("name", ["personafeedback", "fspo_roleplay"])
def test_scoring_preference(name: str) -> None:
    row = _row(name, 0, "aligned")
    other = "B" if row.gold == "A" else "A"
    assert score_response(row, f'{{"answer": "{row.gold}"}}', 1)["correct"] == 1.0
    assert score_response(row, f"Response ({other}) suits me", 1)["correct"] == 0.0
    assert score_response(row, '{"answer": "C"}', 1)["has_answer"] == 0.0
    assert score_response(row, "\x00\ufffd garbage\n\n", -1)["mode"] == -1.0


def test_store_cuts_torn_line_and_refuses_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path)
    store.append([{"row_id": "a", "decoding": "free", "correct": 1.0}])
    with pytest.raises(StoreError, match="already present"):
        store.append([{"row_id": "a", "decoding": "free", "correct": 0.0}])
    with open(path, "a") as f:
        f.write('{"row_id": "b", "decod')
    store = PredictionStore(path)
    assert store.completed == {("a", "free")}
    assert path.read_text().count("\n") == 1 and len(read_predictions(path)) == 1
    path.write_text('{"row_id": "a", "decoding": "free"}\nnot json\n{"row_id": "c", "decoding": "free"}\n')
    with pytest.raises(StoreError, match=r"p\.jsonl, line 2"):
        PredictionStore(path)


def test_prompt_styles_and_text_mode() -> None:
    row = _row("mmlu_pro", 0, "unaligned", persona="A sailor.")
    with_p = build_messages(row, PromptStyle.PERSONA)[0]["content"]
    without = build_messages(row, PromptStyle.NO_PERSONA)[0]["content"]
    choice = build_messages(row, PromptStyle.MODE_CHOICE)[0]["content"]
    assert with_p.startswith("I am a sailor") and "sailor" not in without
    assert (
        choice.startswith(with_p) and PREFIX_TEXT[Mode.GENERAL] in choice and PREFIX_TEXT[Mode.PERSONALIZED] in choice
    )
    assert mode_from_text("  [Personalized_mode] As a sailor...") == 1
    assert mode_from_text("[General_mode]x") == 0 and mode_from_text("no tag") == -1


def test_router_learns_and_roundtrips(tmp_path: Path) -> None:
    rows, labels = [], []
    for i in range(20):
        personal = i % 2 == 0
        q = f"Which gift would suit me for my birthday {i}?" if personal else f"What is {i} plus {i}?"
        rows.append(
            EvalRow(
                f"x{i}|aligned",
                f"x{i}",
                "mmlu_pro",
                "t",
                "multiple_choice",
                "aligned",
                q,
                "A",
                [],
                "A gardener who loves roses.",
                "p",
            )
        )
        labels.append(Mode.PERSONALIZED if personal else Mode.GENERAL)
    router = Router.train(rows, labels, buckets=256)
    assert router.predict(rows) == labels
    router.save(tmp_path / "r.json")
    assert Router.load(tmp_path / "r.json").predict(rows) == labels
    preds = [
        {"row_id": "x0|aligned", "decoding": "general", "correct": 0.0},
        {"row_id": "x0|aligned", "decoding": "personalized", "correct": 1.0},
        {"row_id": "x1|aligned", "decoding": "general", "correct": 1.0},
        {"row_id": "x1|aligned", "decoding": "personalized", "correct": 0.0},
        {"row_id": "x2|aligned", "decoding": "general", "correct": 1.0},
        {"row_id": "x2|aligned", "decoding": "personalized", "correct": 1.0},  # tie: no label
    ]
    x, y = router_labels(rows, preds)
    assert [r.row_id for r in x] == ["x0|aligned", "x1|aligned"] and y == [Mode.PERSONALIZED, Mode.GENERAL]


def test_baselines_through_the_harness(tiny_model_dir: Path, tmp_path: Path) -> None:
    """PersonaDual-Prompt, the router and a plain no-persona model on one saved eval set; then `compare`."""
    common = [
        "--model",
        str(tiny_model_dir),
        "--samples",
        "--no-progress",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--benchmarks",
        "mmlu_pro",
        "fspo_roleplay",
        "--settings",
        "none",
        "unaligned",
    ]
    pd = tmp_path / "pd"
    assert main(["run", *common, "--out", str(pd), "--decoding", "general", "personalized"]) == 0
    router = tmp_path / "router.json"
    rows = read_eval_set(pd / "eval_set.jsonl")
    Router.train(rows, [Mode(i % 2) for i in range(len(rows))], buckets=64).save(router)
    es = str(pd / "eval_set.jsonl")
    assert (
        main(
            [
                "run",
                *common,
                "--out",
                str(tmp_path / "rt"),
                "--eval-set",
                es,
                "--decoding",
                "router",
                "--router",
                str(router),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                *common,
                "--out",
                str(tmp_path / "pr"),
                "--eval-set",
                es,
                "--decoding",
                "free",
                "--prompt-style",
                "mode_choice",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                *common,
                "--out",
                str(tmp_path / "np"),
                "--eval-set",
                es,
                "--decoding",
                "free",
                "--prompt-style",
                "no_persona",
            ]
        )
        == 0
    )
    assert read_eval_set(tmp_path / "rt" / "eval_set.jsonl") == rows  # the run keeps a copy of its rows
    routed = read_predictions(tmp_path / "rt" / "predictions.jsonl")
    want = dict(zip([r.row_id for r in rows], Router.load(router).predict(rows)))
    assert len(routed) == len(rows) == 4 * 2 + 4
    assert all(r["mode"] == want[r["row_id"]].name.lower() for r in routed)
    assert len(read_predictions(tmp_path / "np" / "predictions.jsonl")) == len(rows)
    # the random model is wrong in both modes everywhere: no label, a clear refusal
    assert main(["train-router", str(pd), "--out", str(tmp_path / "r2.json")]) == 2
    # a resumed run with other generation settings is refused
    assert main(["run", *common, "--out", str(tmp_path / "np"), "--eval-set", es, "--decoding", "free"]) == 2
    assert (
        main(
            [
                "compare",
                "--run",
                f"pd={pd}",
                f"router={tmp_path / 'rt'}",
                f"prompt={tmp_path / 'pr'}",
                f"plain={tmp_path / 'np'}",
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    with open(tmp_path / "cmp" / "table1.csv") as f:
        systems = [r["system"] for r in csv.DictReader(f)]
    assert systems == ["pd:general", "pd:personalized", "pd:upper_bound", "router:router", "prompt:free", "plain:free"]


def test_parquet_in_hub_schema(tmp_path: Path) -> None:
    """Parquet files (what hub shards are) load like JSONL, nested structs included (PubMedQA ``context``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("pubmedqa", "triviaqa", "mmlu_pro"):
        rows = [json.loads(line) for line in PATHS[name].read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{name}.parquet")
        assert load_benchmark(name, tmp_path / f"{name}.parquet")[0].items == _items(name)


def test_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"], ["train-router", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("forced general / forced personalized", "predictions.jsonl", "--eval-set", "PersonaDual-Router"):
        assert phrase in text


def test_failed_persona_requests_are_retried_alone(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """A garbage aligned-persona reply fails the run before anything is evaluated, with a clear message; the
    re-run asks only for the failed persona (the good replies are cached)."""
    from openai_server import OpenAITestServer

    state = {"broken": True}

    def reply(body: dict) -> str:
        content = body["messages"][-1]["content"]
        if state["broken"] and "Great Red Spot" in content:
            return "I cannot help with that."
        return json.dumps({"persona": "An amateur astronomer."})

    with OpenAITestServer(reply=reply) as srv:
        argv = [
            "run",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "run"),
            "--samples",
            "--no-progress",
            "--backend",
            "hf",
            "--device",
            "cpu",
            "--max-new-tokens",
            "2",
            "--benchmarks",
            "triviaqa",
            "--settings",
            "aligned",
            "--decoding",
            "general",
            "--llm-base-url",
            srv.base_url,
            "--llm-model",
            "m",
            "--llm-cache-dir",
            str(tmp_path / "cache"),
        ]
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(err) == 1 and "1 of 4 aligned-persona requests failed" in err[0] and "tc_1" in err[0]
        assert not (tmp_path / "run").exists() and srv.requests == 4  # nothing written: no empty --out either
        state["broken"] = False
        assert main(argv) == 0
        assert srv.requests == 5
        assert len(read_predictions(tmp_path / "run" / "predictions.jsonl")) == 4


def test_text_prefix_model(text_tokenizer_dir: Path, tmp_path: Path) -> None:
    """A checkpoint without dedicated mode tokens (evaluated as PersonaDual with --text-prefixes, which eval run asks
    for on such a model): forcing appends the prefix's text ids, the response starts with them and its mode is
    recorded; the mode_choice baseline runs on it (a random model writes no tag: unknown)."""
    from conftest import build_tiny_model
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import resolve_prefixes

    model = build_tiny_model(tmp_path / "m", text_tokenizer_dir)
    common = [
        "--model",
        str(model),
        "--samples",
        "--no-progress",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--max-new-tokens",
        "12",
        "--benchmarks",
        "math500",
        "--settings",
        "none",
    ]
    assert (
        main(["run", *common, "--out", str(tmp_path / "f"), "--decoding", "general", "personalized", "--text-prefixes"])
        == 0
    )
    recs = read_predictions(tmp_path / "f" / "predictions.jsonl")
    plen = resolve_prefixes(AutoTokenizer.from_pretrained(model)).length(Mode.GENERAL)
    assert plen > 1 and len(recs) == 8
    assert all(r["mode"] == r["decoding"] for r in recs)
    assert all(r["response_tokens"] >= plen for r in recs if r["decoding"] == "general")
    assert all(r["response_tokens"] <= 12 for r in recs)
    assert (
        main(["run", *common, "--out", str(tmp_path / "p"), "--decoding", "free", "--prompt-style", "mode_choice"]) == 0
    )
    assert all(r["mode"] == "unknown" for r in read_predictions(tmp_path / "p" / "predictions.jsonl"))
