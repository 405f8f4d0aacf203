"""The RL data pipeline end to end on the shipped samples: exact rows, reproducibility, verl's RLHFDataset, and
aligned personas from a local OpenAI-protocol server (cache, retries, garbage replies, kill + resume)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai_server import OpenAITestServer

from verl_personadual.apps import build_rl as build_rl_app
from verl_personadual.core import names
from verl_personadual.core.prompts import build_prompt
from verl_personadual.data import rl_rows as build_rl
from verl_personadual.data.personas import AlignedMode
from verl_personadual.data.rl_rows import BuildConfig, BuildError, build
from verl_personadual.data.samples import rl_sample_paths
from verl_personadual.utils.llm import LLMConfig

REPO = Path(__file__).resolve().parents[2]

EXPECTED_TRAIN = [
    ("flan", "anli_r1_10templates:20a549cc7638", "unaligned", "personahub:d4a242edd9b6", "No"),
    ("ultramedical", "MedQA,2210", "aligned", "offline-template:ultramedical", "E"),
    ("flan", "anli_r1_10templates:001eef70658d", "aligned", "offline-template:flan", "It's impossible to say"),
    ("flan", "trivia_qa_10templates:7b63f95dbdf8", "unaligned", "personahub:19915f571274", "Japan"),
    ("ultramedical", "PubMedQA,1002", "unaligned", "personahub:64ceb48f7e54", "B"),
    ("ultramedical", "MedMCQA,123", "unaligned", "personahub:df2997da4d4f", "B"),
    ("flan", "math_dataset_10templates:919652d894e8", "aligned", "offline-template:flan/math", "7"),
    ("flan", "natural_questions_10templates:3ce3ad8d5a9f", "unaligned", "personahub:581bd63035b8", "four"),
    ("flan", "bool_q_10templates:32185c1e5d0b", "unaligned", "personahub:c40fe01989ca", "yes"),
    ("ultramedical", "MedQA,1592", "unaligned", "personahub:f339ca1d8d55", "C"),
    ("alignx", "alignx:cff5fdf1e72f", "aligned", "alignx-user:87d4e7461156", "A"),
    ("ultramedical", "MedQA-Evol,9986-synthetic-4", "aligned", "offline-template:ultramedical", "D"),
    ("alignx", "alignx:b5fe331e80c9", "aligned", "alignx-user:9a53d2edddb1", "A"),
    ("ultramedical", "MedMCQA,7788", "aligned", "offline-template:ultramedical", "A"),
    ("alignx", "alignx:451967daa492", "aligned", "alignx-user:da1cd860f62d", "B"),
    ("flan", "trivia_qa_10templates:c134999de133", "aligned", "offline-template:flan", "Herman Melville"),
    ("flan", "math_dataset_10templates:c39f3b0fab2e", "unaligned", "personahub:2578be82a362", "4"),
    ("flan", "bool_q_10templates:299d737a9818", "aligned", "offline-template:flan", "no"),
    ("alignx", "alignx:c3f018ab340d", "aligned", "alignx-user:6bf06e8423a0", "B"),
    ("flan", "natural_questions_10templates:a520891c7e19", "aligned", "offline-template:flan", "Canberra"),
]
EXPECTED_VAL = [
    ("alignx", "alignx:c5bbcaf19a0d", "aligned", "alignx-user:3b07ce64c022", "B"),
    ("flan", "anli_r1_10templates:d1e9843ff7ce", "aligned", "offline-template:flan", "Yes"),
    ("alignx", "alignx:eed079814243", "aligned", "alignx-user:407b6f55a223", "B"),
    ("ultramedical", "MedQA,3045", "unaligned", "personahub:181f7fd2756e", "A"),
    ("flan", "bool_q_10templates:fb3ebe36a8e2", "unaligned", "personahub:ed2e5ed5c95b", "no"),
    ("ultramedical", "MedMCQA,4521", "aligned", "offline-template:ultramedical", "D"),
    ("flan", "math_dataset_10templates:ef5b23f24bb0", "aligned", "offline-template:flan/math", "56"),
    ("flan", "natural_questions_10templates:bf6fb48fe4c9", "unaligned", "personahub:864f133fbe44", "Michelangelo"),
]


def summary(rows: list[dict]) -> list[tuple[str, ...]]:
    return [
        (
            r["data_source"],
            r["extra_info"]["source_id"],
            r["extra_info"]["persona_setting"],
            r["extra_info"]["persona_id"],
            r["reward_model"]["ground_truth"],
        )
        for r in rows
    ]


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def offline_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rl_offline")
    assert build_rl_app.main(["--samples", "--out", str(out), "--no-progress"]) == 0
    return out


def test_sample_rows_exact(offline_out):
    train, val = read(offline_out / "train.parquet"), read(offline_out / "validation.parquet")
    assert summary(train) == EXPECTED_TRAIN
    assert summary(val) == EXPECTED_VAL
    assert [r["extra_info"]["index"] for r in train] == list(range(20))
    assert {r["agent_name"] for r in train} == {names.AGENT_LOOP_FORCED}
    assert {r["agent_name"] for r in val} == {names.AGENT_LOOP_FREE}
    assert not {r["extra_info"]["source_id"] for r in train} & {r["extra_info"]["source_id"] for r in val}

    medqa = next(r for r in train if r["extra_info"]["source_id"] == "MedQA,1592")
    assert medqa["prompt"] == [
        {
            "role": "user",
            "content": "I am a librarian who organizes community chess tournaments. My question is:\n\n"
            "A 24-year-old woman presents with fatigue and pallor. Her hemoglobin is 9.1 g/dL with a low mean "
            "corpuscular volume and low ferritin. Which is the most appropriate initial treatment?\n\n"
            "A. Intramuscular vitamin B12\nB. Folic acid\nC. Oral ferrous sulfate\nD. Blood transfusion\n\n"
            "Reason step by step, then give your final answer on the last line as a JSON object with the key "
            '"answer": the letter of the correct option, e.g. {"answer": "B"}.',
        }
    ]
    assert medqa["reward_model"] == {"style": "rule", "ground_truth": "C"}
    assert medqa["extra_info"] == {
        "index": 9,
        "split": "train",
        "source_id": "MedQA,1592",
        "task": "MedQA",
        "task_family": "multiple_choice",
        "persona_setting": "unaligned",
        "persona_id": "personahub:f339ca1d8d55",
        "persona": "A librarian who organizes community chess tournaments.",
        "question": medqa["extra_info"]["question"],
        "choices": ["Intramuscular vitamin B12", "Folic acid", "Oral ferrous sulfate", "Blood transfusion"],
    }
    # Every prompt is exactly what the one prompt module builds from the row's own fields.
    for r in train + val:
        e = r["extra_info"]
        assert r["prompt"] == build_prompt(e["question"], e["task_family"], e["persona"])


def test_alignx_rows_exact(offline_out):
    rows = read(offline_out / "train.parquet")
    cat = next(r for r in rows if r["extra_info"]["source_id"] == "alignx:c3f018ab340d")
    assert cat["prompt"][0]["content"] == (
        "I am a 45-year-old nurse working long shifts in a small apartment. My question is:\n\n"
        "Should I get a dog or a cat?\n\nHere are two responses to this. Which one would you prefer?\n\n"
        "Response A:\nA border collie: needs hours of exercise daily.\n\n"
        "Response B:\nA cat: independent, fine alone during long workdays.\n\n"
        "Reason step by step, then give your final answer on the last line as a JSON object with the key "
        '"answer": the letter of the response you prefer, e.g. {"answer": "A"}.'
    )
    assert cat["extra_info"]["choices"] == [
        "A border collie: needs hours of exercise daily.",
        "A cat: independent, fine alone during long workdays.",
    ]
    books = next(r for r in rows if r["extra_info"]["source_id"] == "alignx:cff5fdf1e72f")
    assert books["extra_info"]["persona"] == (
        'a user. Things I wrote: on "Favourite books of the year?" I commented "Anything set in Tudor England."; '
        'on "Audiobooks or print?" I commented "Print, with tea."'
    )
    assert books["reward_model"]["ground_truth"] == "A"
    assert books["extra_info"]["choices"][0] == "Try a long historical novel like Wolf Hall."


def test_manifest(offline_out):
    m = json.loads((offline_out / "manifest.json").read_text())
    assert m["counts"] == {
        "train": {
            "alignx": {"aligned": 4},
            "flan": {"aligned": 5, "unaligned": 5},
            "ultramedical": {"aligned": 3, "unaligned": 3},
        },
        "validation": {
            "alignx": {"aligned": 2},
            "flan": {"aligned": 2, "unaligned": 2},
            "ultramedical": {"aligned": 1, "unaligned": 1},
        },
    }
    assert m["skipped"] == {
        "ultramedical": {"duplicate_id": 1, "open_ended": 2},
        "flan": {"duplicate_id": 1, "gold_not_in_options": 1, "ungradable_no_options": 1},
        "alignx": {"empty_persona": 1},
        "personahub": {"duplicate_persona": 1, "empty_persona": 1},
    }
    assert m["per_source"] == {
        "ultramedical": {
            "read": 14,
            "kept": 10,
            "dropped": {"duplicate_id": 1, "open_ended": 2, "overlap:pubmedqa": 1},
        },
        "flan": {
            "read": 21,
            "kept": 16,
            "dropped": {"duplicate_id": 1, "gold_not_in_options": 1, "ungradable_no_options": 1, "overlap:triviaqa": 2},
        },
        "alignx": {"read": 7, "kept": 6, "dropped": {"empty_persona": 1}},
    }
    pubmedqa, triviaqa = m["filters"]["pubmedqa"], m["filters"]["triviaqa"]
    assert pubmedqa["ran"] and pubmedqa["removed_ids"] == ["PubMedQA,1001"]
    assert pubmedqa["removed_by"] == {"text": 0, "id": 0, "id_and_text": 1}  # pubid 1001, the same question
    assert triviaqa["removed"] == 2 and triviaqa["removed_by"] == {"text": 2}
    assert m["available_after_filters"] == {"ultramedical": 10, "flan": 16, "alignx": 6, "personahub": 12}
    assert m["aligned_personas"] == {"mode": "offline-template", "items": 11}
    sha = hashlib.sha256((offline_out / "train.parquet").read_bytes()).hexdigest()
    assert m["outputs"]["train"]["sha256"] == sha and m["outputs"]["train"]["rows"] == 20
    assert m["sources"]["ultramedical"]["file"].endswith("samples/ultramedical.jsonl")


def test_reproducible_byte_for_byte(offline_out, tmp_path):
    assert build_rl_app.main(["--samples", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    for split in ("train", "validation"):
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (offline_out / f"{split}.parquet").read_bytes()
    assert build_rl_app.main(["--samples", "--seed", "1", "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert summary(read(tmp_path / "b" / "train.parquet")) != EXPECTED_TRAIN


def test_verl_rlhf_dataset_loads_and_collates(offline_out, tokenizer, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    cfg = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 4096,
            "filter_overlong_prompts": True,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    for split, n, agent in (("train", 20, names.AGENT_LOOP_FORCED), ("validation", 8, names.AGENT_LOOP_FREE)):
        ds = RLHFDataset(data_files=str(offline_out / f"{split}.parquet"), tokenizer=tokenizer, config=cfg)
        assert len(ds) == n
        batch = collate_fn([ds[i] for i in range(4)])
        assert list(batch["data_source"]) == [
            row[0] for row in (EXPECTED_TRAIN if split == "train" else EXPECTED_VAL)[:4]
        ]
        assert list(batch["agent_name"]) == [agent] * 4
        assert batch["reward_model"][1]["ground_truth"] == (EXPECTED_TRAIN if split == "train" else EXPECTED_VAL)[1][4]
        assert batch["extra_info"][0]["index"] == 0 and batch["extra_info"][0]["split"] == split
        assert batch["raw_prompt"][0][0]["role"] == "user"


def test_cli_help_and_missing_endpoint(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:
        build_rl_app.main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--samples" in help_text and "offline-template" in help_text and "manifest" in help_text
    monkeypatch.delenv("PERSONADUAL_LLM_BASE_URL", raising=False)
    code = build_rl_app.main(["--samples", "--aligned-personas", "llm", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "error: --aligned-personas llm needs an LLM endpoint: set PERSONADUAL_LLM_BASE_URL and PERSONADUAL_LLM_MODEL "
        "(or --llm-base-url / --llm-model), or pass --aligned-personas offline-template"
    )
    assert not (tmp_path / "train.parquet").exists()


# --- aligned personas from a local OpenAI-protocol server ---


def persona_reply(body: dict) -> str:
    """A deterministic persona per question (the question is inside the generation prompt)."""
    digest = hashlib.sha1(body["messages"][-1]["content"].encode()).hexdigest()[:6]
    return json.dumps({"persona": f"A specialist number {digest} with relevant experience."})


def llm_config(srv: OpenAITestServer, cache: Path, **kw) -> BuildConfig:
    return BuildConfig(
        out_dir=kw.pop("out"),
        paths=rl_sample_paths(),
        train_counts=dict(build_rl.SAMPLE_TRAIN_COUNTS),
        val_counts=dict(build_rl.SAMPLE_VAL_COUNTS),
        aligned=AlignedMode.LLM,
        llm=LLMConfig(base_url=srv.base_url, model="persona-model", cache_dir=cache, backoff_base_s=0.01, **kw),
        progress=False,
    )


def test_llm_personas_cached_second_run_sends_nothing(tmp_path):
    with OpenAITestServer(reply=persona_reply) as srv:
        m1 = build(llm_config(srv, tmp_path / "cache", out=tmp_path / "r1"))
        assert srv.requests == 11
        assert m1["aligned_personas"]["requests_made"] == 11 and m1["aligned_personas"]["served_from_cache"] == 0
        m2 = build(llm_config(srv, tmp_path / "cache", out=tmp_path / "r2"))
        assert srv.requests == 11
        assert m2["aligned_personas"]["requests_made"] == 0 and m2["aligned_personas"]["served_from_cache"] == 11
    assert (tmp_path / "r1" / "train.parquet").read_bytes() == (tmp_path / "r2" / "train.parquet").read_bytes()
    rows = read(tmp_path / "r1" / "train.parquet") + read(tmp_path / "r1" / "validation.parquet")
    generated = [r for r in rows if r["extra_info"]["persona_id"].startswith("aligned:")]
    assert len(generated) == 11
    for r in generated:
        assert r["extra_info"]["persona_setting"] == "aligned"
        assert r["prompt"][0]["content"].startswith("I am a specialist number ")
    # Same items and personas elsewhere as in the offline build: only aligned persona texts differ.
    keys = [(r[1], r[2]) for r in EXPECTED_TRAIN]
    assert [(r["extra_info"]["source_id"], r["extra_info"]["persona_setting"]) for r in rows[:20]] == keys


def test_llm_429_and_timeout_retried_in_pipeline(tmp_path):
    with OpenAITestServer(reply=persona_reply, hang_s=2.5) as srv:
        srv.script(429, "timeout", 503)
        m = build(llm_config(srv, tmp_path / "cache", out=tmp_path / "out", timeout_s=1.0))
        assert srv.requests == 14
        assert m["aligned_personas"]["retries"] == 3 and m["aligned_personas"]["requests_made"] == 14


def test_llm_garbage_reply_rejected_then_resumed(tmp_path):
    state = {"bad": True}

    def reply(body: dict) -> str:
        if "Koplik" in body["messages"][-1]["content"] and state["bad"]:
            return "Sure! Here is a persona: a doctor."
        return persona_reply(body)

    with OpenAITestServer(reply=reply) as srv:
        with pytest.raises(BuildError) as info:
            build(llm_config(srv, tmp_path / "cache", out=tmp_path / "out"))
        msg = str(info.value)
        assert msg.startswith("1 of 11 aligned-persona requests failed (ultramedical MedMCQA,7788: reply rejected")
        assert 'no JSON object {"persona": ...} in the reply' in msg and "re-run to retry" in msg
        assert not (tmp_path / "out" / "train.parquet").exists()
        state["bad"] = False
        m = build(llm_config(srv, tmp_path / "cache", out=tmp_path / "out"))
        assert m["aligned_personas"]["requests_made"] == 1 and m["aligned_personas"]["served_from_cache"] == 10
        assert srv.requests == 12


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    with OpenAITestServer(reply=persona_reply, latency_s=0.15) as srv:
        cmd = [
            sys.executable,
            "-m",
            "verl_personadual.apps.build_rl",
            "--samples",
            "--aligned-personas",
            "llm",
            "--llm-base-url",
            srv.base_url,
            "--llm-model",
            "persona-model",
            "--llm-cache-dir",
            str(tmp_path / "cache"),
            "--llm-concurrency",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "killed"),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while srv.requests < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        assert proc.returncode != 0, proc.stderr.read().decode()
        cached = sum(1 for p in (tmp_path / "cache").rglob("*.json"))
        assert 3 <= cached < 11
        assert not (tmp_path / "killed" / "train.parquet").exists()
        before = srv.requests
        m = build(llm_config(srv, tmp_path / "cache", out=tmp_path / "killed"))
        assert m["aligned_personas"]["served_from_cache"] == cached
        assert m["aligned_personas"]["requests_made"] == 11 - cached == srv.requests - before
        fresh = build(llm_config(srv, tmp_path / "fresh_cache", out=tmp_path / "fresh"))
        assert fresh["aligned_personas"]["requests_made"] == 11
    for split in ("train", "validation"):
        resumed = (tmp_path / "killed" / f"{split}.parquet").read_bytes()
        assert resumed == (tmp_path / "fresh" / f"{split}.parquet").read_bytes()
    rows = read(tmp_path / "killed" / "train.parquet")
    assert len({r["extra_info"]["source_id"] for r in rows}) == len(rows) == 20


def test_rows_score_with_the_project_reward(offline_out):
    """Every row's gold is in the encoding the reward function expects: its own gold scores acc 1, a wrong
    answer acc 0."""
    import importlib

    from verl_personadual.core.prompts import format_answer

    compute_score = getattr(importlib.import_module("verl_personadual.core.rewards"), names.REWARD_FN_NAME)
    rows = read(offline_out / "train.parquet") + read(offline_out / "validation.parquet")
    for r in rows:
        gold = r["reward_model"]["ground_truth"]
        wrong = "Z" if len(gold) == 1 else "zzz unrelated"
        for answer, acc in ((gold, 1.0), (wrong, 0.0)):
            out = compute_score(r["data_source"], f"Reasoning.\n{format_answer(answer)}", gold, r["extra_info"])
            assert out["acc"] == acc, (r["extra_info"]["source_id"], answer, out)
