"""build_sft end to end on the shipped samples against the local OpenAI-protocol test server.

The server plays the expert with a fixed script per item (right / wrong / malformed / unclosed <think> reply per
mode), so
the selection of every item is asserted against the table of verl_personadual.data.sft_selection, written out here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai_server import OpenAITestServer

from verl_personadual.apps import build_rl as build_rl_app
from verl_personadual.apps import build_sft as build_sft_app
from verl_personadual.core.prompts import build_expert_request, format_answer
from verl_personadual.data import rl_rows as build_rl
from verl_personadual.data import samples
from verl_personadual.data import sft_rows as build_sft
from verl_personadual.data.personas import AlignedMode

# Per objective item: (general reply, personalized reply) -> (kept mode or None, decision). Cycled over items.
OBJECTIVE_SCRIPT = [
    (("right", "wrong"), ("general", "general_only")),
    (("wrong", "right"), ("personalized", "persona_gain")),
    (("right", "right"), ("general", "both_correct")),
    (("wrong", "wrong"), ("general", "both_wrong")),
    (("malformed", "right"), ("personalized", "persona_gain")),
    (("malformed", "wrong"), (None, "general_unusable")),
    (("fenced", "malformed"), ("general", "general_only")),
    (("think", "fenced"), ("personalized", "persona_gain")),
]
# Per AlignX item: personalized reply -> (kept mode or None, decision).
ALIGNX_SCRIPT = [
    ("right", ("personalized", "personalized_correct")),
    ("wrong", ("personalized", "personalized_wrong")),
    ("malformed", (None, "personalized_unusable")),
]
ANSWERED = {"right", "wrong", "fenced"}


def wrong_answer(row: dict) -> str:
    gold, info = row["reward_model"]["ground_truth"], row["extra_info"]
    family = info["task_family"]
    if family in ("multiple_choice", "preference"):
        return "A" if gold != "A" else "B"
    if family == "option_text":
        return next(c for c in info["choices"] if c.lower() != gold.lower())
    return "-1" if family == "math" else "Nowhere"


def reply_text(row: dict, mode: str, kind: str) -> str:
    sid = row["extra_info"]["source_id"]
    answer = row["reward_model"]["ground_truth"] if kind in ("right", "fenced") else wrong_answer(row)
    if kind == "right" or kind == "wrong":
        return f"{mode} view of {sid}.\n{format_answer(answer)}"
    if kind == "fenced":
        return f"{mode} view of {sid}.\n```json\n{format_answer(answer)}\n```"
    if kind == "think":  # cut off while thinking: the think block never closes
        return f"<think>{mode} view of {sid}.\n{format_answer(answer)}"
    return f"{mode} rambling about {sid}.\nNo idea {{"


@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory) -> list[dict]:
    """The RL rows of the SFT samples (same files, seed and counts as build_sft --samples): items, personas,
    prompts."""
    out = tmp_path_factory.mktemp("rl")
    build_rl.build(
        build_rl.BuildConfig(
            out_dir=out,
            paths=build_sft.sample_paths(),
            train_counts=dict(build_sft.SAMPLE_TRAIN_COUNTS),
            val_counts=dict(build_sft.SAMPLE_VAL_COUNTS),
            aligned=AlignedMode.OFFLINE_TEMPLATE,
            progress=False,
        )
    )
    return [r for s in build_rl.SPLITS for r in pq.read_table(out / f"{s}.parquet").to_pylist()]


@pytest.fixture(scope="module")
def plan(rl_rows) -> dict[str, dict]:
    """source_id -> {row, replies {mode: kind}, expected (mode, decision)}."""
    out, k_obj, k_ax = {}, 0, 0
    for row in rl_rows:
        if row["data_source"] == "alignx":
            kind, expected = ALIGNX_SCRIPT[k_ax % len(ALIGNX_SCRIPT)]
            replies, k_ax = {"personalized": kind}, k_ax + 1
        else:
            (g, p), expected = OBJECTIVE_SCRIPT[k_obj % len(OBJECTIVE_SCRIPT)]
            replies, k_obj = {"general": g, "personalized": p}, k_obj + 1
        out[row["extra_info"]["source_id"]] = {"row": row, "replies": replies, "expected": expected}
    return out


def make_server(plan: dict[str, dict]) -> OpenAITestServer:
    def reply(body: dict) -> str:
        content = body["messages"][0]["content"]
        mode = "personalized" if "in personalized mode" in content else "general"
        hits = [p for p in plan.values() if f"\n\n{p['row']['extra_info']['question'].strip()}\n\n" in content]
        assert len(hits) == 1, content
        return reply_text(hits[0]["row"], mode, hits[0]["replies"][mode])

    return OpenAITestServer(reply=reply)


def run(out: Path, srv: OpenAITestServer, cache: Path, *extra: str) -> int:
    return build_sft_app.main(
        [
            "--samples",
            "--out",
            str(out),
            "--llm-base-url",
            srv.base_url,
            "--llm-model",
            "expert",
            "--llm-cache-dir",
            str(cache),
            "--no-progress",
            *extra,
        ]
    )


def read(out: Path) -> dict[str, list[dict]]:
    return {s: pq.read_table(out / f"{s}.parquet").to_pylist() for s in build_rl.SPLITS}


def test_selection_item_by_item_and_rerun_makes_no_request(plan, rl_rows, tmp_path):
    assert len(plan) == 22  # 14 objective + 2 AlignX train, 4 + 2 validation
    with make_server(plan) as srv:
        assert run(tmp_path / "a", srv, tmp_path / "cache") == 0
        assert srv.requests == 2 * 18 + 4
        # The expert saw exactly the versioned templates: no persona in general mode, the RL persona otherwise.
        sent = [b["messages"] for b in srv.bodies]
        for row in rl_rows:
            info = row["extra_info"]
            assert build_expert_request(info["question"], info["task_family"], info["persona"]) in sent
            general = build_expert_request(info["question"], info["task_family"], None)
            assert (general in sent) == (row["data_source"] != "alignx")
            assert info["persona"] not in general[0]["content"]
        assert {b["temperature"] for b in srv.bodies} == {0.6} and {b["max_tokens"] for b in srv.bodies} == {4096}

        out = read(tmp_path / "a")
        kept = {r["extra_info"]["source_id"]: (split, r) for split, rows in out.items() for r in rows}
        for sid, p in plan.items():
            mode, decision = p["expected"]
            rl = p["row"]
            if mode is None:
                assert sid not in kept, sid
                continue
            split, row = kept[sid]
            assert split == rl["extra_info"]["split"]
            info = row["extra_info"]
            assert (info["mode"], info["decision"]) == (mode, decision), sid
            kind = p["replies"][mode]
            answer = rl["reward_model"]["ground_truth"] if kind in ("right", "fenced") else wrong_answer(rl)
            prefix = "[General_mode]" if mode == "general" else "[Personalized_mode]"
            assert row["messages"] == [
                *rl["prompt"],
                {"role": "assistant", "content": f"{prefix}{mode} view of {sid}.\n{format_answer(answer)}"},
            ]
            assert row["data_source"] == rl["data_source"]
            assert info["ground_truth"] == rl["reward_model"]["ground_truth"]
            assert {k: info[k] for k in rl["extra_info"] if k != "index"} == {
                k: v for k, v in rl["extra_info"].items() if k != "index"
            }
            g, pz = p["replies"].get("general"), p["replies"]["personalized"]
            assert info["general_correct"] == (None if g is None else g in ("right", "fenced"))
            assert info["personalized_correct"] == (pz in ("right", "fenced"))
        for split, rows in out.items():
            assert [r["extra_info"]["index"] for r in rows] == list(range(len(rows)))
        # Rows keep the RL shuffle order.
        rl_order = [r["extra_info"]["source_id"] for r in rl_rows]
        flat = [r["extra_info"]["source_id"] for s in build_rl.SPLITS for r in out[s]]
        assert flat == [s for s in rl_order if s in kept]

        manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
        expected_counts: dict = {}
        for p in plan.values():
            info = p["row"]["extra_info"]
            cell = (
                expected_counts.setdefault(info["split"], {})
                .setdefault(p["row"]["data_source"], {})
                .setdefault(info["persona_setting"], {"general": 0, "personalized": 0, "dropped": 0})
            )
            cell[p["expected"][0] or "dropped"] += 1
        got = {
            split: {
                src: {st: {k: c[k] for k in ("general", "personalized", "dropped")} for st, c in v.items()}
                for src, v in t.items()
            }
            for split, t in manifest["selection"].items()
        }
        assert got == expected_counts
        # Expert counters, summed over all cells, against the script.
        totals: dict[str, int] = {}
        for t in manifest["selection"].values():
            for v in t.values():
                for c in v.values():
                    for k, n in c["expert"].items():
                        totals[k] = totals.get(k, 0) + n
        kinds = [(m, k) for p in plan.values() for m, k in p["replies"].items()]
        expected_totals = {f"{m}_total": sum(mm == m for mm, _ in kinds) for m in ("general", "personalized")}
        expected_totals |= {
            f"{m}_correct": sum(mm == m and k in ("right", "fenced") for mm, k in kinds)
            for m in ("general", "personalized")
        }
        for m, k, problem in (
            ("general", "malformed", "no_answer"),
            ("personalized", "malformed", "no_answer"),
            ("general", "think", "think_tags"),
        ):
            expected_totals[f"{m}_unusable_{problem}"] = sum((mm, kk) == (m, k) for mm, kk in kinds)
        assert totals == {k: v for k, v in expected_totals.items() if v}
        assert manifest["expert"]["prompt_version"] == "expert-v1"
        assert (manifest["expert"]["requests_made"], manifest["expert"]["served_from_cache"]) == (40, 0)
        assert manifest["outputs"]["train"]["rows"] == len(out["train"])

        # Re-run into a fresh directory: every reply comes from the cache, the bytes are identical.
        before = srv.requests
        assert run(tmp_path / "b", srv, tmp_path / "cache") == 0
        assert srv.requests == before
        again = json.loads((tmp_path / "b" / "manifest.json").read_text())
        assert (again["expert"]["requests_made"], again["expert"]["served_from_cache"]) == (0, 40)
        for split in build_rl.SPLITS:
            assert again["outputs"][split]["sha256"] == manifest["outputs"][split]["sha256"]


def test_expert_reasoning_kept_by_default_and_dropped_on_request(plan, tmp_path):
    """FLAN replies think inline (<think>...</think>, no reasoning parser); the others send the thinking in
    reasoning_content; every content is the bare answer object, as DeepSeek-R1's often is. Kept: the thinking is
    each trajectory's reasoning. Dropped: nothing is left as reasoning, so every item is unusable."""

    def reply(body: dict) -> str | dict:
        content = body["messages"][0]["content"]
        (row,) = [p["row"] for p in plan.values() if f"\n\n{p['row']['extra_info']['question'].strip()}\n\n" in content]
        answer = format_answer(row["reward_model"]["ground_truth"])
        thought = f"Thinking about {row['extra_info']['source_id']}."
        if row["data_source"] == "flan":
            return f"<think>\n{thought}\n</think>\n\n{answer}"
        return {"content": answer, "reasoning_content": thought}

    with OpenAITestServer(reply=reply) as srv:
        assert run(tmp_path / "keep", srv, tmp_path / "cache") == 0
        assert run(tmp_path / "drop", srv, tmp_path / "cache", "--expert-reasoning", "drop") == 0
        assert srv.requests == 40  # the second build is served from the cache, reasoning field included
    kept = [r for rows in read(tmp_path / "keep").values() for r in rows]
    assert len(kept) == len(plan)
    for row in kept:
        info = row["extra_info"]
        prefix = "[General_mode]" if info["mode"] == "general" else "[Personalized_mode]"
        assert info["decision"] in ("both_correct", "personalized_correct")
        assert row["messages"][-1]["content"] == (
            f"{prefix}Thinking about {info['source_id']}.\n{format_answer(info['ground_truth'])}"
        )
    assert [r for rows in read(tmp_path / "drop").values() for r in rows] == []
    keep, drop = (json.loads((tmp_path / d / "manifest.json").read_text())["expert"] for d in ("keep", "drop"))
    assert (keep["reasoning"], drop["reasoning"]) == ("keep", "drop")
    assert keep["replies_with_reasoning_field"] == drop["replies_with_reasoning_field"] == 20


