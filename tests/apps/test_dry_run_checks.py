"""The dry run is as strict as the launch (issue 33, item 5): both run ``recipes.cli.plan_run``, so the same bad
config or data is refused by both with the same one ``error:`` line; ``quickstart --set`` runs the same config checks.

The launch path is guarded: ``subprocess.call`` (verl's launch) is replaced by a recorder, so a missing refusal fails
the test instead of starting a training run.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest

from verl_personadual.apps.recipes import cli as recipes_cli

FORCED_N = (
    "personadual_forced splits each group exactly in half between the two modes, so actor_rollout_ref.rollout.n "
    "must be even and >= 2; got n={n}"
)
STEPS = "trainer.total_training_steps must be null (from the data and trainer.total_epochs) or an integer >= 1, got -2"
EPOCHS = "trainer.total_epochs must be an integer >= 1, got 0"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """20 toy RL training rows and 8 validation rows, each also with an SFT ``messages`` column."""
    from verl_personadual.data import toy

    d = tmp_path_factory.mktemp("dry_run_checks")
    toy.build(d / "toy")
    rows = pd.read_parquet(d / "toy" / "rl" / "train.parquet").head(20)
    rows["messages"] = [[*p, {"role": "assistant", "content": "ok"}] for p in rows["prompt"]]
    out = {}
    for name, n in (("train", 20), ("val", 8)):
        out[name] = str(d / f"{name}.parquet")
        rows.head(n).to_parquet(out[name])
    return out


@pytest.fixture
def launches(monkeypatch) -> list[list[str]]:
    """The commands the launch path started (recorded, not run)."""
    started: list[list[str]] = []

    def record(command, env=None):
        started.append(list(command))
        return 0

    monkeypatch.setattr(recipes_cli.subprocess, "call", record)
    return started


def argv(stage: str, model: Path, data: dict[str, str], out: Path, *extra: str) -> list[str]:
    files = ["--train-files", data["train"], "--val-files", data["val"]]
    return [stage, "--backbone", "cpu_tiny", "--model", str(model), *files, "--output-dir", str(out), *extra]


def refusal(args: list[str], overrides: list[str], capsys, alone: bool = True) -> str:
    """The ``error:`` line of a refused run (exit 2, nothing on stdout), its last stderr line; ``alone``: its only
    one (else verl may warn as it imports its SFT dataset code before)."""
    assert recipes_cli.main([*args, "--", *overrides] if overrides else args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], captured.err
    assert len(lines) == 1 or not alone, captured.err
    return lines[-1]


@pytest.mark.parametrize(
    ("stage", "overrides", "expected"),
    [
        ("rl", ["actor_rollout_ref.rollout.n=3"], FORCED_N.format(n=3)),
        ("rl", ["actor_rollout_ref.rollout.n=0"], FORCED_N.format(n=0)),
        ("rl", ["trainer.total_training_steps=-2"], STEPS),
        ("rl", ["trainer.total_epochs=0"], EPOCHS),
        ("sft", ["trainer.total_training_steps=-2"], STEPS),
        ("sft", ["trainer.total_epochs=0"], EPOCHS),
    ],
)
def test_dry_run_and_launch_refuse_a_bad_config_alike(
    stage, overrides, expected, tiny_model_dir, data, tmp_path, launches, capsys
):
    args = argv(stage, tiny_model_dir, data, tmp_path / "out")
    dry = refusal([*args, "--dry-run"], overrides, capsys)
    launch = refusal(args, overrides, capsys)
    assert dry == launch == f"error: {expected}"
    assert launches == []
    assert not (tmp_path / "out").exists()


def test_a_good_odd_n_for_one_mode_and_even_n_pass(tiny_model_dir, data, tmp_path, capsys):
    # only_mode forces every rollout into one mode: any n >= 1 is fine (the G-SFT-RL / P-SFT-RL baselines)
    args = argv("rl", tiny_model_dir, data, tmp_path / "out", "--ablation", "general_only", "--dry-run")
    assert recipes_cli.main([*args, "--", "actor_rollout_ref.rollout.n=3"]) == 0
    args = argv("rl", tiny_model_dir, data, tmp_path / "out", "--dry-run")
    assert recipes_cli.main([*args, "--", "actor_rollout_ref.rollout.n=6", "trainer.total_training_steps=1"]) == 0
    capsys.readouterr()


def test_dry_run_and_launch_refuse_overlong_sft_rows_alike(tiny_model_dir, data, tmp_path, launches, capsys):
    args = argv("sft", tiny_model_dir, data, tmp_path / "out")
    dry = refusal([*args, "--dry-run"], ["data.max_length=16"], capsys, alone=False)
    launch = refusal(args, ["data.max_length=16"], capsys, alone=False)
    assert dry == launch
    assert dry.startswith("error: SFT rows longer than data.max_length=16 tokens")
    assert f"{data['train']}: 20 of 20 rows (row 0: " in dry
    assert f"{data['val']}: 8 of 8 rows (row 0: " in dry
    assert launches == []


def test_drop_overlong_dry_run_writes_nothing_and_plans_the_launch(tiny_model_dir, data, tmp_path, launches, capsys):
    out = tmp_path / "out"
    args = [*argv("sft", tiny_model_dir, data, out, "--drop-overlong"), "--", "data.max_length=16"]
    # every row is longer than 16 tokens: nothing would be left to train on, refused by both paths
    dry = refusal([*args[:-2], "--dry-run", *args[-2:]], [], capsys, alone=False)
    launch = refusal(args, [], capsys, alone=False)
    assert dry == launch == "error: --train-files: no rows left without the over-long ones"
    assert launches == [] and not out.exists()


def test_quickstart_set_refuses_what_the_launch_refuses(tmp_path, capsys):
    from verl_personadual.apps.quickstart.cli import main

    out = tmp_path / "qs"
    for override, expected in (
        ("actor_rollout_ref.rollout.n=3", "--set for run rl-none+n=3: " + FORCED_N.format(n=3)),
        ("trainer.total_training_steps=-2", "--set for run rl-none+total_training_steps=-2: " + STEPS),
    ):
        assert main(["--out", str(out), "--no-progress", "--set", override]) == 2
        captured = capsys.readouterr()
        assert (captured.err + captured.out).strip().splitlines() == [f"error: {expected}"]
    assert not out.exists()


def test_drop_overlong_dry_run_plans_exactly_the_launch(tiny_model_dir, data, tmp_path, launches, capsys):
    out = tmp_path / "out"
    args = argv("sft", tiny_model_dir, data, out, "--drop-overlong")
    assert recipes_cli.main([*args, "--dry-run", "--", "data.max_length=167"]) == 0
    dry = capsys.readouterr()
    assert not out.exists()  # the dry run writes nothing
    drops = [line for line in dry.err.splitlines() if line.startswith("# --drop-overlong: the run drops ")]
    copy = out / "sft_data" / "train0_train.max167.parquet"
    assert drops[0].startswith(f"# --drop-overlong: the run drops {data['train']}: ")
    assert drops[0].endswith(f" and trains on {copy}")
    planned = dry.err.split("# dry run: nothing started. The run would be:\n# ", 1)[1].splitlines()[0]

    assert recipes_cli.main([*args, "--", "data.max_length=167"]) == 0
    capsys.readouterr()
    (command,) = launches
    assert shlex.join(command) == planned  # the launch runs what the dry run printed, on the copies it announced
    assert str(copy) in planned
    manifest = json.loads(Path(f"{copy}.manifest.json").read_text())
    kept = pd.read_parquet(copy)
    assert manifest["rows"] == 20 and len(kept) == manifest["kept"] == 20 - len(manifest["dropped"])
    assert f"{len(manifest['dropped'])} of 20 rows" in drops[0]
    assert all(row["tokens"] > 167 for row in manifest["dropped"])


def test_quickstart_runs_every_check_of_the_rl_launch_before_sft(tmp_path, capsys):
    # data.train_batch_size=5000 composes and validates; only the launch's data check (the toy has 1,024 RL rows)
    # refuses it: once the data and the model exist, before the SFT stage.
    from verl_personadual.apps.quickstart.cli import main

    out = tmp_path / "qs"
    args = ["--out", str(out), "--no-progress", "--stop-after", "model", "--set", "data.train_batch_size=5000"]
    assert main(args) == 2
    captured = capsys.readouterr()
    rows = len(pd.read_parquet(out / "data" / "rl" / "train.parquet"))
    assert captured.err.strip().splitlines()[-1] == (
        f"error: --set for run rl-none+train_batch_size=5000: --train-files: {rows} rows, fewer than "
        f"data.train_batch_size=5000; verl drops partial batches, so no training step would run: give more rows or "
        f"a smaller batch (`-- data.train_batch_size=N`, N <= {rows})"
    )
    assert not (out / "sft").exists() and not (out / "runs").exists()
