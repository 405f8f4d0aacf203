"""The README's first command: the main job on the shipped default."""

from __future__ import annotations

import json

import pandas as pd

from verl_personadual.names import AGENT_LOOP_FORCED, AGENT_LOOP_FREE
from verl_personadual.quickstart import main


def test_quickstart_builds_data_and_validates_the_one_gpu_recipe(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--model", "/models/sft"]) == 0
    out = capsys.readouterr().out
    train = pd.read_parquet(tmp_path / "rl" / "train.parquet")
    val = pd.read_parquet(tmp_path / "rl" / "validation.parquet")
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert len(train) == sum(sum(v.values()) for v in manifest["counts"]["train"].values()) == 20
    assert len(val) == 8
    assert set(train.agent_name) == {AGENT_LOOP_FORCED} and set(val.agent_name) == {AGENT_LOOP_FREE}
    assert "estimator=dual_grpo trainer_mode=persona_dual_sync n=8 beta=2.0 inter_mode=True" in out
    assert "-m verl.trainer.main_ppo --config-path" in out
    assert "actor_rollout_ref.model.path=/models/sft" in out
    assert f"data.train_files={tmp_path / 'rl' / 'train.parquet'}" in out
    assert "FAIL" not in out