@pytest.mark.parametrize("mode", ["general", "personalized"])
def test_only_mode_builds_single_mode_data(mode, plan, tmp_path):
    """G-SFT-RL / P-SFT-RL data: only that mode's trajectories are asked for and every usable one is kept (no
    gain-based choice); general leaves the AlignX items out."""
    with make_server(plan) as srv:
        assert run(tmp_path / "o", srv, tmp_path / "cache", "--only-mode", mode) == 0
        asked = ["in personalized mode" in b["messages"][0]["content"] for b in srv.bodies]
    items = [p for p in plan.values() if mode in p["replies"]]
    assert asked == [mode == "personalized"] * len(items)
    assert len(items) == (18 if mode == "general" else 22)
    kept = {r["extra_info"]["source_id"]: r for rows in read(tmp_path / "o").values() for r in rows}
    prefix = "[General_mode]" if mode == "general" else "[Personalized_mode]"
    for p in items:
        kind, sid = p["replies"][mode], p["row"]["extra_info"]["source_id"]
        if kind in ("malformed", "think"):
            assert sid not in kept
            continue
        info = kept[sid]["extra_info"]
        assert info["mode"] == mode and kept[sid]["messages"][-1]["content"].startswith(prefix)
        assert info["decision"] == ("only_mode_wrong" if kind == "wrong" else "only_mode_correct")
        assert info[f"{'personalized' if mode == 'general' else 'general'}_correct"] is None
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["selection_rules"]["only_mode"] == mode
    assert manifest["expert"]["requests"] == len(items)


