"""Output folders (issue 33, items 1, 2 and 8), through the real commands on the shipped samples and the tiny model:

- a builder refuses a folder that holds another build (another command, other inputs) with one ``error:`` line and
  leaves it byte-identical; it resumes its own; ``--overwrite`` replaces it only once the new build is complete;
- the temporaries a killed build left are removed by the next run of that command;
- a second ``eval run`` on a folder in use is refused at once, naming the holder's pid and host; the lock goes
  with its holder, even on SIGKILL;
- a predictions file with repeated records (two runs that wrote it at once) reads each identical record once and is
  repaired by a rerun; two different records of one key are refused, naming both lines and the fix;
- ``eval run --judge`` whose judge gives no verdict exits 2 and puts no rule verdict in a judged column.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai_server import OpenAITestServer

from verl_personadual.apps import build_multiturn, build_rl, build_sft, build_toy, eval_cli, record_samples, tiny_model
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils.llm import ENV_BASE_URL, ENV_MODEL
from verl_personadual.utils.outputs import MARKER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL):
        monkeypatch.delenv(var, raising=False)


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_builders_refuse_another_build_and_resume_their_own(tmp_path: Path, capsys) -> None:
    rl = tmp_path / "data" / "rl"
    assert build_rl.main(["--samples", "--out", str(rl), "--no-progress"]) == 0
    before = snapshot(rl)
    capsys.readouterr()
    # the reported case: SFT rows written over the RL parquet it had just read (exit 0 before)
    assert build_sft.main(["--samples", "--out", str(rl), "--exclude-rl", str(rl), "--no-progress"]) == 2
    assert errors(capsys) == [
        f"error: --out {rl}: holds the output of `build_rl` (rl-data), not of `build_sft` (sft-data); use another "
        "--out, or --overwrite to replace it"
    ]
    assert build_toy.main(["--out", str(rl)]) == 2
    assert "holds the output of `build_rl` (rl-data), not of `build_toy` (toy-task)" in errors(capsys)[0]
    assert build_rl.main(["--samples", "--out", str(rl), "--no-progress", "--seed", "3"]) == 2
    [line] = errors(capsys)
    assert "made with other inputs (seed: 0 -> 3)" in line
    assert snapshot(rl) == before
    # its own inputs again: resumed (rebuilt in place, byte-identical)
    assert build_rl.main(["--samples", "--out", str(rl), "--no-progress"]) == 0
    assert snapshot(rl) == before
    # a folder of the user's: refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    assert tiny_model.main(["--out", str(mine), "--hidden", "32", "--layers", "1"]) == 2
    assert "holds files that are not an output of this project's commands" in errors(capsys)[0]
    assert snapshot(mine) == {"notes.txt": b"keep\n"}
    # no lock file or staging folder is left next to the outputs
    assert sorted(p.name for p in rl.parent.iterdir()) == ["rl"]


def test_overwrite_swaps_in_only_a_complete_build(tmp_path: Path, capsys, monkeypatch) -> None:
    rl = tmp_path / "rl"
    assert build_rl.main(["--samples", "--out", str(rl), "--no-progress"]) == 0
    before = snapshot(rl)
    sft_args = ["--samples", "--out", str(rl), "--exclude-rl", str(rl), "--no-progress", "--overwrite"]

    real_build = build_sft.build

    def killed_after_writing(cfg):  # the new build writes everything, then dies before it is swapped in
        real_build(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(build_sft, "build", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        build_sft.main(sft_args)
    assert snapshot(rl) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl"]
    monkeypatch.setattr(build_sft, "build", real_build)
    assert build_sft.main(sft_args) == 0
    marker = json.loads((rl / MARKER).read_text())
    assert (marker["command"], marker["kind"]) == ("build_sft", "sft-data")
    assert "messages" in pq.read_schema(rl / "train.parquet").names  # SFT rows now, swapped in whole
    manifest = json.loads((rl / "manifest.json").read_text())
    assert manifest["outputs"]["train"]["path"] == str(rl / "train.parquet")  # not the staging folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl"]


def test_next_run_removes_stale_temporaries_of_a_killed_build(tmp_path: Path) -> None:
    toy = tmp_path / "toy"
    args = ["--out", str(toy), "--sft-items", "4", "--rl-items", "4", "--rl-val-items", "2", "--eval-items", "2"]
    assert build_toy.main(args) == 0
    before = snapshot(toy)
    # what a SIGKILL leaves: atomic-write temporaries and an interrupted replacement's staging folder
    stale = [toy / "rl" / ".train.parquet.k3x_9a1b.tmp", toy / ".manifest.json.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    staging = tmp_path / ".toy.staging-0badc0de"
    (staging / "toy").mkdir(parents=True)
    unrelated = tmp_path / ".toy2.staging-0badc0de"  # another folder's: kept
    unrelated.mkdir()
    assert build_toy.main(args) == 0
    assert not any(p.exists() for p in stale) and not staging.exists() and unrelated.is_dir()
    assert snapshot(toy) == before


def _eval_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--out",
        str(out),
        "--samples",
        "--backend",
        "hf",
        "--device",
        "cpu",
        "--no-progress",
        "--max-new-tokens",
        "8",
        "--decoding",
        "general",
        "--settings",
        "none",
        *extra,
    ]


HOLDER = """
import sys, time
from verl_personadual.utils.outputs import Build, claim_output
with claim_output(sys.argv[1], Build("eval run", "eval-run")):
    print("held", flush=True)
    time.sleep(600)
