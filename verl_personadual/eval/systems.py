"""Table 1 systems: a registry of :class:`System` records, one per row of the paper's Table 1 (and of any table
another system is compared in).

A system is how one row is produced: its label and row group (``section``), the prompt style and the decoding its
numbers are read from, and the checkpoint it needs (``model``, documentation). A *prompt-based* system runs the
harness's own generation (``eval run --system NAME`` presets ``--prompt-style`` and ``--decoding``); a
*generator-based* one also names a ``generator`` factory: ``(run config, option values) -> BuiltGenerator``, the
generation backend of the run (a ``generate.Generator`` or ``generate.RowGenerator``) and what it is made of (kept in
``run_config.json`` under ``generator``, so that a resumed run is checked against it), with the ``eval run``
options it reads (``options``: declared by the record, added to ``eval run``'s parser, refused without the
system). ``toy`` makes a generator-based system a line of the toy Table 1 (``verl_personadual.apps.toy_table``).

:func:`register_system` adds a record; the CLI (``--system`` choices and help, the declared options), ``compare``
(Table 1) and the toy table read the registry. Table 1 orders systems by row group, in the order each group was
first registered, then by registration. The paper's ten systems are registered at the end of this module, in its
row order; the FPPS baselines in ``verl_personadual.eval.fpps.system`` (:data:`BUILTIN_MODULES`, loaded before any
other registration). docs/extending.md adds one from outside the
project.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from verl_personadual.eval.baselines import PromptStyle
from verl_personadual.eval.generate import Decoding, Generator, RowGenerator

__all__ = [
    "BUILTIN_MODULES",
    "SECTIONS",
    "BuiltGenerator",
    "GeneratorFactory",
    "System",
    "SystemOption",
    "ToyContext",
    "ToyMember",
    "get_system",
    "is_system",
    "register_system",
    "system_names",
    "system_options",
    "systems",
]

#: The paper's Table 1 row groups, in its order.
SECTIONS = ("General purpose models", "Personalization oriented models", "Dual-mode models")


class BuiltGenerator(NamedTuple):
    """What a generator factory returns: the run's generator and what it is made of (JSON-able; ``run_config.json``'s
    ``generator``, checked on resume)."""

    generator: Generator | RowGenerator
    pins: Mapping[str, Any]


#: A generator-based system's factory: the run's config (an ``eval.run.RunConfig``, which imports this module) and the
#: values of the system's own options (by ``dest``).
GeneratorFactory = Callable[[Any, Mapping[str, Any]], BuiltGenerator]


@dataclass(frozen=True)
class SystemOption:
    """An ``eval run`` option a system reads: its flag and its ``argparse.add_argument`` keywords (``type``,
    ``metavar``, ``help``, ...; the default is None). Several systems may declare the same option (the same record)."""

    flag: str
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def dest(self) -> str:
        """The attribute the parsed value is stored under (``--fpps-dir`` -> ``fpps_dir``)."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class ToyContext:
    """What the toy table knows when it evaluates a system for one training seed: the seed, its output directory
    (the quickstart's ``--out/seed_S``), the test and calibration eval sets, the persona-following base and the
    dual-mode SFT checkpoint, and the eval settings of its runs (``--max-new-tokens``, ``--batch-size``)."""

    seed: int
    out: Path
    test: Path
    calibration: Path
    base: str
    sft: str
    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class ToyMember:
    """A system's line in the toy Table 1: its label, the checkpoint it runs on (``base`` or ``sft``), the ``eval``
    commands to run first (``(step name, argv)``; a step another system already ran is run once) and the extra
    ``eval run`` arguments of its own run."""

    label: str
    model: str
    prepare: Callable[[ToyContext], list[tuple[str, list[str]]]] = lambda ctx: []
    run_args: Callable[[ToyContext], list[str]] = lambda ctx: []

    def __post_init__(self) -> None:
        if self.model not in ("base", "sft"):
            raise ValueError(f"toy member {self.label!r}: model must be 'base' or 'sft', got {self.model!r}")


@dataclass(frozen=True)
class System:
    """One Table 1 row (module docstring). ``dual_mode``: the checkpoint is a dual-mode model, so a run refuses a
    tokenizer without the dedicated mode tokens (unless ``--text-prefixes``)."""

    name: str
    label: str
    section: str
    prompt_style: PromptStyle
    decoding: Decoding
    model: str
    dual_mode: bool = False
    generator: GeneratorFactory | None = None
    options: tuple[SystemOption, ...] = ()
    toy: ToyMember | None = None


_SYSTEMS: dict[str, System] = {}
#: The modules registering the built-in systems beyond the paper's (the FPPS baselines): imported on the first read
#: of the registry or the first registration from another module, so that built-ins come before any other system.
BUILTIN_MODULES = ("verl_personadual.eval.fpps.system",)
_builtins: list[str] = []  # the built-in modules imported so far


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        if module not in _builtins:
            _builtins.append(module)
            importlib.import_module(module)


