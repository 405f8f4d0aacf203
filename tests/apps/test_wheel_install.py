"""A non-editable wheel install works (issue 24): `pip wheel . --no-deps`, installed into a fresh venv, runs the
recipes' `--dry-run`, the self-check and the quickstart's first stages from outside the source tree, finding the
recipe YAMLs and the samples as package data.

The fresh venv gets its third-party packages (verl, torch, ...) from this environment's site-packages through a
`.pth` path entry, so nothing is downloaded; `.pth` files of that directory are not processed, so this
environment's editable install of the project stays out, and the test asserts every module came from the wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
        ],
        root,
        env,
    )
    wheels = list((root / "dist").glob("verl_personadual-*.whl"))
    assert len(wheels) == 1, wheels
    _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], root, env)
    python = root / "venv" / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheels[0])], root, env
    )
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env).stdout.strip()
    )
    (site / "zz_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    return python, env


def test_the_installed_package_is_the_wheel_with_its_package_data(wheel_venv, tmp_path):
    python, env = wheel_venv
    out = _run(
        [
            str(python),
            "-c",
            (
                "import json, importlib.metadata as md, verl_personadual.apps.recipes.compose as c, "
                "verl_personadual.data."
                "samples as s; ep = [e.value for e in md.entry_points(group='verl.plugins') if e.name == "
                "'personadual']; "
                "print(json.dumps([c.__file__, str(c.CONFIG_DIR), str(s.samples_dir()), ep]))"
            ),
        ],
        tmp_path,
        env,
    ).stdout
    module, config, samples, entry = json.loads(out.strip().splitlines()[-1])
    venv = str(python.parent.parent)
    assert module.startswith(venv) and config.startswith(venv) and samples.startswith(venv)
    assert (Path(config) / "persona_dual_rl.yaml").is_file() and (
        Path(config) / "rl_backbone" / "cpu_tiny.yaml"
    ).is_file()
    assert (Path(samples) / "flan.jsonl").is_file()
    assert entry == ["verl_personadual.core.plugin"]


def test_recipes_dry_run_and_check_from_the_wheel(wheel_venv, tmp_path, tiny_model_dir):
    python, env = wheel_venv
    _run([str(python), "-m", "verl_personadual.apps.build_toy", "--out", str(tmp_path / "toy")], tmp_path, env)
    proc = _run(
        [
            str(python),
            "-m",
            "verl_personadual.recipes",
            "rl",
            "--backbone",
            "cpu_tiny",
            "--model",
            str(tiny_model_dir),
            "--train-files",
            str(tmp_path / "toy" / "rl" / "train.parquet"),
            "--val-files",
            str(tmp_path / "toy" / "rl" / "validation.parquet"),
            "--dry-run",
        ],
        tmp_path,
        env,
    )
    assert "algorithm:" in proc.stdout and "dual_grpo" in proc.stdout
    check = _run([str(python), "-m", "verl_personadual.check"], tmp_path, env)
    assert check.stdout.rstrip().endswith("0 failed"), check.stdout[-2000:]


def test_quickstart_first_stages_from_the_wheel(wheel_venv, tmp_path):
    python, env = wheel_venv
    out = tmp_path / "qs"
    proc = _run(
        [str(python), "-m", "verl_personadual.quickstart", "--out", str(out), "--stop-after", "model", "--no-progress"],
        tmp_path,
        env,
    )
    assert "stopped after stage model" in proc.stdout
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == ["check", "data", "model"]
    assert (out / "data" / "rl" / "train.parquet").is_file() and (out / "model" / "config.json").is_file()
