"""Argument checks run before anything is written: one-line errors naming flag and value; the CLIs that use them
exit 2 with that line (and leave nothing behind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from verl_personadual.apps import build_rl, tiny_model
from verl_personadual.data.preflight import (
    PreflightError,
    check_files,
    check_model,
    check_output_dir,
)
from verl_personadual.utils.text import closest


def message(call, *args) -> str:
    with pytest.raises(PreflightError) as err:
        call(*args)
    return str(err.value)


def test_check_model(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    check_model(str(tiny_model_dir))
    (tmp_path / "empty").mkdir()
    (tmp_path / "f").write_text("x")
    assert message(check_model, str(tmp_path / "empty")) == (
        f"--model {tmp_path / 'empty'}: no config.json in this directory (expected a Hugging Face checkpoint, e.g. "
        "one written by `python -m verl_personadual.apps.tiny_model --out DIR`)"
    )
    assert message(check_model, str(tmp_path / "f")) == f"--model {tmp_path / 'f'}: a file, not a checkpoint directory"
    assert (
        message(check_model, str(tmp_path / "modles" / "tiny"))
        == f"--model {tmp_path / 'modles' / 'tiny'}: no such directory"
    )
    monkeypatch.chdir(tmp_path)  # "empty/tiny": its first component is a local directory, so a path
    assert message(check_model, "empty/tiny") == "--model empty/tiny: no such directory"
    assert message(check_model, "a/b/c") == (
        "--model a/b/c: no such directory, and not a Hugging Face hub id (name or namespace/name)"
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert message(check_model, "nobody/no-such-model") == (
        "--model nobody/no-such-model: no such directory, and not in the local Hugging Face cache "
        "(HF_HUB_OFFLINE is set)"
    )


def test_check_files_and_output_dir(tmp_path):
    (tmp_path / "f.parquet").write_text("x")
    check_files([tmp_path / "f.parquet"], "--train-files")
    assert message(check_files, [tmp_path / "f.parquet", tmp_path / "g.parquet"], "--train-files") == (
        f"--train-files {tmp_path / 'g.parquet'}: no such file"
    )
    assert message(check_files, [tmp_path], "--val-files") == f"--val-files {tmp_path}: not a file"

    check_output_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet"]
    assert (
        message(check_output_dir, tmp_path / "f.parquet")
        == f"--out {tmp_path / 'f.parquet'}: exists and is not a directory"
    )
    assert message(check_output_dir, tmp_path / "f.parquet" / "x") == (
        f"--out {tmp_path / 'f.parquet' / 'x'}: {tmp_path / 'f.parquet'} is a file, not a directory"
    )
    assert message(check_output_dir, Path("/proc/verl_personadual_test")) == (
        "--out /proc/verl_personadual_test: cannot write in /proc (No such file or directory)"
    )


def test_closest():
    assert closest("betta", ["beta", "epsilon", "inter_mode"]) == "beta"
    assert closest("zzz", ["beta", "epsilon"]) is None


def test_unwritable_out_is_one_line_in_the_clis(tmp_path, capsys):
    """A bad --out is one line in each CLI."""
    (tmp_path / "f").write_text("x")
    assert build_rl.main(["--samples", "--out", str(tmp_path / "f" / "rl"), "--no-progress"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --out {tmp_path / 'f' / 'rl'}: {tmp_path / 'f'} is a file, not a directory\n"
    )
    assert tiny_model.main(["--out", str(tmp_path / "f" / "m")]) == 2
    assert (
        capsys.readouterr().err == f"error: --out {tmp_path / 'f' / 'm'}: {tmp_path / 'f'} is a file, not a directory\n"
    )