def test_exclude_rl_makes_items_disjoint(plan, tmp_path):
    """Both builds read the same (RL sample) files here, as both read the hub in a real run."""
    rl_dir = tmp_path / "rl"
    assert build_rl_app.main(["--samples", "--out", str(rl_dir), "--no-progress"]) == 0
    rl_ids = {
        r["extra_info"]["source_id"]
        for s in build_rl.SPLITS
        for r in pq.read_table(rl_dir / f"{s}.parquet").to_pylist()
    }
    same = [f"--{name}={samples.rl_sample_paths()[name]}" for name in build_sft.SFT_SAMPLE_INPUTS]
    with OpenAITestServer(reply=lambda body: 'Because.\n{"answer": "A"}') as srv:
        code = run(
            tmp_path / "sft",
            srv,
            tmp_path / "cache",
            "--exclude-rl",
            str(rl_dir),
            *same,
            "--train-counts",
            "ultramedical=1,flan=2,alignx=0",
            "--val-counts",
            "ultramedical=1,flan=0,alignx=0",
        )
        assert code == 0
    out = read(tmp_path / "sft")
    ids = [r["extra_info"]["source_id"] for s in build_rl.SPLITS for r in out[s]]
    assert len(ids) == 4 and not set(ids) & rl_ids
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["excluded_rl"]["removed"] == {"ultramedical": 8, "flan": 14}


