"""Plugin loading through verl's entry point (fresh interpreters), its loud failure, and the self-check CLI."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

from verl_personadual.apps.check import Check, environment_checks, tokenizer_checks
from verl_personadual.apps.check import main as check_main
from verl_personadual.core.modes import Mode, PrefixResolutionError, resolve_prefixes

PROBE = (
    "import sys, verl\n"
    "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
    "from verl.trainer.ppo.v1 import get_trainer_cls\n"
    "fn = get_adv_estimator_fn('dual_grpo')\n"
    "print(fn.__module__, fn.__name__, get_trainer_cls('persona_dual_sync').__name__)\n"
)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_plain_import_verl_resolves_dual_grpo_through_the_entry_point():
    proc = run_python(PROBE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "verl_personadual.core.advantage",
        "compute_dual_grpo_advantage",
        "PersonaDualSyncTrainer",
    ]


def test_plugins_disabled_means_unknown_estimator():
    proc = run_python(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")
    assert proc.returncode != 0
    assert "Unknown advantage estimator simply: dual_grpo" in proc.stderr


BROKEN = "import sys; sys.modules['verl_personadual.core.trainer'] = None\n"


def test_broken_plugin_is_logged_at_error_even_though_verl_swallows_it():
    proc = run_python(BROKEN + PROBE)
    assert proc.returncode != 0  # verl swallowed the error; the estimator lookup then fails ...
    # ... but the plugin said so at ERROR level, naming the module.
    assert "ERROR" in proc.stderr
    assert "failed to import verl_personadual.core.trainer" in proc.stderr
    assert "Unknown trainer 'persona_dual_sync'" in proc.stderr  # verl's own trainer module still imported


def test_fail_loud_option_makes_the_registration_raise():
    # The trainer registers when verl imports its trainer registry, not at `import verl`.
    proc = run_python(BROKEN + "import verl\n", VERL_USE_EXTERNAL_MODULES="verl_personadual.core.plugin")
    assert proc.returncode == 0, proc.stderr
    proc = run_python(BROKEN + "import verl.trainer.ppo.v1\n", VERL_USE_EXTERNAL_MODULES="verl_personadual.core.plugin")
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr or "ImportError" in proc.stderr
    assert "failed to import verl_personadual.core.trainer" in proc.stderr


def test_self_check_passes_on_this_install(tokenizer_dir, capsys):
    assert check_main(["--tokenizer", str(tokenizer_dir)]) == 0
    out = capsys.readouterr().out
    assert "[ok]   estimator dual_grpo" in out
    for mode in ("sync", "colocate_async", "separate_async"):
        assert f"[ok]   trainer persona_dual_{mode}" in out
    assert "[General_mode] -> [3], [Personalized_mode] -> [4]" in out
    assert out.strip().endswith("0 failed")


def test_self_check_reports_disabled_plugins(monkeypatch, capsys):
    monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", "none")
    assert check_main([]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] VERL_USE_EXTERNAL_PLUGINS" in out
    assert "[FAIL] estimator dual_grpo" in out


def test_tokenizer_checks(tokenizer_dir, text_tokenizer_dir, tmp_path):
    assert all(c.ok for c in tokenizer_checks(str(tokenizer_dir), True))
    text = tokenizer_checks(str(text_tokenizer_dir), True)
    assert not text[-1].ok and "not dedicated tokens" in text[-1].detail
    assert all(c.ok for c in tokenizer_checks(str(text_tokenizer_dir), False))
    assert not tokenizer_checks(str(tmp_path / "missing"), True)[0].ok


def test_resolve_prefixes(tokenizer, text_tokenizer):
    single = resolve_prefixes(tokenizer, require_single_token=True)
    assert single.single_token
    assert single.ids == {Mode.GENERAL: (3,), Mode.PERSONALIZED: (4,)}
    text = resolve_prefixes(text_tokenizer, require_single_token=False)
    assert not text.single_token
    for mode in Mode:
        ids = text.ids[mode]
        assert len(ids) > 1
        assert text_tokenizer.decode(list(ids)) == mode.prefix
    with pytest.raises(PrefixResolutionError, match="are not dedicated tokens"):
        resolve_prefixes(text_tokenizer, require_single_token=True)
    with pytest.raises(PrefixResolutionError, match="text prefixes were configured"):
        resolve_prefixes(tokenizer, require_single_token=False)


def test_modes_of_reads_the_head_of_each_response(tokenizer, text_tokenizer):
    import torch

    single = resolve_prefixes(tokenizer)
    responses = torch.tensor([[3, 9, 9], [4, 9, 0], [9, 3, 4], [3, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    modes, plen = single.modes_of(responses, mask)
    assert modes.tolist() == [0, 1, -1, -1]  # last row: masked (a verl padding row)
    assert plen.tolist() == [1, 1, 0, 0]
    text = resolve_prefixes(text_tokenizer)
    g, p = list(text.ids[Mode.GENERAL]), list(text.ids[Mode.PERSONALIZED])
    k = len(g)
    responses = torch.tensor([g + [9], p + [9], g[:-1] + [9, 9], [9] * (k + 1)])
    modes, plen = text.modes_of(responses)
    assert modes.tolist() == [0, 1, -1, -1]
    assert plen.tolist() == [k, len(p), 0, 0]
    assert text.mode_of_ids(p + [1, 2]) == 1 and text.mode_of_ids(g[:2]) == -1


def test_self_check_prints_the_versions_and_the_platform(capsys):
    assert check_main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[:2]] == ["versions", "platform"]


def test_environment_checks_name_the_versions():
    import importlib.util

    import torch
    import verl

    versions = environment_checks()[0]
    assert versions.name == "versions" and versions.ok
    assert versions.detail.startswith(f"verl {verl.__version__}, torch {torch.__version__}, vLLM ")
    if importlib.util.find_spec("vllm") is None:
        assert versions.detail.endswith("vLLM not installed")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or bool(glob.glob("/dev/nvidia*")), reason="a GPU host")
def test_environment_checks_name_the_platform_verl_resolves_and_why(monkeypatch):
    assert environment_checks()[1] == Check(
        "platform",
        True,
        "cpu (torch device cpu): no platform's probe succeeded, torch sees no CUDA device and there is no "
        "/dev/nvidia* file: the CPU platform",
    )
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    assert environment_checks()[1] == Check("platform", True, "nvidia (torch device cuda): VERL_PLATFORM=nvidia")
    monkeypatch.setenv("VERL_PLATFORM", "tpu")
    assert environment_checks()[1] == Check(
        "platform",
        False,
        "verl cannot resolve a platform: ValueError: Unknown platform 'tpu'. Registered: ('nvidia', 'huawei', 'amd', "
        "'cpu'). Use @PlatformRegistry.register() to add a new platform.",
    )