def register_system(system: System) -> System:
    """Add ``system`` to the registry (after the built-in ones) and return it. Registering the same record again is
    a no-op; another record under a registered name, options or toy membership without a generator, or an option
    flag another system declares differently is a ValueError."""
    _load_builtins()
    return _add(system)


def _add(system: System) -> System:
    old = _SYSTEMS.get(system.name)
    if old is not None:
        if old != system:
            raise ValueError(f"system {system.name!r} is already registered with another record")
        return old
    if system.generator is None and (system.options or system.toy is not None):
        raise ValueError(f"system {system.name!r}: options and toy membership need a generator")
    declared = {o.flag: o for s in _SYSTEMS.values() for o in s.options}
    for option in system.options:
        if "default" in option.kwargs:
            raise ValueError(f"system {system.name!r}: option {option.flag} must not set a default (None: not given)")
        if declared.get(option.flag, option) != option:
            raise ValueError(f"system {system.name!r}: option {option.flag} is declared differently by another system")
    _SYSTEMS[system.name] = system
    return system


def is_system(name: str) -> bool:
    _load_builtins()
    return name in _SYSTEMS


def get_system(name: str) -> System:
    """The registered system ``name`` (KeyError naming the registered ones otherwise)."""
    _load_builtins()
    try:
        return _SYSTEMS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a registered system: {system_names()}") from None


def systems() -> list[System]:
    """Every registered system in Table 1 order: by row group (in the order groups were first registered), then by
    registration."""
    _load_builtins()
    groups = list(dict.fromkeys(s.section for s in _SYSTEMS.values()))
    return sorted(_SYSTEMS.values(), key=lambda s: groups.index(s.section))


def system_names() -> list[str]:
    return [s.name for s in systems()]


def system_options() -> dict[SystemOption, list[System]]:
    """Every declared option, once, with the systems that read it (registration order)."""
    _load_builtins()
    out: dict[SystemOption, list[System]] = {}
    for s in _SYSTEMS.values():
        for option in s.options:
            out.setdefault(option, []).append(s)
    return out


for _system in (
    System(
        "base",
        "Backbone",
        SECTIONS[0],
        PromptStyle.PERSONA,
        Decoding.FREE,
        "the backbone itself (Qwen3-8B non-thinking / Llama-3.1-8B-Instruct)",
    ),
    System(
        "cot",
        "CoT",
        SECTIONS[0],
        PromptStyle.COT,
        Decoding.FREE,
        "the backbone, prompted for chain-of-thought (the paper's CoT is trained; see README)",
    ),
    System(
        "g_sft_rl",
        "G-SFT-RL",
        SECTIONS[0],
        PromptStyle.PERSONA,
        Decoding.GENERAL,
        "general-only SFT (build_sft --only-mode general) + RL --ablation general_only",
        dual_mode=True,
    ),
    System(
        "personal_prompt",
        "Personal-Prompt",
        SECTIONS[1],
        PromptStyle.PERSONAL,
        Decoding.FREE,
        "the backbone, prompted to use the persona",
    ),
    System(
        "p_sft_rl",
        "P-SFT-RL",
        SECTIONS[1],
        PromptStyle.PERSONA,
        Decoding.PERSONALIZED,
        "personalized-only SFT (build_sft --only-mode personalized) + RL --ablation personalized_only",
        dual_mode=True,
    ),
    System(
        "alignxpert_ica",
        "AlignXpert-ICA",
        SECTIONS[1],
        PromptStyle.ALIGNXPERT_ICA,
        Decoding.FREE,
        "a checkpoint trained with AlignX's in-context alignment",
    ),
    System(
        "alignxpert_pba",
        "AlignXpert-PBA",
        SECTIONS[1],
        PromptStyle.ALIGNXPERT_PBA,
        Decoding.FREE,
        "a checkpoint trained with AlignX's preference-bridged alignment",
    ),
    System(
        "persona_dual_prompt",
        "PersonaDual-Prompt",
        SECTIONS[2],
        PromptStyle.MODE_CHOICE,
        Decoding.FREE,
        "the backbone, told to choose a mode prefix itself",
    ),
    System(
        "persona_dual_router",
        "PersonaDual-Router",
        SECTIONS[2],
        PromptStyle.PERSONA,
        Decoding.ROUTER,
        "a dual-mode checkpoint (the paper does not say which) with the router (train-router)",
        dual_mode=True,
    ),
    System(
        "persona_dual",
        "PersonaDual",
        SECTIONS[2],
        PromptStyle.PERSONA,
        Decoding.FREE,
        "the DualGRPO checkpoint",
        dual_mode=True,
    ),
):
    _add(_system)
