"""The FPPS baselines as Table 1 systems (``eval run --system fpps_h | fpps_s | fpps_m --fpps DIR``), registered
as any generator-based system is (``verl_personadual.eval.systems``): their own row group after the paper's, the
``--fpps`` option they read, the generator of each variant (``generator.fpps_generator``) and their lines of the
toy Table 1 (``eval fpps-fit`` on the toy's persona-following base over the calibration set, once per seed, then
each variant's run with ``--fpps``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Mapping

from verl_personadual.eval.fpps.fit import STYLE
from verl_personadual.eval.fpps.generator import fpps_generator
from verl_personadual.eval.fpps.steer import Variant
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.run import RunConfig
from verl_personadual.eval.systems import BuiltGenerator, System, SystemOption, ToyContext, ToyMember, register_system

__all__ = ["FPPS_OPTION", "FPPS_SECTION", "FPPS_SYSTEMS"]

#: The row group of the FPPS baselines (Sun et al. 2026, "When Personalization Misleads"), after the paper's.
FPPS_SECTION = "Hidden-state steering (FPPS)"
#: ``eval run --fpps DIR``: the artifact the FPPS systems run with.
FPPS_OPTION = SystemOption(
    "--fpps",
    {
        "type": Path,
        "metavar": "DIR",
        "help": "FPPS artifact from `fpps-fit` (its --out), for --system fpps_h / fpps_s / fpps_m: the checkpoint it "
        "was fit on, transformers backend, greedy, decoding free",
    },
)


def _generator(variant: Variant, cfg: RunConfig, options: Mapping[str, Any]) -> BuiltGenerator:
    return fpps_generator(variant, cfg, options["fpps"])


def _fit(ctx: ToyContext) -> list[tuple[str, list[str]]]:
    """The toy's ``eval fpps-fit`` step: the base over the calibration set, the test set kept out."""
    argv = ["fpps-fit", "--model", ctx.base, "--eval-set", str(ctx.calibration), "--test-eval-set", str(ctx.test)]
    argv += ["--out", str(ctx.out / "fpps"), "--seed", str(ctx.seed), "--max-new-tokens", str(ctx.max_new_tokens)]
    argv += ["--personalized", "task=helpful", "--device", "cpu", "--dtype", "float32"]
    return [("fpps-fit", argv + ["--batch-size", str(ctx.batch_size)])]


def _toy_args(ctx: ToyContext) -> list[str]:
    return ["--fpps", str(ctx.out / "fpps")]


def _fpps(name: str, label: str, variant: Variant, what: str) -> System:
    return register_system(
        System(
            name,
            label,
            FPPS_SECTION,
            STYLE,
            Decoding.FREE,
            f"the backbone with an `eval fpps-fit` artifact (--fpps): {what}",
            generator=partial(_generator, variant),
            options=(FPPS_OPTION,),
            toy=ToyMember(f"{label} (on the base)", "base", _fit, _toy_args),
        )
    )


#: The three FPPS variants, registered.
FPPS_SYSTEMS = (
    _fpps("fpps_h", "FPPS-H", "hard", "gate to the persona-free state"),
    _fpps("fpps_s", "FPPS-S", "soft", "soft steering along s_f"),
    _fpps("fpps_m", "FPPS-M", "mixed", "hard above tau, soft below"),
)
