"""The README's first command: stage bookkeeping, resume and failure reporting of the quickstart.

The whole quickstart (SFT -> DualGRPO -> eval on the toy task) runs in `.ci/run` before the test suite; its
report's figures are tested against hand computation in test_toy_report.py.
"""

from __future__ import annotations

import json
import sys

import pytest

from verl_personadual.apps.quickstart.cli import main
from verl_personadual.apps.quickstart.stages import Quickstart, StageError


def test_finished_stages_are_reused_and_failures_name_the_stage(tmp_path, capsys):
    qs = Quickstart(tmp_path / "qs", ["none"], progress=False)
    calls = []
    qs.stage(1, 2, "data", "toy data", lambda: calls.append(1) or {"rows": 7})
    qs.stage(1, 2, "data", "toy data", lambda: calls.append(2) or {"rows": 8})
    assert calls == [1]
    marker = json.loads((tmp_path / "qs" / "stages" / "data.json").read_text())
    assert marker["rows"] == 7 and marker["seconds"] >= 0
    assert "data: done before, reused" in capsys.readouterr().out

    def broken() -> dict:
        raise KeyError("prompt")

    with pytest.raises(StageError, match=r"^stage model failed: KeyError: 'prompt'$"):
        qs.stage(2, 2, "model", "tiny model", broken)
    assert not (tmp_path / "qs" / "stages" / "model.json").exists()


def test_a_failing_training_command_is_reported_with_its_log(tmp_path):
    qs = Quickstart(tmp_path / "qs", ["none"], progress=False)
    qs.out.mkdir(parents=True)
    script = "print('step:1 - loss:1.0'); print('RuntimeError: worker died'); import sys; sys.exit(3)"
    with pytest.raises(StageError) as err:
        qs._launch("sft", [sys.executable, "-c", script], total_steps=2)
    log = tmp_path / "qs" / "logs" / "sft.log"
    assert str(err.value) == f"stage sft failed (exit 3): RuntimeError: worker died (log: {log})"
    assert log.read_text() == "step:1 - loss:1.0\nRuntimeError: worker died\n"
    assert qs._launch("ok", [sys.executable, "-c", "print('step:1')"], total_steps=1).endswith(
        "-c 'print('\"'\"'step:1'\"'\"')'"
    )


def test_a_failed_stage_repeats_the_childs_own_error_line(tmp_path, capsys):
    """A child that follows the error convention (errors.run_cli) is quoted by its last `error:` line, even when
    other error-looking lines come after it; the quickstart's own stderr is then exactly one `error:` line."""
    qs = Quickstart(tmp_path / "qs", ["none"], progress=False)
    qs.out.mkdir(parents=True)
    script = (
        "import sys; print('error: first'); print('error: --train-files /x.parquet: no such file'); "
        "print('ValueError: later noise'); sys.exit(2)"
    )
    with pytest.raises(StageError) as err:
        qs._launch("rl-none", [sys.executable, "-c", script], total_steps=None)
    log = tmp_path / "qs" / "logs" / "rl-none.log"
    assert str(err.value) == f"stage rl-none failed (exit 2): --train-files /x.parquet: no such file (log: {log})"
    from verl_personadual.utils.errors import run_cli

    def failing(argv):
        raise err.value

    assert run_cli(failing, []) == 2
    assert capsys.readouterr().err == (
        f"error: stage rl-none failed (exit 2): --train-files /x.parquet: no such file (log: {log})\n"
    )


def test_unwritable_out_fails_before_any_stage(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["--out", str(tmp_path / "f" / "qs"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: --out {tmp_path / 'f' / 'qs'}: {tmp_path / 'f'} is a file, not a directory\n"


def test_help_lists_the_stages_and_ablations(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for word in ("eval-sft", "main_ppo", "mode-selection accuracy:", "no_dual_adv", "--check-targets"):
        assert word in text


def test_run_labels_carry_the_overrides():
    from verl_personadual.apps.quickstart.stages import run_label

    assert run_label("none", []) == "none"
    assert (
        run_label("no_dual_adv", ["algorithm.dual_grpo.prefix_kl=mass", "+trainer.x/y=2"])
        == "no_dual_adv+prefix_kl=mass+x_y=2"
    )
    with pytest.raises(StageError, match="--set 'beta': expected KEY=VALUE"):
        run_label("none", ["beta"])
