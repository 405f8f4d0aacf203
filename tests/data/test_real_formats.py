"""The loaders on rows in the datasets' real public formats: FLAN's templates and options block
(google-research/FLAN ``flan/templates.py``), TriviaQA rc.nocontext and PubMedQA pqa_labeled as the hub serves
them, UltraMedical's ``<Source>,<id>`` ids and ``type`` values (its ``data/examples.json``), AlignX's fields as its
README gives them. Each test pins one thing the loaders used to get silently wrong on such rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_data_inputs import small_config

from verl_personadual.apps.build_rl import main
from verl_personadual.core.prompts import DataSource, TaskFamily
from verl_personadual.data import alignx, flan, overlap, ultramedical
from verl_personadual.data.common import (
    Item,
    SchemaError,
    SourceSpec,
    SourceUnavailableError,
    iter_records,
)
from verl_personadual.data.rl_rows import build
from verl_personadual.data.samples import rl_sample_paths
from verl_personadual.utils.errors import UserError

DIRECTION = [0.5] * 90  # AlignX's 90-dimensional preference direction (unused by the loader)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_with(tmp_path: Path, **paths: Path) -> dict:
    """The manifest of a small offline build on the shipped samples, some inputs replaced."""
    return build(small_config(tmp_path, **paths))


def output_rows(tmp_path: Path) -> list[dict]:
    out = tmp_path / "out"
    return [r for split in ("train", "validation") for r in pq.read_table(out / f"{split}.parquet").to_pylist()]


# --- FLAN: only gradable items are kept ---

ANLI_OPTIONS = "OPTIONS:\n- Yes\n- It's impossible to say\n- No"
FLAN_ROWS = [
    # copa, "{premise} What is the {question}?\n\n{options_}": gradable
    {
        "inputs": "The pond froze over. What is the cause?\n\nOPTIONS:\n- The temperature dropped below zero.\n"
        "- The ducks flew south.",
        "targets": "The temperature dropped below zero.",
        "task": "copa_10templates",
    },
    # copa's inverse templates "Write a sentence." -> {premise}, "Write two sentences." -> "{answer} {premise}"
    {"inputs": "Write a sentence.", "targets": "The pond froze over.", "task": "copa_10templates"},
    {
        "inputs": "Write two sentences.",
        "targets": "The temperature dropped below zero. The pond froze over.",
        "task": "copa_10templates",
    },
    # sentiment140 "Write a {answer} tweet." -> {text}; ag_news "Write a title:\n{text}" -> {title}
    {
        "inputs": "Write a negative tweet.",
        "targets": "stuck in traffic again, late for work",
        "task": "sentiment140_10templates",
    },
    {
        "inputs": (
            "Write a title:\nThe city council approved a network of bike lanes on Tuesday after months of debate."
        ),
        "targets": "Council approves bike lanes",
        "task": "ag_news_subset_10templates",
    },
    # anli "Generate a context and a hypothesis." -> "Context: {context}\n\nHypothesis: {hypothesis}"
    {
        "inputs": "Generate a context and a hypothesis.",
        "targets": "Context: The bakery opens at six.\n\nHypothesis: The bakery is open at noon.",
        "task": "anli_r1_10templates",
    },
    # anli '{context}\n\nBased on the paragraph above can we conclude that "{hypothesis}"?\n\n{options_}'
    {
        "inputs": "The bakery opens at six and closes at two.\n\nBased on the paragraph above can we conclude that "
        f'"The bakery is open at noon."?\n\n{ANLI_OPTIONS}',
        "targets": "Yes",
        "task": "anli_r1_10templates",
    },
    # squad_v1 "Ask a question about {title}." -> {question}
    {
        "inputs": "Ask a question about Bicycle.",
        "targets": "When was the safety bicycle invented?",
        "task": "squad_v1_10templates",
    },
    # the short-answer QA tasks, no options: trivia_qa (target = normalized_value), natural_questions, math_dataset
    {
        "inputs": "Trivia question: Which planet is known as the Red Planet?\nAnd the answer is?",
        "targets": "mars",
        "task": "trivia_qa_10templates",
    },
    {
        "inputs": "Question: who wrote the novel frankenstein??\nAnswer:",
        "targets": "Mary Shelley",
        "task": "natural_questions_10templates",
    },
    {
        "inputs": "Solve this math problem\n\nSolve 4*t - 8 = 0 for t.",
        "targets": "2",
        "task": "math_dataset_10templates",
    },
]


def test_flan_keeps_only_gradable_items(tmp_path):
    loaded = flan.load(flan.spec(write_jsonl(tmp_path / "flan.jsonl", FLAN_ROWS)))
    assert [(it.task, it.family, it.gold) for it in loaded.items] == [
        ("copa_10templates", TaskFamily.OPTION_TEXT, "The temperature dropped below zero."),
        ("anli_r1_10templates", TaskFamily.OPTION_TEXT, "Yes"),
        ("trivia_qa_10templates", TaskFamily.FREE_TEXT, "mars"),
        ("natural_questions_10templates", TaskFamily.FREE_TEXT, "Mary Shelley"),
        ("math_dataset_10templates", TaskFamily.MATH, "2"),
    ]
    assert loaded.rows_read == 11 and loaded.skipped.as_dict() == {"ungradable_no_options": 6}


# --- TriviaQA overlap: all ten FLAN trivia_qa templates ---

SUNSHINE = "Which U.S. state is known as the Sunshine State?"
#: FLAN's ten trivia_qa templates (flan/templates.py) applied to SUNSHINE.
TRIVIA_TEMPLATED = [
    f"Please answer this question: {SUNSHINE}",
    SUNSHINE,
    f"Write the answer: {SUNSHINE}",
    f"What is the answer: {SUNSHINE}",
    f"Answer this question.\n\n{SUNSHINE}",
    f"Answer the following question. {SUNSHINE}",
    f"Question: {SUNSHINE}\nAnswer:",
    f"{SUNSHINE}???",
    f"Trivia question: {SUNSHINE}\nAnd the answer is?",
    f"{SUNSHINE}\nWhat is the answer?",
]


def triviaqa_row(question: str, qid: str, aliases: list[str]) -> dict:
    """A ``mandarjoshi/trivia_qa`` rc.nocontext validation row (evidence fields empty, as the hub serves it)."""
    return {
        "question": question,
        "question_id": qid,
        "question_source": "http://www.quiz-example.org/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
        "answer": {
            "aliases": aliases,
            "normalized_aliases": [a.lower() for a in aliases],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": aliases[0].lower(),
            "type": "WikipediaEntity",
            "value": aliases[0],
        },
    }


@pytest.fixture
def triviaqa_file(tmp_path) -> Path:
    return write_jsonl(
        tmp_path / "triviaqa.jsonl",
        [
            triviaqa_row(SUNSHINE, "qw_101", ["Florida", "Florida, USA"]),
            triviaqa_row("What is the largest desert in Asia?", "qw_102", ["Gobi", "Gobi Desert"]),
        ],
    )


@pytest.mark.parametrize("inputs", TRIVIA_TEMPLATED, ids=[f"template{i + 1}" for i in range(10)])
def test_triviaqa_filter_recognises_each_flan_template(inputs, triviaqa_file):
    filt = overlap.load_filter("triviaqa", overlap.hub_source("triviaqa"), triviaqa_file)
    item = Item(DataSource.FLAN, "t", "trivia_qa_10templates", TaskFamily.FREE_TEXT, inputs, "florida")
    assert filt.match(item) == "text"
    other = Item(
        DataSource.FLAN,
        "u",
        "trivia_qa_10templates",
        TaskFamily.FREE_TEXT,
        inputs.replace("Sunshine", "Lone Star"),
        "texas",
    )
    assert filt.match(other) is None


def test_triviaqa_filter_removes_all_ten_templates_in_a_build(tmp_path, triviaqa_file):
    controls = [
        {
            "inputs": "Please answer this question: Which U.S. state is known as the Lone Star State?",
            "targets": "texas",
            "task": "trivia_qa_10templates",
        },
        FLAN_ROWS[6],  # anli with options
        FLAN_ROWS[10],  # math_dataset
    ]
    rows = [{"inputs": t, "targets": "florida", "task": "trivia_qa_10templates"} for t in TRIVIA_TEMPLATED]
    m = build_with(tmp_path, flan=write_jsonl(tmp_path / "flan.jsonl", rows + controls), triviaqa=triviaqa_file)
    assert m["filters"]["triviaqa"]["removed"] == 10 and m["available_after_filters"]["flan"] == 3
    flan_questions = {r["extra_info"]["question"] for r in output_rows(tmp_path) if r["data_source"] == "flan"}
    assert flan_questions == {c["inputs"] for c in controls}


# --- PubMedQA overlap: PubMed id and text ---


def pubmedqa_row(pubid: int, question: str, decision: str) -> dict:
    """A ``qiaojin/PubMedQA`` pqa_labeled row (``context`` a dict of parallel lists, as the hub serves it)."""
    return {
        "pubid": pubid,
        "question": question,
        "context": {
            "contexts": ["We studied 120 adults.", "Outcomes improved."],
            "labels": ["METHODS", "RESULTS"],
            "meshes": ["Humans", "Adult"],
            "reasoning_required_pred": [decision],
            "reasoning_free_pred": [decision],
        },
        "long_answer": "The data suggest so.",
        "final_decision": decision,
    }


def ultramedical_pubmedqa(pmid: int, question: str, options: tuple[str, ...] = ("yes", "no", "maybe")) -> dict:
    """An UltraMedical PubMedQA item: id ``PubMedQA,<pmid>``, type ``Literature``, the abstract as ``Context:``
    lines, the question, lettered options (yes / no / maybe or yes / maybe / no)."""
    human = (
        "Context: We studied 120 adults over two years.\nContext: Outcomes improved in the treated group.\n"
        f"{question}\n\n" + "\n".join(f"{letter}. {o}" for letter, o in zip("ABC", options))
    )
    return {
        "id": f"PubMedQA,{pmid}",
        "type": "Literature",
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": "So, the answer is A."}],
        "answer": "A",
        "score": "This question would be rated a 6.",
    }


def medqa(n: int) -> dict:
    return {
        "id": f"MedQA,{n}",
        "type": "Exam",
        "conversations": [
            {
                "from": "human",
                "value": f"Case {n}: which bone forms the heel?\n\nA. Talus\nB. Calcaneus\nC. Navicular\nD. Cuboid",
            },
            {"from": "gpt", "value": "So, the answer is B."},
        ],
        "answer": "B",
        "score": "This question would be rated a 3.",
    }


def test_pubmedqa_filter_matches_pubmed_ids_and_text(tmp_path):
    um = write_jsonl(
        tmp_path / "ultramedical.jsonl",
        [
            medqa(1),
            medqa(2),
            medqa(3),
            # same PubMed id, UltraMedical words the question differently: matched by id only
            ultramedical_pubmedqa(21645374, "Does daily walking lower blood pressure in older adults?"),
            # same id and same question
            ultramedical_pubmedqa(
                19267237,
                "Is visceral fat a risk factor for pancreatic fistula after gastrectomy?",
                ("yes", "maybe", "no"),
            ),
            # another id, a test question's text: matched by text only
            ultramedical_pubmedqa(22808261, "Does music therapy improve mood after stroke?"),
            # neither
            ultramedical_pubmedqa(12655438, "Is ET-18-O-CH3 growth suppression mediated by inhibition of cytokinesis?"),
        ],
    )
    pubmedqa = write_jsonl(
        tmp_path / "pubmedqa.jsonl",
        [
            pubmedqa_row(21645374, "Is daily walking associated with lower blood pressure in the elderly?", "yes"),
            pubmedqa_row(19267237, "Is visceral fat a risk factor for pancreatic fistula after gastrectomy?", "yes"),
            pubmedqa_row(10808977, "Does music therapy improve mood after stroke?", "maybe"),
        ],
    )
    m = build_with(tmp_path, ultramedical=um, pubmedqa=pubmedqa)
    report = m["filters"]["pubmedqa"]
    assert sorted(report["removed_ids"]) == ["PubMedQA,19267237", "PubMedQA,21645374", "PubMedQA,22808261"]
    assert report["removed_by"] == {"text": 1, "id": 1, "id_and_text": 1}
    assert (report["keys"], report["questions"], report["ids"]) == (["text", "id"], 3, 3)
    assert m["per_source"]["ultramedical"] == {"read": 7, "kept": 4, "dropped": {"overlap:pubmedqa": 3}}


def test_pubmed_id_of_ultramedical_ids():
    assert ultramedical.pubmed_id("PubMedQA,20804554") == "20804554"
    assert ultramedical.pubmed_id("MedQA,1592") is None
    assert ultramedical.pubmed_id("MedQA-Evol,9986-synthetic-4") is None


# --- AlignX: the user is part of the item ---


def alignx_row(
    demographic: str,
    ugc: list[tuple[str, str]],
    pairwise: list[tuple[str, str, str]],
    post: str = "What should I cook tonight?",
    chosen: str = "A lentil curry with rice.",
    rejected: str = "A double bacon cheeseburger.",
) -> dict:
    """One AlignX row, fields as the AlignX README lists them."""
    return {
        "prompt": post,
        "chosen": chosen,
        "rejected": rejected,
        "Preference Direction": DIRECTION,
        "Demographic Information": demographic,
        "User-Generated Content": [{"prompt": p, "comment": c, "Preference Direction": DIRECTION} for p, c in ugc],
        "Pair-wise Comparative Feedback": [
            {"prompt": p, "chosen": c, "rejected": r, "Preference Direction": DIRECTION} for p, c, r in pairwise
        ],
    }


def test_alignx_users_sharing_a_pair_are_distinct_items(tmp_path):
    vegetarian = alignx_row("A 34-year-old vegetarian teacher.", [("Meatless Mondays?", "Every day for me.")], [])
    rows = [
        vegetarian,
        alignx_row(
            "A 51-year-old long-distance cyclist.", [], [("Snack for a ride?", "Dates and nuts.", "A chocolate bar.")]
        ),
        alignx_row("", [("Budget meals?", "Beans, always beans.")], []),
        vegetarian,  # the same user again: a true duplicate
    ]
    loaded = alignx.load(alignx.spec(write_jsonl(tmp_path / "alignx.jsonl", rows)), seed=0)
    assert [it.persona for it in loaded.items] == [
        'A 34-year-old vegetarian teacher. Things I wrote: on "Meatless Mondays?" I commented "Every day for me."',
        'A 51-year-old long-distance cyclist. Responses I preferred: to "Snack for a ride?", "Dates and nuts." over '
        '"A chocolate bar."',
        'a user. Things I wrote: on "Budget meals?" I commented "Beans, always beans."',
    ]
    assert len({it.source_id for it in loaded.items}) == 3
    assert {it.choices for it in loaded.items} == {
        ("A lentil curry with rice.", "A double bacon cheeseburger."),
        ("A double bacon cheeseburger.", "A lentil curry with rice."),
    }
    assert loaded.skipped.as_dict() == {"duplicate_id": 1}


def test_alignx_rows_with_only_pairwise_feedback(tmp_path):
    """The authors' AlignX-format benchmark files (P-Soups) carry only the pairwise feedback (plus fields of
    their own): the absent persona fields are empty, not an error."""
    row = alignx_row("", [], [("Explain rain.", "Clouds get heavy and drop water.", "Condensation nuclei...")])
    del row["Demographic Information"], row["User-Generated Content"]
    row["profile"] = "Young, High Openness"
    loaded = alignx.load(alignx.spec(write_jsonl(tmp_path / "alignx.jsonl", [row])), seed=0)
    assert [it.persona for it in loaded.items] == [
        'a user. Responses I preferred: to "Explain rain.", "Clouds get heavy and drop water." over '
        '"Condensation nuclei..."'
    ]
    assert loaded.skipped.as_dict() == {}


# --- AlignX: a malformed row is skipped, counted and named (or stops the load with --strict) ---


def alignx_with_bad_rows(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in rl_sample_paths()["alignx"].read_text().splitlines()]
    null_comment = alignx_row("A night-shift nurse.", [], [])
    null_comment["User-Generated Content"] = [
        {"prompt": "Sleep tips?", "comment": None, "Preference Direction": DIRECTION}
    ]
    null_prompt = alignx_row("A retired pilot.", [], [("Window or aisle?", "Window.", "Aisle.")])
    null_prompt["Pair-wise Comparative Feedback"][0]["prompt"] = None
    return write_jsonl(tmp_path / "alignx.jsonl", rows[:2] + [null_comment] + rows[2:] + [null_prompt])


def test_alignx_bad_rows_are_skipped_counted_and_logged(tmp_path, caplog):
    path = alignx_with_bad_rows(tmp_path)
    with caplog.at_level(logging.WARNING, logger="verl_personadual.data.common"):
        loaded = alignx.load(alignx.spec(path), seed=0)
    assert loaded.rows_read == 9 and len(loaded.items) == 6
    assert loaded.skipped.as_dict() == {
        "bad_row:Pair-wise Comparative Feedback.prompt": 1,
        "bad_row:User-Generated Content.comment": 1,
        "empty_persona": 1,
    }
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped bad row: {path}, line 3, field 'User-Generated Content[0].comment': missing or not a str",
        f"skipped bad row: {path}, line 9, field 'Pair-wise Comparative Feedback[0].prompt': missing or not a str",
    ]
    with pytest.raises(SchemaError, match=rf"^{path}, line 3, field 'User-Generated Content\[0\]\.comment'"):
        alignx.load(alignx.spec(path), seed=0, strict=True)


def test_alignx_bad_rows_in_the_build_and_strict_cli(tmp_path, capsys):
    path = alignx_with_bad_rows(tmp_path)
    args = ["--samples", "--alignx", str(path), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "lenient")]) == 0
    m = json.loads((tmp_path / "lenient" / "manifest.json").read_text())
    assert m["per_source"]["alignx"] == {
        "read": 9,
        "kept": 6,
        "dropped": {
            "bad_row:Pair-wise Comparative Feedback.prompt": 1,
            "bad_row:User-Generated Content.comment": 1,
            "empty_persona": 1,
        },
    }
    capsys.readouterr()
    assert main(args + ["--strict", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: {path}, line 3, field 'User-Generated Content[0].comment': missing or not a str"
    assert not (tmp_path / "strict" / "train.parquet").exists()


# --- UltraMedical's type values ---


def test_ultramedical_types(tmp_path):
    exam = medqa(7)
    literature = ultramedical_pubmedqa(20804554, "Does phosphorylation regulate degradation of TDP-43 fragments?")
    open_end = {
        "id": "MedQuad,8747",
        "type": "Open-End",
        "conversations": [
            {"from": "human", "value": "What are the treatments for Mowat-Wilson syndrome ?"},
            {"from": "gpt", "value": "Treatment is supportive..."},
        ],
        "answer": "These resources address the diagnosis or management of Mowat-Wilson syndrome.",
        "score": "This question would be rated a 4.",
    }
    wiki = dict(open_end, id="WikiInstruct,11671", answer=None)
    # an Open-End item that happens to end with a lettered list and a one-letter answer is still open-ended
    lettered = dict(
        open_end,
        id="ChatDoctor,6844",
        answer="B",
        conversations=[
            {"from": "human", "value": "My doctor offered two plans:\n\nA. surgery now\nB. physiotherapy first"},
            {"from": "gpt", "value": "Hi, thanks for writing in..."},
        ],
    )
    no_block = dict(
        exam,
        id="TextBookQA,Anatomy_Gray_3",
        conversations=[
            {"from": "human", "value": "Which bone forms the heel: (A) talus or (B) calcaneus?"},
            {"from": "gpt", "value": "So, the answer is B."},
        ],
    )
    mc = dict(exam, id="MedQA,8", type="mc")  # the README's example value, not one the data uses
    path = write_jsonl(tmp_path / "u.jsonl", [exam, literature, open_end, wiki, lettered, no_block, mc])
    loaded = ultramedical.load(ultramedical.spec(path))
    assert [(it.source_id, it.task, it.gold) for it in loaded.items] == [
        ("MedQA,7", "MedQA", "B"),
        ("PubMedQA,20804554", "PubMedQA", "A"),
    ]
    assert loaded.skipped.as_dict() == {"no_options": 1, "open_ended": 3, "unknown_type": 1}
    assert ultramedical.TYPES == ("Exam", "Literature", "Open-End")


# --- a pinned revision that is a loading script ---


@pytest.fixture
def script_repo(tmp_path) -> Path:
    """A dataset directory whose only content is a loading script, as the hub's FLAN repo was before its parquet
    conversion: ``datasets`` (>= 4) refuses it with RuntimeError."""
    repo = tmp_path / "flan_script_revision"
    repo.mkdir()
    (repo / "flan_script_revision.py").write_text("import datasets\n")
    return repo


def test_script_revision_is_one_user_error(script_repo):
    with pytest.raises(SourceUnavailableError) as info:
        list(iter_records(SourceSpec(str(script_repo), None, "train", revision="0123abcd")))
    assert isinstance(info.value, UserError)
    assert str(info.value).startswith(
        f"cannot load {script_repo}[default/train] at revision 0123abcd: that revision is a dataset loading script, "
        "which datasets "
    )
    assert "Dataset scripts are no longer supported" in str(info.value)


def test_script_revision_cli(script_repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(flan, "HUB_ID", str(script_repo))
    local = {name: str(path) for name, path in rl_sample_paths().items() if name != "flan"}
    args = [arg for name, path in local.items() for arg in (f"--{name}", path)]
    status = main(
        args
        + [
            "--revision",
            "flan=0123abcd",
            "--aligned-personas",
            "offline-template",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert status == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: cannot load {script_repo}[default/train] at revision 0123abcd: that revision")
