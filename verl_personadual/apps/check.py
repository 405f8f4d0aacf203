"""Self-check: is the plugin visible to a plain ``import verl``, which verl platform will a run use and why, and do
the mode prefixes encode as expected?

verl loads entry points and swallows their errors at DEBUG level, so a broken install otherwise shows up only
mid-run as "Unknown advantage estimator simply: dual_grpo". Run::

    python -m verl_personadual.check                       # versions, platform, registrations (fresh interpreters)
    python -m verl_personadual.check --tokenizer PATH      # ... and the mode prefixes of a tokenizer/model

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from verl_personadual.core import names
from verl_personadual.data.preflight import PreflightError, looks_local
from verl_personadual.utils.cli import Parser
from verl_personadual.utils.errors import run_cli

__all__ = ["Check", "environment_checks", "registration_checks", "tokenizer_checks", "main"]

ENTRY_POINT_GROUP = "verl.plugins"
ENTRY_POINT_TARGET = "verl_personadual.core.plugin"

# Runs in a fresh interpreter that imports only verl: it reports what verl's registries hold.
_PROBE = textwrap.dedent(
    """
    import json, sys
    import verl
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    json.dump({
        "estimators": sorted(core_algos.ADV_ESTIMATOR_REGISTRY),
        "trainers": sorted(TRAINER_REGISTRY),
        "agent_loops": sorted(_agent_loop_registry),
        "plugin_imported": "verl_personadual.core.plugin" in sys.modules,
    }, sys.stdout)
    """
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


#: Distributions whose versions the check prints (name shown -> distribution).
VERSIONED = {"verl": "verl", "torch": "torch", "vLLM": "vllm"}

# Runs in a fresh interpreter: the platform verl's first get_platform() resolves there, and the plugin's account of
# why (core/cpu/platform.choose_platform on this host's facts).
_PLATFORM_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import verl
    from verl.plugin.platform import get_platform
    from verl.plugin.platform.platform_manager import PlatformRegistry
    platform = get_platform()
    names = [n for n in PlatformRegistry.registered_names() if PlatformRegistry.get(n) is type(platform)]
    from verl_personadual.core.cpu.platform import PlatformCPU, accelerators_available, choose_platform
    probed, available = accelerators_available()
    requested = os.environ.get("VERL_PLATFORM", "").strip().lower()
    choice = choose_platform(requested, available, PlatformCPU.gpu_probe())
    json.dump({
        "resolved": names[0] if names else type(platform).__qualname__,
        "device": platform.device_name,
        "chosen": choice.name,
        "reason": choice.reason,
    }, sys.stdout)
    """
)


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def environment_checks() -> list[Check]:
    """The versions of verl, torch and vLLM, and the verl platform a run in this environment resolves (in a fresh
    interpreter, as a run does), with the reason; failed when verl resolves another platform than the plugin's
    rule says (the plugin is not loaded) or cannot resolve one."""
    checks = [Check("versions", True, ", ".join(f"{name} {_version(d)}" for name, d in VERSIONED.items()))]
    proc = subprocess.run([sys.executable, "-c", _PLATFORM_PROBE], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        return checks + [Check("platform", False, f"verl cannot resolve a platform: {tail}")]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    if seen["resolved"] != seen["chosen"]:
        detail = (
            f"verl resolves {seen['resolved']!r}, but the plugin's rule gives {seen['chosen']!r} ({seen['reason']}): "
            "is the plugin loaded?"
        )
        return checks + [Check("platform", False, detail)]
    return checks + [Check("platform", True, f"{seen['resolved']} (torch device {seen['device']}): {seen['reason']}")]


def _entry_point_check() -> Check:
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value == ENTRY_POINT_TARGET]
    if not eps:
        return Check(
            "entry point",
            False,
            f"no '{ENTRY_POINT_GROUP}' entry point targets {ENTRY_POINT_TARGET}: reinstall with `pip install -e .`",
        )
    return Check("entry point", True, f"{ENTRY_POINT_GROUP}: {eps[0].name} = {eps[0].value}")


def _plugin_policy_check() -> Check:
    policy = os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "auto":
        return Check("VERL_USE_EXTERNAL_PLUGINS", True, "auto (all plugins load)")
    allowed = {p.strip() for p in policy.split(",")}
    names_here = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value == ENTRY_POINT_TARGET}
    ok = policy != "none" and bool(allowed & names_here)
    return Check(
        "VERL_USE_EXTERNAL_PLUGINS",
        ok,
        f"{policy!r}" + ("" if ok else f": verl will not load this plugin; unset it or include {sorted(names_here)}"),
    )


