"""Every command-line tool reports a bad argument the same way (verl_personadual.utils.errors): exactly one stderr line
``error: <message naming the bad thing>``, no traceback, exit status 2.

Each tool runs as a user starts it (``python -m ...``, and the console script), in parallel threads (a verl
import costs seconds per process). Not listed: ``verl_personadual.core.cpu.sft`` (Hydra's own entry point, started by
``recipes sft``) and ``verl_personadual.core.rewards.mathserver`` (the math reward's child process, standard library
only; its only bad input is argparse's usage error).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cases(tmp: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv after the interpreter, the text the error line must contain)."""
    a_file, missing = tmp / "a_file", tmp / "missing"
    exists = tmp / "exists"
    m = [sys.executable, "-m"]
    check_script = Path(sys.executable).parent / "verl-personadual-check"
    out = {
        "check": ([*m, "verl_personadual.apps.check", "--tokenizer", f"{missing}/tok"], f"--tokenizer {missing}/tok"),
        "add_mode_tokens": (
            [*m, "verl_personadual.apps.add_mode_tokens", f"{missing}/base", str(tmp / "o1")],
            f"BASE_DIR {missing}/base: no such directory",
        ),
        "quickstart": (
            [*m, "verl_personadual.quickstart", "--out", f"{a_file}/qs", "--no-progress"],
            f"--out {a_file}/qs: {a_file} is a file",
        ),
        "sample_replies": (
            [*m, "verl_personadual.apps.record_samples", "--root", str(a_file), "--check"],
            f"--root {a_file}: not a directory",
        ),
        "cost": (
            [*m, "verl_personadual.apps.cost", "--backbone", "qwen3_8b", "--mfu", "1.5"],
            "--mfu: must be a number in (0, 1], got '1.5'",
        ),
        "recipes sft": (
            [
                *m,
                "verl_personadual.recipes",
                "sft",
                "--backbone",
                "cpu_toy",
                "--model",
                f"{missing}/m",
                "--train-files",
                str(a_file),
            ],
            f"--model {missing}/m: no such directory",
        ),
        "recipes rl": (
            [
                *m,
                "verl_personadual.recipes",
                "rl",
                "--backbone",
                "cpu_toy",
                "--model",
                str(model),
                "--train-files",
                f"{missing}/t.parquet",
                "--val-files",
                str(a_file),
            ],
            f"--train-files {missing}/t.parquet: no such file",
        ),
        "eval run": (
            [*m, "verl_personadual.eval", "run", "--model", f"{missing}/m", "--out", str(tmp / "o2")],
            f"--model {missing}/m: no such directory",
        ),
        "eval report": ([*m, "verl_personadual.eval", "report", f"{missing}/run"], f"{missing}/run"),
        "eval compare": (
            [*m, "verl_personadual.eval", "compare", "--run", f"a={missing}/run", "--out", str(tmp / "o3")],
            f"{missing}/run",
        ),
        "eval train-router": (
            [*m, "verl_personadual.eval", "train-router", f"{missing}/run", "--out", str(tmp / "r.json")],
            f"{missing}/run/eval_set.jsonl",
        ),
        "eval mode-probs": (
            [*m, "verl_personadual.eval", "mode-probs", "--run", f"a={missing}/run", "--out", str(tmp / "o4")],
            f"{missing}/run",
        ),
        "eval multiturn": (
            [*m, "verl_personadual.eval", "multiturn", "--run", f"{missing}/run", "--out", str(tmp / "o5")],
            f"{missing}/run",
        ),
        "eval lexical": (
            [*m, "verl_personadual.eval", "lexical", "--run", f"a={missing}/run", "--out", str(tmp / "o6")],
            f"{missing}/run",
        ),
        "eval mixed": (
            [*m, "verl_personadual.eval", "mixed", "--run", f"a={missing}/run", "--out", str(tmp / "o7")],
            f"{missing}/run",
        ),
        "eval.cli": ([*m, "verl_personadual.apps.eval_cli", "report", f"{missing}/run"], f"{missing}/run"),
        "tiny_model": (
            [*m, "verl_personadual.apps.tiny_model", "--out", str(exists)],
            f"--out {exists.absolute()}: holds files that are not an output of this project's commands",
        ),
        "build_rl": (
            [
                *m,
                "verl_personadual.apps.build_rl",
                "--samples",
                "--ultramedical",
                f"{missing}/um.jsonl",
                "--out",
                str(tmp / "o8"),
                "--no-progress",
            ],
            f"{missing}/um.jsonl: no such file",
        ),
        "build_sft": (
            [
                *m,
                "verl_personadual.apps.build_sft",
                "--samples",
                "--exclude-rl",
                f"{missing}/rl",
                "--out",
                str(tmp / "o9"),
                "--no-progress",
            ],
            f"--exclude-rl {missing}/rl",
        ),
        "multiturn": (
            [
                *m,
                "verl_personadual.apps.build_multiturn",
                "--in",
                f"{missing}/rl.parquet",
                "--out",
                str(tmp / "o10.parquet"),
                "--ratio",
                "0.5",
            ],
            f"--in {missing}/rl.parquet: no such file",
        ),
        "toy": (
            [*m, "verl_personadual.apps.build_toy", "--out", f"{a_file}/toy"],
            f"--out {a_file}/toy: {a_file} is a file",
        ),
    }
    if shutil.which(check_script.name, path=str(check_script.parent)):
        out["verl-personadual-check"] = (
            [str(check_script), "--tokenizer", f"{missing}/tok"],
            f"--tokenizer {missing}/tok",
        )
    return out


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def test_every_cli_reports_a_bad_argument_in_one_error_line(tmp_path, tiny_model_dir):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "notes.txt").write_text("mine")
    todo = cases(tmp_path, tiny_model_dir)
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(todo, pool.map(run, (argv for argv, _ in todo.values()))))
    for name, proc in done.items():
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert (proc.returncode, len(errors)) == (2, 1), (name, proc.stderr[-3000:])
        assert todo[name][1] in errors[0], (name, errors[0])
        assert "Traceback" not in proc.stderr, (name, proc.stderr[-3000:])
        assert "error:" not in proc.stdout, (name, proc.stdout[-2000:])
    # nothing was created for the failed commands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "exists"]
    assert [p.name for p in (tmp_path / "exists").iterdir()] == ["notes.txt"]


def test_run_cli_disk_full_and_permission_are_user_errors_a_bug_is_not(tmp_path, capsys):
    import errno

    import pytest

    from verl_personadual.utils.errors import UserError, run_cli, user_errors

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "predictions.jsonl"))

    assert run_cli(full, []) == 2
    assert capsys.readouterr().err == f"error: No space left on device ({tmp_path / 'predictions.jsonl'})\n"

    def denied(argv):
        with user_errors(ValueError):  # the conversion of input errors lets the OSError through to run_cli
            raise PermissionError(errno.EACCES, "Permission denied", "/etc/out")

    assert run_cli(denied, []) == 2
    assert capsys.readouterr().err == "error: Permission denied (/etc/out)\n"

    def bad_input(argv):
        with user_errors(ValueError):
            raise ValueError("row 3: not JSON\nsecond line")

    assert run_cli(bad_input, []) == 2
    assert capsys.readouterr().err == "error: row 3: not JSON second line\n"

    def bug(argv):
        raise KeyError("prompt")

    with pytest.raises(KeyError):
        run_cli(bug, [])
    assert issubclass(UserError, Exception) and run_cli(lambda argv: 0, []) == 0
