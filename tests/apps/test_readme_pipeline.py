"""README.md's offline pipeline, run command by command exactly as written (bash, in a fresh directory, with no
LLM endpoint and the hub offline): every command exits 0, prints no warning (but for the training run, which
logs what verl and torch log), and leaves the outputs the next command reads. About two minutes on 2 CPU cores (one
real SFT run, two evaluation runs)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from verl_personadual.data.samples import REPLAY_MODEL

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- offline-pipeline:"


def readme_commands() -> list[str]:
    """The commands of the bash block after the offline-pipeline marker: continuation lines joined, comments and
    blank lines dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None
    commands, current = [], ""
    for line in block.group(1).splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(" ".join(current.split()))
            current = ""
    return commands


def test_the_readme_block_is_the_offline_walkthrough():
    names = [c.split()[2] for c in readme_commands()]
    assert names == [
        "verl_personadual.apps.tiny_model",
        "verl_personadual.apps.build_rl",
        "verl_personadual.apps.build_sft",
        "verl_personadual.recipes",
        "verl_personadual.recipes",
        "verl_personadual.eval",
        "verl_personadual.eval",
        "verl_personadual.eval",
    ]


def test_readme_offline_pipeline_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONADUAL_LLM_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    for command in readme_commands():
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command}\n{log[-3000:]}"
        if "recipes" not in command or "--dry-run" in command:  # a real training run logs what verl logs
            assert "Warning" not in log and "warning:" not in log, f"{command}\n{log[-3000:]}"

    rl = {s: pq.read_table(tmp_path / "data" / "rl" / f"{s}.parquet").to_pylist() for s in ("train", "validation")}
    sft = {s: pq.read_table(tmp_path / "data" / "sft" / f"{s}.parquet").to_pylist() for s in ("train", "validation")}
    assert [len(rl[s]) for s in rl] == [20, 8] and [len(sft[s]) for s in sft] == [16, 6]
    rl_ids = {r["extra_info"]["source_id"] for rows in rl.values() for r in rows}
    assert not rl_ids & {r["extra_info"]["source_id"] for rows in sft.values() for r in rows}
    manifest = json.loads((tmp_path / "data" / "sft" / "manifest.json").read_text())
    assert manifest["expert"]["model"] == REPLAY_MODEL and manifest["expert"]["requests_made"] == 0
    assert {r["extra_info"]["mode"] for r in sft["train"]} == {"general", "personalized"}

    sft_model = tmp_path / "checkpoints" / "sft" / "global_step_4" / "huggingface"
    assert (sft_model / "config.json").is_file()
    assert not (tmp_path / "checkpoints" / "rl").exists()  # the RL step is a dry run
    for run in ("sft", "base"):
        assert (tmp_path / "runs" / run / "tables" / "table1.csv").is_file()
        config = json.loads((tmp_path / "runs" / run / "run_config.json").read_text())
        assert config["decoding"]["max_new_tokens"] == 32
    with open(tmp_path / "runs" / "cmp" / "table1.csv") as f:
        systems = [row["system"] for row in csv.DictReader(f)]
    lines = ["free", "general", "personalized", "upper_bound"]
    assert systems == [f"sft:{d}" for d in lines] + [f"base:{d}" for d in lines]