#: Imports the plugin and then each of its registering modules (most are imported only when verl imports the
#: registry they register with).
_IMPORT_ALL = (
    f"import importlib, {ENTRY_POINT_TARGET} as p\nfor m in p.REGISTERING_MODULES:\n    importlib.import_module(m)\n"
)


def _plugin_import_error() -> str:
    """The error a direct import of the plugin or of one of its registering modules raises, or '' when none."""
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=300)
    return "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def registration_checks() -> list[Check]:
    """Entry point, plugin policy, and the registries of a fresh ``import verl`` (in a subprocess)."""
    checks = [_entry_point_check(), _plugin_policy_check()]
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        return checks + [Check("import verl", False, f"a fresh `import verl` failed: {tail}")]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    checks.append(Check("import verl", True, "fresh interpreter; plugin loaded: " + str(seen["plugin_imported"])))
    wanted = [
        ("estimator", names.ESTIMATOR, seen["estimators"]),
        *(("trainer", mode, seen["trainers"]) for mode in names.TRAINER_MODES.values()),
        ("agent loop", names.AGENT_LOOP_FORCED, seen["agent_loops"]),
        ("agent loop", names.AGENT_LOOP_FREE, seen["agent_loops"]),
    ]
    missing = [n for _, n, reg in wanted if n not in reg]
    error = _plugin_import_error() if missing else ""
    for kind, name, registry in wanted:
        ok = name in registry
        detail = (
            "registered" if ok else "missing after `import verl`" + (f"; plugin import fails: {error}" if error else "")
        )
        checks.append(Check(f"{kind} {name}", ok, detail))
    return checks


def tokenizer_checks(path: str, require_single_token: bool | None) -> list[Check]:
    """The mode prefixes of the tokenizer at ``path`` resolve as configured (see modes.resolve_prefixes)."""
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import PrefixResolutionError, resolve_prefixes

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # any loading failure is a failed check, reported with its cause
        return [Check("tokenizer", False, f"cannot load {path}: {type(exc).__name__}: {exc}")]
    checks = [Check("tokenizer", True, f"{path} ({len(tokenizer)} tokens)")]
    try:
        prefixes = resolve_prefixes(tokenizer, require_single_token=require_single_token)
    except PrefixResolutionError as exc:
        return checks + [Check("mode prefixes", False, str(exc))]
    kind = "dedicated tokens" if prefixes.single_token else "text (multi-token)"
    detail = ", ".join(f"{m.prefix} -> {list(ids)}" for m, ids in prefixes.ids.items())
    checks.append(Check("mode prefixes", True, f"{kind}: {detail}"))
    has_template = bool(getattr(tokenizer, "chat_template", None))
    checks.append(Check("chat template", has_template, "present" if has_template else "missing: RL prompts need one"))
    return checks


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when every check passed, 1 when one failed; a bad argument is one ``error:`` line and
    exit status 2 (``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = Parser(
        prog="python -m verl_personadual.check",
        description=(
            "Print the versions of verl, torch and vLLM and the verl platform a run here resolves (and why); check "
            "that a plain `import verl` sees every registration of verl-personadual (estimator, trainer glue, "
            "agent loops) and, with --tokenizer, that the mode prefixes encode as the configuration expects. "
            "To make a plugin import failure abort `import verl` itself, set "
            "VERL_USE_EXTERNAL_MODULES=verl_personadual.core.plugin."
        ),
    )
    parser.add_argument("--tokenizer", metavar="PATH", help="tokenizer or HF model directory to check")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--text-prefixes",
        action="store_true",
        help="the prefixes are plain text (algorithm.dual_grpo.require_mode_tokens=false); default: dedicated tokens",
    )
    kind.add_argument("--any-prefix-kind", action="store_true", help="accept dedicated tokens or text")
    args = parser.parse_args(argv)

    if args.tokenizer and looks_local(args.tokenizer) and not Path(args.tokenizer).expanduser().exists():
        raise PreflightError(f"--tokenizer {args.tokenizer}: no such directory")
    checks = environment_checks() + registration_checks()
    if args.tokenizer:
        require = None if args.any_prefix_kind else (False if args.text_prefixes else True)
        checks += tokenizer_checks(args.tokenizer, require)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'[ok]  ' if c.ok else '[FAIL]'} {c.name.ljust(width)}  {c.detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
