"""Source parsing and bad inputs of the RL data pipeline: every documented error names file/row/field, every
documented skip is counted in the manifest."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_personadual.apps.build_rl import main
from verl_personadual.core.prompts import DataSource, TaskFamily
from verl_personadual.data import alignx, flan, personahub, ultramedical
from verl_personadual.data.common import (
    Item,
    SchemaError,
    SourceSpec,
    SourceUnavailableError,
    iter_records,
    question_segments,
)
from verl_personadual.data.personas import (
    AlignedMode,
    parse_persona_reply,
    unaligned_personas,
)
from verl_personadual.data.rl_rows import (
    BuildConfig,
    BuildError,
    build,
    stratified_sample,
)
from verl_personadual.data.samples import rl_sample_paths

MC_ROW = {
    "id": "MedQA,1",
    "type": "Exam",
    "conversations": [
        {"from": "human", "value": "Which bone forms the heel?\n\nA. Talus\nB. Calcaneus"},
        {"from": "gpt", "value": "So, the answer is B."},
    ],
    "answer": "B",
    "score": "This question would be rated a 2.",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def small_config(tmp_path: Path, **paths: Path) -> BuildConfig:
    return BuildConfig(
        out_dir=tmp_path / "out",
        paths=rl_sample_paths() | paths,
        train_counts={"ultramedical": 2, "flan": 2, "alignx": 1},
        val_counts={"ultramedical": 1, "flan": 1, "alignx": 1},
        aligned=AlignedMode.OFFLINE_TEMPLATE,
        progress=False,
    )


# --- parsing ---


def test_ultramedical_items_exact():
    items = ultramedical.load(ultramedical.spec(rl_sample_paths()["ultramedical"])).items
    first = items[0]
    assert first == Item(
        source=DataSource.ULTRAMEDICAL,
        source_id="MedQA,1592",
        task="MedQA",
        family=TaskFamily.MULTIPLE_CHOICE,
        question="A 24-year-old woman presents with fatigue and pallor. Her hemoglobin is 9.1 g/dL with a low mean "
        "corpuscular volume and low ferritin. Which is the most appropriate initial treatment?\n\n"
        "A. Intramuscular vitamin B12\nB. Folic acid\nC. Oral ferrous sulfate\nD. Blood transfusion",
        gold="C",
        choices=("Intramuscular vitamin B12", "Folic acid", "Oral ferrous sulfate", "Blood transfusion"),
    )
    pubmed = next(it for it in items if it.source_id == "PubMedQA,1003")
    assert (pubmed.task, pubmed.family, pubmed.gold, pubmed.choices) == (
        "PubMedQA",
        TaskFamily.MULTIPLE_CHOICE,
        "C",
        ("yes", "no", "maybe"),
    )
    assert [it.source_id for it in items][-2:] == ["TextBookQA,Anatomy_Gray_28", "MedQA-Evol,9986-synthetic-4"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Q?\n\nA. x\nB. y", ("Q?", ["x", "y"])),
        ("Q?\nA. x\n\nB. y\nC. z", ("Q?", ["x", "y", "z"])),
        ("Q?\n\nB. x\nC. y", None),  # does not start at A
        ("Q?\n\nA. x\nC. y", None),  # letters not consecutive
        ("A. x\nB. y", None),  # no stem
        ("Q?\n\nA. x", None),  # a single option
    ],
)
def test_split_options(text, expected):
    got = ultramedical.split_options(text)
    assert (got if got is None else (got[0], got[1])) == expected


def test_ultramedical_gold_outside_options(tmp_path):
    row = dict(MC_ROW, answer="D")
    loaded = ultramedical.load(ultramedical.spec(write_jsonl(tmp_path / "u.jsonl", [row])))
    assert loaded.items == [] and loaded.skipped.as_dict() == {"gold_not_in_options": 1}


def test_flan_long_free_text_targets_are_skipped(tmp_path):
    short = {"inputs": "Capital of Peru?", "targets": "Lima", "task": "natural_questions_10templates"}
    long_ = {"inputs": "Trivia question: ...", "targets": " ".join(["word"] * 11), "task": "trivia_qa_10templates"}
    ten = dict(long_, targets=" ".join(["word"] * 10))
    loaded = flan.load(flan.spec(write_jsonl(tmp_path / "f.jsonl", [short, long_, ten])))
    assert [i.gold for i in loaded.items] == ["Lima", ten["targets"]]
    assert loaded.skipped.as_dict() == {"long_free_text_gold": 1}


def test_flan_families():
    items = flan.load(flan.spec(rl_sample_paths()["flan"])).items
    fams = {it.task: it.family for it in items}
    assert fams == {
        "bool_q_10templates": TaskFamily.OPTION_TEXT,
        "anli_r1_10templates": TaskFamily.OPTION_TEXT,
        "math_dataset_10templates": TaskFamily.MATH,
        "trivia_qa_10templates": TaskFamily.FREE_TEXT,
        "natural_questions_10templates": TaskFamily.FREE_TEXT,
    }
    anli = next(it for it in items if it.task.startswith("anli"))
    assert anli.choices == ("Yes", "It's impossible to say", "No") and anli.gold == "No"
    assert flan.parse_options("Q\nOPTIONS:\n- a\n- b\nAnswer:") == ["a", "b"]
    assert flan.parse_options("Q without options") is None


def test_alignx_persona_rendering_and_ab_order():
    items = alignx.load(alignx.spec(rl_sample_paths()["alignx"]), seed=0).items
    job = next(it for it in items if it.question.startswith("How should I prepare"))
    assert job.persona == (
        'A 22-year-old computer science graduate who likes structured plans. Responses I preferred: to "How do I '
        'learn a new language?", "Follow a weekly schedule with spaced repetition." over "Watch movies and hope it '
        'sticks."'
    )
    assert job.gold == "B" and job.choices[1].startswith("Research the company")
    golds = {
        s: [it.gold for it in alignx.load(alignx.spec(rl_sample_paths()["alignx"]), seed=s).items] for s in (0, 1, 2)
    }
    assert golds[0] == ["A", "B", "B", "A", "B", "B"]
    assert len({tuple(g) for g in golds.values()}) > 1  # the order depends on the seed
    long_text = alignx.render_user("x", [{"prompt": "p" * 500, "comment": "c"}], [])
    assert long_text == f'x. Things I wrote: on "{"p" * (alignx.SNIPPET_CHARS - 1)}…" I commented "c"'


def test_stratified_sample_allocation():
    items = [
        Item(DataSource.FLAN, f"{t}{i}", t, TaskFamily.FREE_TEXT, "q", "a")
        for t, n in (("a", 6), ("b", 3), ("c", 1))
        for i in range(n)
    ]
    got = stratified_sample(items, 5, random.Random(0))
    assert [it.task for it in got] == ["a", "a", "a", "b", "b"]
    assert len({it.source_id for it in stratified_sample(items, 10, random.Random(0))}) == 10
    with pytest.raises(ValueError, match="cannot draw 11 of 10"):
        stratified_sample(items, 11, random.Random(0))


def test_unaligned_personas_use_whole_pool_before_repeating():
    pool, _ = personahub.load(personahub.spec(rl_sample_paths()["personahub"]))
    drawn = unaligned_personas(pool, 30, seed=0)
    assert len(set(drawn[:12])) == 12 and len(drawn) == 30
    assert drawn == unaligned_personas(pool, 30, seed=0) != unaligned_personas(pool, 30, seed=1)
    with pytest.raises(ValueError, match="pool is empty"):
        unaligned_personas([], 1, seed=0)


@pytest.mark.parametrize(
    "reply, error",
    [
        ("Sure, a nurse.", 'no JSON object {"persona": ...} in the reply'),
        ('{"persona": ', 'no JSON object {"persona": ...} in the reply'),
        ("{persona: x}", "the JSON object does not parse"),
        ('{"name": "A nurse."}', 'no non-empty string "persona"'),
        ('{"persona": "   "}', 'no non-empty string "persona"'),
        ('{"persona": "..."}', "the persona has no content"),
        ('{"persona": ["A nurse."]}', 'no non-empty string "persona"'),
        (json.dumps({"persona": "x" * 401}), "the persona has 401 characters (max 400)"),
    ],
)
def test_persona_reply_rejections(reply, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        parse_persona_reply(reply)


def test_persona_reply_accepted():
    assert parse_persona_reply('Here:\n{"persona": "A  rural nurse\\nwho hikes."}') == "A rural nurse who hikes."


def test_question_segments_find_wrapped_questions():
    assert "which planet has the great red spot" in question_segments(
        "Answer the following question. Which planet has the Great Red Spot?\nWhat is the answer?"
    )
    assert "does coffee help" in question_segments("Context: x.\n\nQuestion: Does coffee help?\n\nA. yes")


# --- loading paths ---


def test_parquet_input_equals_jsonl(tmp_path):
    src = rl_sample_paths()["ultramedical"]
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "u.parquet")
    from_parquet = ultramedical.load(ultramedical.spec(tmp_path / "u.parquet"))
    from_jsonl = ultramedical.load(ultramedical.spec(src))
    assert from_parquet.items == from_jsonl.items
    assert from_parquet.skipped == from_jsonl.skipped and from_parquet.rows_read == 14


def test_hub_loading_path_through_datasets(tmp_path):
    """The hub branch calls ``datasets.load_dataset(hub_id, config, split=...)``; a local dataset directory stands
    in for the hub id (the hub itself is unreachable here)."""
    repo = tmp_path / "fake_hub_repo"
    repo.mkdir()
    (repo / "train.jsonl").write_text((rl_sample_paths()["flan"]).read_text())
    records = list(iter_records(SourceSpec(str(repo), None, "train")))
    assert len(records) == 21 and records[0].origin == f"{repo}[default/train]" and records[0].row == 0
    loaded = flan.load(SourceSpec(str(repo), None, "train"))
    assert loaded.items == flan.load(flan.spec(rl_sample_paths()["flan"])).items


def test_unreachable_hub_is_a_clear_error(tmp_path, capsys):
    """HF_HUB_OFFLINE=1 (tests/conftest.py): the real hub id fails fast with a message that says what to do."""
    with pytest.raises(
        SourceUnavailableError, match=r"^cannot load TsinghuaC3I/UltraMedical\[default/train\] from the"
    ):
        list(iter_records(ultramedical.spec()))
    assert main(["--out", str(tmp_path / "hub"), "--aligned-personas", "offline-template", "--no-progress"]) == 2
    assert "pass a local file in the same schema instead" in capsys.readouterr().err


# --- bad inputs ---


def test_missing_field_names_file_line_field(tmp_path):
    row = {k: v for k, v in MC_ROW.items() if k != "answer"}
    path = write_jsonl(tmp_path / "u.jsonl", [MC_ROW, row])
    with pytest.raises(SchemaError, match=rf"^{path}, line 2, field 'answer': missing field$"):
        ultramedical.load(ultramedical.spec(path))


def test_nested_and_typed_fields(tmp_path):
    bad_turn = dict(MC_ROW, conversations=[{"from": "human"}])
    path = write_jsonl(tmp_path / "u.jsonl", [bad_turn])
    with pytest.raises(SchemaError, match=r"line 1, field 'conversations\[0\]\.value': missing or not a str"):
        ultramedical.load(ultramedical.spec(path))
    path = write_jsonl(tmp_path / "f.jsonl", [{"inputs": "q", "targets": 5, "task": "t"}])
    with pytest.raises(SchemaError, match=r"line 1, field 'targets': expected str, got int"):
        flan.load(flan.spec(path))
    ax = json.loads(rl_sample_paths()["alignx"].read_text().splitlines()[0])
    ax["User-Generated Content"] = [{"prompt": "p"}]
    path = write_jsonl(tmp_path / "a.jsonl", [ax])
    with pytest.raises(SchemaError, match=r"field 'User-Generated Content\[0\]\.comment': missing or not a str"):
        alignx.load(alignx.spec(path), seed=0, strict=True)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"persona": "A nurse."}\n{"persona": "A caf\xe9 owner."}\n')
    with pytest.raises(SchemaError, match=rf"^{path}, line 2: not valid UTF-8 \(byte 0xe9 at column 19\)$"):
        personahub.load(personahub.spec(path))
    table = pa.table({"persona": pa.array([b"A nurse.", b"A caf\xe9 owner."], type=pa.binary())})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(SchemaError, match=r"p\.parquet, row 0, field 'persona': expected str, got bytes"):
        personahub.load(personahub.spec(tmp_path / "p.parquet"))


def test_malformed_files(tmp_path):
    bad_json = tmp_path / "x.jsonl"
    bad_json.write_text('{"persona": "ok"}\n{"persona": \n')
    with pytest.raises(SchemaError, match=r"x\.jsonl, line 2: not valid JSON"):
        personahub.load(personahub.spec(bad_json))
    not_obj = tmp_path / "y.jsonl"
    not_obj.write_text("[1, 2]\n")
    with pytest.raises(SchemaError, match=r"y\.jsonl, line 1: expected a JSON object, got list"):
        personahub.load(personahub.spec(not_obj))
    with pytest.raises(SchemaError, match=r"nope\.jsonl: no such file"):
        personahub.load(personahub.spec(tmp_path / "nope.jsonl"))
    (tmp_path / "z.csv").write_text("persona\nx\n")
    with pytest.raises(SchemaError, match=r"unsupported file type '\.csv'"):
        personahub.load(personahub.spec(tmp_path / "z.csv"))


def test_empty_and_huge_personas_skipped_and_counted(tmp_path):
    rows = [json.loads(line) for line in rl_sample_paths()["personahub"].read_text().splitlines()]
    rows += [{"persona": ""}, {"persona": " ... "}, {"persona": "x" * 100_000}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    ax_rows = [json.loads(line) for line in rl_sample_paths()["alignx"].read_text().splitlines()]
    ax_rows[0]["Demographic Information"] = "y" * 100_000
    ax_path = write_jsonl(tmp_path / "a.jsonl", ax_rows)
    m = build(small_config(tmp_path, personahub=path, alignx=ax_path))
    assert m["skipped"]["personahub"] == {"duplicate_persona": 1, "empty_persona": 3, "overlong_persona": 1}
    assert m["skipped"]["alignx"] == {"empty_persona": 1, "overlong_persona": 1}
    assert m["available_after_filters"]["personahub"] == 12 and m["available_after_filters"]["alignx"] == 5
    persona_texts = [r["extra_info"]["persona"] for r in pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()]
    assert all(0 < len(p) < 2000 for p in persona_texts)


def test_duplicate_ids_skipped_and_counted(tmp_path):
    second = dict(MC_ROW, id="MedQA,2")
    path = write_jsonl(tmp_path / "u.jsonl", [MC_ROW, second, dict(MC_ROW, answer="A"), second])
    loaded = ultramedical.load(ultramedical.spec(path))
    assert [it.source_id for it in loaded.items] == ["MedQA,1", "MedQA,2"]
    assert loaded.items[0].gold == "B"  # the first occurrence wins
    assert loaded.skipped.as_dict() == {"duplicate_id": 2}


def test_empty_source_is_an_error(tmp_path, capsys):
    empty = tmp_path / "ultramedical.jsonl"
    empty.write_text("")
    with pytest.raises(
        SchemaError, match=r"^source 'ultramedical' yielded no usable item \(0 rows read, skipped \{\}\)$"
    ):
        build(small_config(tmp_path, ultramedical=empty))
    assert main(["--samples", "--ultramedical", str(empty), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "error: source 'ultramedical' yielded no usable item" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    no_personas = tmp_path / "personahub.jsonl"
    no_personas.write_text('{"persona": " "}\n')
    with pytest.raises(SchemaError, match="PersonaHub source yielded no usable persona"):
        build(small_config(tmp_path, personahub=no_personas))


def test_not_enough_items_is_an_error(tmp_path):
    cfg = small_config(tmp_path)
    cfg.train_counts["ultramedical"] = 10
    with pytest.raises(BuildError, match=r"^ultramedical: 10 train \+ 1 validation items requested but only 10 "):
        build(cfg)
    cfg.train_counts["ultramedical"] = 0
    cfg.val_counts["ultramedical"] = 0
    m = build(cfg)
    assert "ultramedical" not in m["counts"]["train"] and "ultramedical" not in m["sources"]


def test_overlap_filters_default_to_the_hub_and_refuse_to_build_without_them(tmp_path, monkeypatch):
    """No local question list: the filters load the benchmarks from the hub; offline (the tests' hub is off, and
    its caches are empty here) the build stops, naming the filter and both ways out. --no-overlap-filter builds
    without them, and says so."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    cfg = small_config(tmp_path)
    cfg.paths["pubmedqa"] = None
    cfg.paths["triviaqa"] = None
    with pytest.raises(BuildError, match=r"overlap filter pubmedqa .*--pubmedqa FILE .*--no-overlap-filter"):
        build(cfg)
    assert not (tmp_path / "out" / "train.parquet").exists()
    cfg.overlap_filter = False
    m = build(cfg)
    assert m["filters"] == {
        "pubmedqa": {"ran": False, "applies_to": "ultramedical", "removed": 0, "reason": "--no-overlap-filter"},
        "triviaqa": {"ran": False, "applies_to": "flan", "removed": 0, "reason": "--no-overlap-filter"},
    }
    assert m["available_after_filters"]["ultramedical"] == 11 and m["available_after_filters"]["flan"] == 18


def test_overlap_filter_cli_flag(tmp_path, capsys):
    out = tmp_path / "rl"
    args = ["--samples", "--out", str(out), "--no-progress"]
    assert main(args + ["--pubmedqa", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(args + ["--no-overlap-filter"]) == 0
    filters = json.loads((out / "manifest.json").read_text())["filters"]
    assert [f["ran"] for f in filters.values()] == [False, False]