"""


def test_second_eval_run_refused_at_once_and_lock_released_on_kill(tiny_model_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        args = _eval_args(tiny_model_dir, out, "--benchmarks", "triviaqa")
        assert eval_cli.main(args) == 2
        [line] = errors(capsys)
        assert line == (
            f"error: --out {out}: in use by pid {holder.pid} on host {socket.gethostname()} (lock "
            f"{tmp_path / '.run.lock'}); wait for it to finish or use another --out"
        )
        assert not (out / "predictions.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert eval_cli.main(args) == 0  # the kernel released the killed holder's lock
    assert len(read_predictions(out / "predictions.jsonl")) == 4  # 4 sample items x setting none x general


def test_repeated_predictions_are_read_once_and_repaired_conflicts_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _eval_args(tiny_model_dir, out, "--benchmarks", "triviaqa")
    assert eval_cli.main(args) == 0
    pred = out / "predictions.jsonl"
    lines = pred.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    pred.write_text("".join(lines + lines[:2]))  # what two runs appending at once left (before the lock)
    capsys.readouterr()
    assert eval_cli.main(["report", str(out)]) == 0  # was: "key ... occurs twice", exit 2
    assert eval_cli.main(args) == 0  # the rerun repairs the file
    assert pred.read_text() == "".join(lines)
    conflicting = json.loads(lines[1])
    conflicting["correct"] = 1.0 - conflicting["correct"]
    pred.write_text("".join(lines) + json.dumps(conflicting) + "\n")
    capsys.readouterr()
    assert eval_cli.main(["report", str(out)]) == 2
    key = (conflicting["row_id"], conflicting["decoding"])
    assert errors(capsys) == [
        f"error: {pred}, lines 2 and 5: two different records of key {key} (two processes wrote this file at "
        "once); delete the line that should not count, then rerun"
    ]


JUDGE_MARK = "You grade a model's response"


def test_judge_without_verdicts_fails_and_a_rerun_asks_again(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    verdict = {"reply": "I am not sure."}  # no yes / no verdict: rejected by the judge's validator

    def reply(body: dict) -> str:
        assert JUDGE_MARK in body["messages"][-1]["content"]
        return verdict["reply"]

    with OpenAITestServer(reply=reply) as srv:
        llm = ["--llm-base-url", srv.base_url, "--llm-model", "judge-m", "--llm-cache-dir", str(tmp_path / "cache")]
        args = _eval_args(tiny_model_dir, out, "--benchmarks", "pubmedqa", "triviaqa", "--judge", *llm)
        assert eval_cli.main(args) == 2
        [line] = errors(capsys)
        assert line.startswith("error: --judge: the judge (judge-m) gave no verdict for 4 of 4 judged responses")
        saved = read_predictions(out / "predictions.jsonl")
        assert sorted(r["benchmark"] for r in saved) == ["triviaqa"] * 4  # no rule verdict in a judged column
        assert not (out / "tables").exists()
        verdict["reply"] = '{"extracted": "yes", "answer": "yes"}'
        assert eval_cli.main(args) == 0
    judged = [r for r in read_predictions(out / "predictions.jsonl") if r["benchmark"] == "pubmedqa"]
    assert len(judged) == 4 and {(r["grader"], r["judge_correct"], r["correct"]) for r in judged} == {
        ("judge", 1.0, 1.0)
    }


def test_checkpoint_written_whole_found_done_and_replaced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny"
    small = ["--out", str(out), "--hidden", "32", "--layers", "1", "--vocab", "300"]
    assert tiny_model.main(small) == 0
    before = snapshot(out)
    assert tiny_model.main(small) == 0  # same options: done, left as it is
    assert f"{out} already holds this tiny model" in capsys.readouterr().out
    assert tiny_model.main([*small, "--seed", "7"]) == 2
    assert "made with other inputs (seed: 0 -> 7)" in errors(capsys)[0]
    assert snapshot(out) == before
    assert tiny_model.main([*small, "--seed", "7", "--overwrite"]) == 0
    after = snapshot(out)
    assert (
        after["model.safetensors"] != before["model.safetensors"]
        and after["tokenizer.json"] == before["tokenizer.json"]
    )
    assert json.loads(after[MARKER])["inputs"]["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_record_samples_refuses_a_root_that_is_not_a_reply_cache(tmp_path: Path, capsys) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "notes.txt").write_text("keep\n")
    assert record_samples.main(["--root", str(root)]) == 2  # was: deleted, then replaced by the recordings
    assert errors(capsys) == [f"error: --root {root}: holds 'notes.txt', not a reply cache entry; use another --root"]
    assert snapshot(root) == {"notes.txt": b"keep\n"}


def test_compare_refuses_a_run_folder_and_multiturn_its_own_input(tmp_path: Path, capsys) -> None:
    """``eval compare --out`` on a folder another command wrote (here a toy build) is refused and left as it was;
    ``build_multiturn --out`` naming its ``--in`` file is refused before the file is rewritten."""
    toy = tmp_path / "toy"
    assert build_toy.main(["--out", str(toy), "--sft-items", "20", "--rl-items", "20", "--eval-items", "20"]) == 0
    before = snapshot(toy)
    capsys.readouterr()
    assert eval_cli.main(["compare", "--run", f"a={tmp_path / 'nowhere'}", "--out", str(toy)]) == 2
    assert errors(capsys) == [
        f"error: --out {toy}: holds the output of `build_toy` (toy-task), not of `eval compare` (comparison); use "
        "another --out, or remove it"
    ]
    assert snapshot(toy) == before
    rl = toy / "rl" / "train.parquet"
    assert build_multiturn.main(["--in", str(rl), "--out", str(rl), "--ratio", "0.5"]) == 2
    assert errors(capsys) == [f"error: --out {rl}: is the --in file; write the multi-turn rows to another file"]
    assert snapshot(toy) == before