def test_bad_inputs_fail_with_precise_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PERSONADUAL_LLM_BASE_URL", raising=False)
    local = [f"--{name}={path}" for name, path in samples.rl_sample_paths().items()]
    assert (
        build_sft_app.main(
            [
                "--out",
                str(tmp_path / "x"),
                *local,
                "--aligned-personas",
                "offline-template",
                "--train-counts",
                "ultramedical=1,flan=1,alignx=1",
                "--val-counts",
                "ultramedical=0,flan=0,alignx=0",
                "--no-progress",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: writing expert trajectories needs an LLM endpoint: set PERSONADUAL_LLM_BASE_URL and "
        "PERSONADUAL_LLM_MODEL "
        "(or --llm-base-url / --llm-model)"
    )
    with OpenAITestServer() as srv:
        assert run(tmp_path / "x", srv, tmp_path / "c", "--exclude-rl", str(tmp_path / "nope")) == 2
        assert f"{tmp_path / 'nope' / 'train.parquet'} does not exist" in capsys.readouterr().err
        assert run(tmp_path / "x", srv, tmp_path / "c", "--max-length", "10") == 2
        assert "--tokenizer and --max-length go together" in capsys.readouterr().err
        # general-only data cannot hold AlignX items (no persona-free answer): asking for some is refused
        assert run(tmp_path / "x", srv, tmp_path / "c", "--only-mode", "general", "--train-counts", "alignx=2") == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            "error: general-only SFT data has no personalized items, but {'alignx': 2} were requested; set their "
            "counts to 0 (build_sft --only-mode general does)"
        )
        assert srv.requests == 0


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exc:
        build_sft_app.main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in (
        "selection graded by the project's reward",
        "--exclude-rl",
        "PERSONADUAL_LLM_BASE_URL",
        "persona_dual_sft.yaml",
        "add_mode_tokens",
        "manifest.json",
    ):
        assert phrase in text


def test_length_filter_drops_rows_longer_than_max_length(plan, tokenizer_dir, tokenizer, tmp_path):
    with make_server(plan) as srv:
        assert run(tmp_path / "all", srv, tmp_path / "cache") == 0
        full = read(tmp_path / "all")

        def length(row: dict) -> int:
            text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        lengths = {r["extra_info"]["source_id"]: length(r) for s in build_rl.SPLITS for r in full[s]}
        limit = sorted(lengths.values())[len(lengths) // 2]
        before = srv.requests
        assert (
            run(
                tmp_path / "short",
                srv,
                tmp_path / "cache",
                "--tokenizer",
                str(tokenizer_dir),
                "--max-length",
                str(limit),
            )
            == 0
        )
        assert srv.requests == before
    short = read(tmp_path / "short")
    kept = [r["extra_info"]["source_id"] for s in build_rl.SPLITS for r in short[s]]
    assert kept == [
        sid for s in build_rl.SPLITS for sid in (r["extra_info"]["source_id"] for r in full[s]) if lengths[sid] <= limit
    ]
    assert 0 < len(kept) < len(lengths)
    manifest = json.loads((tmp_path / "short" / "manifest.json").read_text())
    too_long = sum(
        c["dropped_reasons"].get("too_long", 0)
        for t in manifest["selection"].values()
        for v in t.values()
        for c in v.values()
    )
    assert too_long == len(lengths) - len(kept)
    assert manifest["length_filter"] == {"tokenizer": str(tokenizer_dir), "max_length": limit}


def test_a_max_length_no_row_fits_is_refused_before_writing(plan, tokenizer_dir, tmp_path, capsys):
    """Every row is longer than 8 tokens (the chat template alone takes more): an empty train split is an error,
    and no parquet is written."""
    with make_server(plan) as srv:
        argv = ["--tokenizer", str(tokenizer_dir), "--max-length", "8"]
        assert run(tmp_path / "out", srv, tmp_path / "cache", *argv) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: --max-length 8: every selected train row is longer (") and error.endswith(
        f"tokens under --tokenizer {tokenizer_dir}); raise --max-length"
    )
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_failed_request_stops_the_build_and_a_rerun_asks_only_for_it(plan, tmp_path, capsys):
    with make_server(plan) as srv:
        srv.script(400)  # not retryable: the first request to arrive fails for good
        assert run(tmp_path / "a", srv, tmp_path / "cache") == 2
        err = capsys.readouterr().err
        assert "1 of 40 expert requests failed" in err and "HTTP 400" in err and "re-run to retry" in err
        assert not (tmp_path / "a" / "train.parquet").exists()
        assert srv.requests == 40
        assert run(tmp_path / "a", srv, tmp_path / "cache") == 0
        assert srv.requests == 41
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (manifest["expert"]["requests_made"], manifest["expert"]["served_from_cache"]) == (1, 39)


def test_require_correct_drops_wrong_kept_trajectories(plan, tmp_path):
    with make_server(plan) as srv:
        assert run(tmp_path / "a", srv, tmp_path / "cache") == 0
        before = srv.requests
        assert run(tmp_path / "strict", srv, tmp_path / "cache", "--require-correct") == 0
        assert srv.requests == before
    strict = read(tmp_path / "strict")
    kept = {r["extra_info"]["source_id"]: r["extra_info"]["decision"] for s in build_rl.SPLITS for r in strict[s]}
    expected = {
        sid: p["expected"][1]
        for sid, p in plan.items()
        if p["expected"][0] is not None and p["expected"][1] not in ("both_wrong", "personalized_wrong")
    }
    assert kept == expected
    manifest = json.loads((tmp_path / "strict" / "manifest.json").read_text())
    assert manifest["selection_rules"]["require_correct"] is True


def test_tie_personalized_keeps_the_personalized_trajectory_when_both_are_correct(plan, tmp_path):
    with make_server(plan) as srv:
        assert run(tmp_path / "tie", srv, tmp_path / "cache", "--tie", "personalized") == 0
    out = read(tmp_path / "tie")
    kept = {r["extra_info"]["source_id"]: r for s in build_rl.SPLITS for r in out[s]}
    ties = [sid for sid, p in plan.items() if p["expected"][1] == "both_correct"]
    assert ties
    for sid, p in plan.items():
        if p["expected"][0] is None:
            continue
        mode = "personalized" if sid in ties else p["expected"][0]
        assert (kept[sid]["extra_info"]["mode"], kept[sid]["extra_info"]["decision"]) == (mode, p["expected"][1])
        assert kept[sid]["messages"][1]["content"].startswith(f"[{mode.capitalize()}_mode]{mode} view of {sid}.")
    manifest = json.loads((tmp_path / "tie" / "manifest.json").read_text())
    assert manifest["selection_rules"]["tie"] == "personalized"


# --- offline: --samples with no endpoint replays the recorded placeholder replies ---------------------------------


def offline(out: Path, *extra: str) -> int:
    return build_sft_app.main(["--samples", "--out", str(out), "--no-progress", *extra])


def test_samples_run_offline_as_the_readme_shows(rl_rows, tmp_path, capsys, monkeypatch):
    """README: `build_rl --samples --out data/rl` then `build_sft --samples --out data/sft --exclude-rl data/rl`, with
    no endpoint: the SFT sample items (disjoint from the RL samples) and the recorded expert replies, which are right
    except in general mode for aligned items, so aligned items keep personalized trajectories (persona gain),
    unaligned ones general ones (both correct) and AlignX items personalized ones."""
    monkeypatch.delenv("PERSONADUAL_LLM_BASE_URL", raising=False)
    assert build_rl_app.main(["--samples", "--out", str(tmp_path / "rl"), "--no-progress"]) == 0
    capsys.readouterr()
    assert offline(tmp_path / "sft", "--exclude-rl", str(tmp_path / "rl")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "aligned personas: OFFLINE TEMPLATE placeholders (not question-specific)",
        "expert trajectories: RECORDED PLACEHOLDER replies for the shipped samples (offline; not written "
        "by an expert model)",
    ]
    out = read(tmp_path / "sft")
    assert [len(out[s]) for s in build_rl.SPLITS] == [16, 6]
    expected = {}
    for row in rl_rows:
        info = row["extra_info"]
        if row["data_source"] == "alignx":
            expected[info["source_id"]] = ("personalized", "personalized_correct")
        elif info["persona_setting"] == "aligned":
            expected[info["source_id"]] = ("personalized", "persona_gain")
        else:
            expected[info["source_id"]] = ("general", "both_correct")
    got = {
        r["extra_info"]["source_id"]: (r["extra_info"]["mode"], r["extra_info"]["decision"])
        for s in build_rl.SPLITS
        for r in out[s]
    }
    assert got == expected
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["expert"]["model"] == samples.REPLAY_MODEL
    assert (manifest["expert"]["requests_made"], manifest["expert"]["served_from_cache"]) == (0, 40)
    assert manifest["excluded_rl"]["removed"] == {"ultramedical": 0, "flan": 0, "alignx": 0}


def test_samples_offline_outside_the_recording_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PERSONADUAL_LLM_BASE_URL", raising=False)
    assert offline(tmp_path / "sft", "--temperature", "0.7") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: 40 of 40 requests have no recorded reply in {samples.CACHE_DIR} (model "
        f"'{samples.REPLAY_MODEL}', offline replay: nothing was sent); {samples.MISS_HINT}"
    )
    assert not (tmp_path / "sft" / "train.parquet").exists()


@pytest.mark.parametrize(("mode", "ablation"), [("general", "general_only"), ("personalized", "personalized_only")])
def test_single_mode_baseline_pipeline_composes_end_to_end(mode, ablation, tiny_model_dir, tmp_path, capsys):
    """G-SFT-RL / P-SFT-RL as recipes/README.md runs them, on the samples: single-mode SFT data, the SFT recipe on
    it, the RL recipe with the one-mode ablation (both composed and validated against verl, --dry-run)."""
    import yaml

    from verl_personadual.apps.recipes import cli as recipes

    assert build_rl_app.main(["--samples", "--out", str(tmp_path / "rl"), "--no-progress"]) == 0
    sft = tmp_path / f"sft_{mode}"
    assert (
        build_sft_app.main(
            [
                *("--samples", "--only-mode", mode, "--out", str(sft), "--exclude-rl", str(tmp_path / "rl")),
                # as recipes/README.md builds it: rows longer than the SFT recipe's data.max_length (cpu_tiny: 512)
                # left out, which the dry run would refuse
                *("--tokenizer", str(tiny_model_dir), "--max-length", "512", "--no-progress"),
            ]
        )
        == 0
    )
    assert {r["extra_info"]["mode"] for rows in read(sft).values() for r in rows} == {mode}
    capsys.readouterr()
    assert (
        recipes.main(
            [
                "sft",
                "--backbone",
                "cpu_tiny",
                "--model",
                str(tiny_model_dir),
                "--train-files",
                str(sft / "train.parquet"),
                "--val-files",
                str(sft / "validation.parquet"),
                "--dry-run",
            ]
        )
        == 0
    )
    assert yaml.safe_load(capsys.readouterr().out)["data"]["train_files"] == str(sft / "train.parquet")
    assert (
        recipes.main(
            [
                "rl",
                "--backbone",
                "cpu_tiny",
                "--ablation",
                ablation,
                "--model",
                str(tiny_model_dir),
                "--train-files",
                str(tmp_path / "rl" / "train.parquet"),
                "--val-files",
                str(tmp_path / "rl" / "validation.parquet"),
                "--dry-run",
            ]
        )
        == 0
    )
    assert yaml.safe_load(capsys.readouterr().out)["algorithm"]["dual_grpo"]["only_mode"] == mode
