"""The toy Table 1 command (``python -m verl_personadual.toy_table``): its data (the persona-following base's SFT rows,
the calibration set), its seeds, and how it lays the runs out for ``eval compare``.

The whole command trains 5 seeds x (2 SFT + 4 RL runs), over an hour on 2 cores, so it is not run here; the
README's table comes from it. What compare makes of such runs is tested in tests/eval/test_toy_table.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from verl_personadual.apps.quickstart.stages import EVAL_MAX_NEW_TOKENS, Quickstart, StageError, seed_overrides
from verl_personadual.apps.toy_table import TABLE_TASK, ToyTable, lines
from verl_personadual.data import toy
from verl_personadual.eval.systems import ToyContext

MISLEADING = toy.ToyItem("toy:x", toy.ToyKind.MISLEADING, "fruit", "mango", "good", "true", "false", None, "pilot")


def test_the_base_is_taught_to_follow_any_persona_without_a_mode_prefix():
    row = toy.base_sft_row(MISLEADING, 3, "train")
    user, answer = row["messages"]
    assert user["role"] == "user" and user["content"].startswith(
        "I am a pilot who says false. My question is:\n\nIs mango a good fruit? The book says true.\n\n"
    )
    # the persona's (wrong) verdict, as the personalized rule answers; no [General_mode] / [Personalized_mode]
    assert answer == {"role": "assistant", "content": '{"answer": "false"}'}
    assert row["extra_info"]["ground_truth"] == "true" and row["extra_info"]["task"] == "misleading"
    assert "mode" not in row["extra_info"]


def test_base_sft_file_has_one_row_per_sft_item(tmp_path: Path):
    sizes = toy.ToySizes(sft=40, rl=8, rl_val=4, eval=20)
    manifest = toy.build(tmp_path, sizes)
    assert toy.build_base_sft(tmp_path, sizes) == 40 == manifest["sft_rows"] // 2
    base = pq.read_table(tmp_path / "sft_base" / "train.parquet").to_pylist()
    dual = pq.read_table(tmp_path / "sft" / "train.parquet").to_pylist()
    # the same items, in the same order, as the dual-mode file's personalized rows, with the prefix dropped
    personalized = [r for r in dual if r["extra_info"]["mode"] == "personalized"]
    assert [r["extra_info"]["source_id"] for r in base] == [r["extra_info"]["source_id"] for r in personalized]
    for b, p in zip(base, personalized):
        assert p["messages"][1]["content"] == "[Personalized_mode]" + b["messages"][1]["content"]


def test_the_calibration_set_shares_no_item_with_the_test_set(tmp_path: Path):
    first = toy.generate(toy.ToySizes(sft=0, rl=0, rl_val=0, eval=50), seed=1)["eval"]
    excluded = [first[0].item_id, first[1].item_id, "toy:not-there"]
    kinds = toy.build_calibration(tmp_path / "calib.jsonl", excluded, items=50, seed=1)
    rows = [json.loads(line) for line in (tmp_path / "calib.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [it.item_id for it in first[2:]]
    assert sum(kinds.values()) == 48 and set(kinds) <= set(toy.KINDS)


def test_seed_overrides_name_every_seed_of_the_stage():
    assert seed_overrides("sft", 2) == ["trainer.seed=2", "engine.seed=2"]
    assert seed_overrides("rl", 3) == [
        "data.seed=3",
        "actor_rollout_ref.actor.data_loader_seed=3",
        "actor_rollout_ref.rollout.seed=3",
    ]


def test_an_out_made_with_another_seed_is_refused(tmp_path: Path):
    out = tmp_path / "qs"
    (out / "stages").mkdir(parents=True)
    (out / "stages" / "model.json").write_text(json.dumps({"dir": "x", "spec": {}, "seed": 2}))
    with pytest.raises(StageError) as err:
        Quickstart(out, ["none"], progress=False, seed=3).run_all()
    assert str(err.value) == f"--out {out} was made with --seed 2, not 3: use another --out, or that seed"


def test_every_line_of_the_issue_is_laid_out_per_seed_for_compare(tmp_path: Path):
    assert [line.label for line in lines()] == [
        "Backbone (persona-following base)",
        "PersonaDual-Prompt (on PersonaDual-SFT)",
        "PersonaDual-Router (on PersonaDual-SFT)",
        "PersonaDual-SFT",
        "PersonaDual (DualGRPO)",
        "w/o DualAdv",
        "w/o DualAdv + PfxSmp",
        "plain GRPO",
        "FPPS-H (on the base)",
        "FPPS-S (on the base)",
        "FPPS-M (on the base)",
    ]
    table = ToyTable(tmp_path / "t", [4, 5], progress=False)
    for seed in (4, 5):
        for line in lines():
            (tmp_path / "t" / f"seed_{seed}" / line.run).mkdir(parents=True)
    args = table.link_systems()
    assert args[:2] == ["--system", f"base:Backbone (persona-following base)={tmp_path / 't' / 'systems' / 'base'}"]
    assert args[-1] == f"fpps_m:FPPS-M (on the base)={tmp_path / 't' / 'systems' / 'fpps_m'}"
    link = tmp_path / "t" / "systems" / "rl-grpo" / "seed_5"
    assert link.is_symlink() and str(link.readlink()) == "../../seed_5/eval/rl-grpo"
    assert table.link_systems() == args  # a rerun replaces its links
    (tmp_path / "t" / "seed_5" / "eval" / "fpps_s").rmdir()
    with pytest.raises(StageError, match=r"eval/fpps_s: no such run \(a step of seed 5 did not finish\)$"):
        table.link_systems()


def test_the_table_builds_the_relational_toy_with_its_sft_mix(tmp_path: Path):
    from transformers import AutoTokenizer

    qs = ToyTable(tmp_path / "t", [7], progress=False).quickstart(7)
    info = qs.build_data()
    manifest = json.loads((qs.data / "manifest.json").read_text())
    assert manifest["variant"] == "relational" and manifest["sizes"]["sft"] == 3200
    assert manifest["sft_personalized_share"] == {"none": 0.2, "misleading": 0.2, "helpful": 0.2, "agreeing": 0.2}
    assert info["sft_rows"] == 3200 and info["toy"] == {
        "variant": "relational",
        "sizes": {"sft": 3200, "rl": 1024, "rl_val": 64, "eval": 200},
        "personalized_share": {"none": 0.2, "misleading": 0.2, "helpful": 0.2, "agreeing": 0.2},
    }
    dual = pq.read_table(qs.data / "sft" / "train.parquet").to_pylist()
    assert sum(r["extra_info"]["mode"] == "personalized" for r in dual) == 640  # 96 + 224 + 224 + 96
    # the persona-following base is taught the same 3,200 items, one row each
    assert toy.build_base_sft(qs.data, TABLE_TASK.sizes, 0, TABLE_TASK.variant) == 3200
    base = pq.read_table(qs.data / "sft_base" / "train.parquet").to_pylist()
    assert [r["extra_info"]["source_id"] for r in base] == [r["extra_info"]["source_id"] for r in dual]
    # the tiny model's tokenizer keeps each of the eight domain words (and so a persona's domain) one token
    qs.build_model()
    tokenizer = AutoTokenizer.from_pretrained(qs.model)
    for domain in sorted(toy.RELATIONAL_DOMAINS):
        assert len(tokenizer.encode(f"I am a {domain} seller who says true.", add_special_tokens=False)) == len(
            tokenizer.encode("I am a fruit seller who says true.", add_special_tokens=False)
        ), domain


def test_an_out_holding_another_toy_is_refused(tmp_path: Path):
    out = tmp_path / "t" / "seed_1"
    (out / "stages").mkdir(parents=True)
    # a data marker written before the toy could be chosen: the quickstart's default toy
    (out / "stages" / "data.json").write_text(json.dumps({"dir": "x", "sft_rows": 3200}))
    with pytest.raises(StageError) as err:
        ToyTable(tmp_path / "t", [1], progress=False).quickstart(1).run_all()
    assert str(err.value).startswith(f"--out {out} holds another toy task (") and str(err.value).endswith(
        '"personalized_share": {"agreeing": 0.2, "helpful": 0.2, "misleading": 0.2, "none": 0.2}, '
        '"sizes": {"eval": 200, "rl": 1024, "rl_val": 64, "sft": 3200}, "variant": "relational"}): use another --out'
    )
    assert '"personalized_share": null' in str(err.value) and '"variant": "occupations"' in str(err.value)


def test_each_seed_runs_the_toy_members_steps_after_the_base(tmp_path: Path):
    """The eval steps of one seed, as the toy table ran them before the systems registry: the FPPS fit once, then
    the three FPPS runs on the base with its artifact, then the router's and the prompt's runs on the SFT model."""
    out, test, cal = tmp_path / "seed_4", tmp_path / "test.jsonl", tmp_path / "cal.jsonl"
    ctx = ToyContext(4, out, test, cal, "BASE", "SFT", EVAL_MAX_NEW_TOKENS, 64)
    listed = ToyTable(tmp_path, [4], progress=False).eval_steps(ctx)
    steps = dict(listed)
    assert [name for name, _ in listed] == [
        "eval-base",
        "fpps-fit",
        "eval-fpps_h",
        "eval-fpps_s",
        "eval-fpps_m",
        "eval-router-calibration",
        "router",
        "eval-router",
        "eval-prompt",
    ]
    n = str(EVAL_MAX_NEW_TOKENS)
    assert steps["fpps-fit"] == [
        *("fpps-fit", "--model", "BASE", "--eval-set", str(cal), "--test-eval-set", str(test)),
        *("--out", str(out / "fpps"), "--seed", "4", "--max-new-tokens", n, "--personalized", "task=helpful"),
        *("--device", "cpu", "--dtype", "float32", "--batch-size", "64"),
    ]
    assert steps["eval-fpps_s"] == [
        *("run", "--model", "BASE", "--benchmarks", "toy", "--eval-set", str(test), "--backend", "hf"),
        *("--device", "cpu", "--dtype", "float32", "--batch-size", "64", "--max-new-tokens", n),
        *("--out", str(out / "eval/fpps_s"), "--system", "fpps_s", "--fpps", str(out / "fpps"), "--no-progress"),
    ]
    assert steps["eval-prompt"][:3] == ["run", "--model", "SFT"]
