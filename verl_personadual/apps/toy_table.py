"""The toy Table 1: every system side by side on 200 held-out items of the relational toy, over several training seeds.

    python -m verl_personadual.toy_table [--out outputs/toy_table] [--seeds 1 2 3 4 5] [--no-progress]

The task is :data:`TABLE_TASK`: the relational toy (``verl_personadual.data.toy``, variant ``relational``: only the
relation between persona and question says which mode is right) with an SFT that prefers the general mode
(:data:`PERSONALIZED_SHARE` of each kind's SFT items personalized, the rest general); the quickstart keeps its own
toy. For each training seed S (``--seeds``; one seed drives the tiny model's weights, SFT and RL:
``quickstart.stages.seed_overrides``), under ``--out/seed_S`` (a quickstart ``--out`` with more stages):

1. the quickstart's stages on :data:`TABLE_TASK` with the four RL recipes ``none`` (PersonaDual), ``no_dual_adv``,
   ``no_dual_adv_no_prefix_forcing`` and ``grpo``, each from the same dual-mode SFT checkpoint (PersonaDual-SFT);
   every checkpoint evaluated in free and both forced decodings, with its mode probabilities;
2. the *persona-following base*: verl's SFT trainer from the same tiny model on ``toy.build_base_sft`` (the
   personalized rule's answer for every SFT item, no mode prefix): an untrained-for-modes backbone that follows any
   persona, misleading ones too. It is the toy's Backbone row and what FPPS steers;
3. every generator-based system with toy membership (:func:`toy_members`, ``eval.systems.ToyMember``): its
   preparing ``eval`` steps, then its ``eval run --system NAME``. FPPS (``eval.fpps.system``): ``eval fpps-fit`` on
   the base over the calibration set (``--out/calibration/eval_set.jsonl``: ``toy.build_calibration`` of the
   relational toy, generator seed 1, no item shared with the test set), then ``eval run --system fpps_h | fpps_s |
   fpps_m``;
4. PersonaDual-Router: ``train-router`` on PersonaDual-SFT's forced answers to the calibration set, then ``eval run
   --system persona_dual_router`` (with both forced decodings, for selection accuracy);
5. PersonaDual-Prompt: PersonaDual-SFT told to choose its mode prefix (``--system persona_dual_prompt``, with both
   forced decodings under that prompt). The paper prompts its untrained backbone; the toy's backbone knows no mode
   prefixes, so the toy prompts the dual-mode SFT checkpoint instead.

Then ``eval compare`` over the seeds (``--out/systems/<line>/seed_S`` link each seed's run) writes
``--out/table/table1_toy.{md,csv}`` (accuracy on unaligned / aligned personas, personalized accuracy, selection
accuracy, P(better mode); mean ± 95 % t-interval over the seeds) and ``table1.{md,csv}``. Every step is resumable:
a rerun skips what finished, and a killed RL run continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from verl_personadual.apps import eval_cli
from verl_personadual.apps.quickstart.report import metric_curves, read_jsonl
from verl_personadual.apps.quickstart.stages import EVAL_MAX_NEW_TOKENS, Quickstart, StageError, say
from verl_personadual.core.metrics import ALL, MODE_MASS_METRIC, metric_name
from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.data import toy
from verl_personadual.data.preflight import check_output_dir
from verl_personadual.eval.report import read_complete_run
from verl_personadual.eval.systems import System, ToyContext, ToyMember, get_system, systems
from verl_personadual.eval.toy_evidence import (
    HELPFUL_MISLEADING,
    Claim,
    CurveAtMost,
    Curves,
    Greater,
    Panel,
    SeedValues,
    Within,
    WithinOf,
    seed_values,
    write_evidence,
)
from verl_personadual.eval.toy_table import P_BETTER, PERSONALIZED, SELECTION, UNALIGNED, toy_part
from verl_personadual.utils.cli import Parser, non_negative
from verl_personadual.utils.errors import UserError, run_cli
from verl_personadual.utils.outputs import Build, claim_output

__all__ = [
    "ABLATIONS",
    "CLAIMS",
    "OWN_LINES",
    "PANELS",
    "PERSONALIZED_SHARE",
    "TABLE_TASK",
    "Line",
    "ToyTable",
    "lines",
    "main",
    "toy_members",
]

#: The RL recipes trained from each seed's SFT checkpoint (``--ablation`` of the quickstart).
ABLATIONS = ("none", "no_dual_adv", "no_dual_adv_no_prefix_forcing", "grpo")
#: ``--batch-size`` of the table's ``eval`` commands.
RUN_BATCH_SIZE = 64
#: Items of the calibration set (FPPS fit, router training); the test set is the quickstart's 200 held-out items.
CALIBRATION_ITEMS = 200
#: Toy generator seed of the calibration items (the test items are seed 0's).
CALIBRATION_SEED = 1
#: Share of each kind's SFT items taught in the personalized mode (the rest in the general mode). Chosen before any
#: run, from the paper (README "Toy Table 1: predictions"): the same share on every kind, so SFT teaches no mode
#: selection and what the table measures is what RL adds; both rules taught on every kind, so either forced mode
#: answers by its rule; and a preference for one mode, as the paper reports after its SFT (§3.3: pi(pfx_gm | q, p)
#: >> pi(pfx_pm | q, p)) and as a gain-based SFT mostly on objective items gives (App. B.1), so that free sampling
#: at the rollout temperature (0.6) opens the general mode on about 0.8^(1/0.6) / (0.8^(1/0.6) + 0.2^(1/0.6)) =
#: 91 % of rows if the SFT policy matches its data's 80 / 20. Prefix-forced sampling exists for such a policy; with
#: 50 / 50 (the quickstart's SFT) free sampling explores both modes anyway.
PERSONALIZED_SHARE = 0.2
#: The toy of the table: the relational variant, 3,200 SFT items (one row each: the quickstart's 3,200 SFT rows and
#: steps), the quickstart's other sizes, :data:`PERSONALIZED_SHARE` on every kind.
TABLE_TASK = toy.ToyTask(
    toy.ToyVariant.RELATIONAL,
    toy.ToySizes(sft=3200),
    {kind.value: PERSONALIZED_SHARE for kind in toy.ToyKind},
)


@dataclass(frozen=True)
class Line:
    """One line of the toy Table 1: a key (``--out/systems/<key>``), the Table 1 system it is read as, its label,
    and the run directory under ``--out/seed_S`` that holds it."""

    key: str
    system: System
    label: str
    run: str


#: The table's own lines (the toy's prompt-based systems and checkpoints), before the generator-based systems.
OWN_LINES: tuple[Line, ...] = (
    Line("base", get_system("base"), "Backbone (persona-following base)", "eval/base"),
    Line("prompt", get_system("persona_dual_prompt"), "PersonaDual-Prompt (on PersonaDual-SFT)", "eval/prompt"),
    Line("router", get_system("persona_dual_router"), "PersonaDual-Router (on PersonaDual-SFT)", "eval/router"),
    Line("sft", get_system("persona_dual"), "PersonaDual-SFT", "eval/sft"),
    Line("rl-none", get_system("persona_dual"), "PersonaDual (DualGRPO)", "eval/rl-none"),
    Line("rl-no_dual_adv", get_system("persona_dual"), "w/o DualAdv", "eval/rl-no_dual_adv"),
    Line(
        "rl-no_dual_adv_no_prefix_forcing",
        get_system("persona_dual"),
        "w/o DualAdv + PfxSmp",
        "eval/rl-no_dual_adv_no_prefix_forcing",
    ),
    Line("rl-grpo", get_system("persona_dual"), "plain GRPO", "eval/rl-grpo"),
)


def toy_members() -> list[tuple[System, ToyMember]]:
    """The registered generator-based systems with toy membership (``System.toy``; the FPPS baselines), in Table 1
    order."""
    return [(s, s.toy) for s in systems() if s.toy is not None]


def lines() -> list[Line]:
    """Every line of the table: :data:`OWN_LINES`, then one per system of :func:`toy_members`, keyed by its name."""
    return list(OWN_LINES) + [Line(s.name, s, member.label, f"eval/{s.name}") for s, member in toy_members()]


#: Rollout personalized rate of a training step (every row of the batch).
ROLLOUT_RATE = metric_name("train", ALL, ALL, "personalized_rate")
#: The README's pre-registered setting checks (S) and claims (C) on the table's lines, in its order ("Toy Table 1:
#: predictions"); ``rests_on`` names the setting checks a claim's mechanism assumes (the README says which).
CLAIMS: tuple[Claim, ...] = (
    Within("S1", "sft", ((PERSONALIZED, None, 10.0), (UNALIGNED, 90.0, None))),
    Within("S2", "router", ((SELECTION, 40.0, 60.0),)),
    Within("S3", "base", ((UNALIGNED, None, 10.0),)),
    Greater("C1", "rl-none", "sft", SELECTION),
    Greater("C2", "rl-none", "sft", PERSONALIZED, ("S1",)),
    Greater("C3", "rl-none", "rl-no_dual_adv_no_prefix_forcing", SELECTION, ("S1",)),
    Greater("C4", "rl-none", "rl-no_dual_adv_no_prefix_forcing", P_BETTER, ("S1",)),
    Greater("C5", "rl-none", "rl-no_dual_adv", P_BETTER),
    Greater("C6", "rl-no_dual_adv", "rl-no_dual_adv_no_prefix_forcing", P_BETTER, ("S1",)),
    CurveAtMost("C7a", "rl-no_dual_adv_no_prefix_forcing", ROLLOUT_RATE, 0.2, ("S1",)),
    CurveAtMost("C7b", "rl-grpo", ROLLOUT_RATE, 0.2, ("S1",)),
    Greater("C8", "rl-none", "router", SELECTION, ("S2",)),
    Greater("C9", "rl-none", "prompt", SELECTION),
    Greater("C10", "rl-none", "base", UNALIGNED, ("S3",)),
    Greater("C11", "rl-none", "fpps_h", HELPFUL_MISLEADING, ("S3",)),
    Greater("C12", "rl-none", "fpps_m", HELPFUL_MISLEADING, ("S3",)),
    WithinOf("C13", "fpps_s", "base", UNALIGNED, 10.0),
)
#: The columns of ``dynamics.png`` (one row per RL variant, a line per seed).
PANELS: tuple[Panel, ...] = (
    Panel("rollout personalized rate", (ROLLOUT_RATE,), "rate"),
    Panel("mode-token mass (forced prefixes)", (MODE_MASS_METRIC,), "mass"),
    Panel(
        "validation personalized rate:\naligned (solid), unaligned (dashed)",
        tuple(
            metric_name("val", ALL, s.value, "personalized_rate")
            for s in (PersonaSetting.ALIGNED, PersonaSetting.UNALIGNED)
        ),
        "rate",
    ),
)


def _eval(argv: list[str]) -> dict:
    """``python -m verl_personadual.eval ARGV`` in this process; returns ``{"command": ...}`` (a stage marker); a
    non-zero exit is a StageError naming it (the command's own ``error:`` line is on stderr above)."""
    command = f"python -m verl_personadual.eval {shlex.join(argv)}"
    say(f"    $ {command}")
    status = eval_cli.main(argv)
    if status != 0:
        raise StageError(f"`python -m verl_personadual.eval {argv[0]}` failed (exit {status}); see the error above")
    return {"command": command}


class ToyTable:
    """The steps of the module docstring under ``out``, for ``seeds``."""

    def __init__(self, out: Path, seeds: Sequence[int], progress: bool = True) -> None:
        self.out = out.absolute()
        self.seeds = list(seeds)
        self.progress = progress
        self.calibration = self.out / "calibration" / "eval_set.jsonl"

    def _run(self, root: Path, eval_set: Path, model: str, out: str, *extra: str) -> list[str]:
        """``eval run`` arguments: ``model`` on ``eval_set``, greedy, with the quickstart's eval settings, into
        ``root/out``, plus ``extra``."""
        return [
            "run",
            "--model",
            model,
            "--benchmarks",
            "toy",
            "--eval-set",
            str(eval_set),
            "--backend",
            "hf",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--batch-size",
            str(RUN_BATCH_SIZE),
            "--max-new-tokens",
            str(EVAL_MAX_NEW_TOKENS),
            "--out",
            str(root / out),
            *extra,
        ] + ([] if self.progress else ["--no-progress"])

    def _base(self, qs: Quickstart) -> dict:
        """Steps 2a-b: the persona-following SFT rows, then the base model trained on them."""
        rows = toy.build_base_sft(qs.data, TABLE_TASK.sizes, 0, TABLE_TASK.variant)
        return {**qs.train_sft("sft_base", qs.data / "sft_base" / "train.parquet", rows), "rows": rows}

    def quickstart(self, seed: int) -> Quickstart:
        """Step 1 of training seed ``seed``: the quickstart's stages on :data:`TABLE_TASK` under ``--out/seed_S``."""
        return Quickstart(self.out / f"seed_{seed}", ABLATIONS, progress=self.progress, seed=seed, toy_task=TABLE_TASK)

    def eval_steps(self, ctx: ToyContext) -> list[tuple[str, list[str]]]:
        """Steps 2c-5 of one training seed as ``(stage name, eval argv)``: the base's run, each toy member's
        preparing steps (a step name already listed runs once) and run, then the router's and the prompt's runs."""
        router = ctx.out / "router.json"
        forced = ("general", "personalized")
        steps: list[tuple[str, list[str]]] = [
            ("eval-base", self._run(ctx.out, ctx.test, ctx.base, "eval/base", "--system", "base"))
        ]
        for system, member in toy_members():
            steps += [step for step in member.prepare(ctx) if step[0] not in dict(steps)]
            model = ctx.base if member.model == "base" else ctx.sft
            run = self._run(
                ctx.out, ctx.test, model, f"eval/{system.name}", "--system", system.name, *member.run_args(ctx)
            )
            steps.append((f"eval-{system.name}", run))
        steps += [
            (
                "eval-router-calibration",
                self._run(ctx.out, ctx.calibration, ctx.sft, "eval/router_calibration", "--decoding", *forced),
            ),
            ("router", ["train-router", str(ctx.out / "eval/router_calibration"), "--out", str(router)]),
            (
                "eval-router",
                self._run(
                    ctx.out,
                    ctx.test,
                    ctx.sft,
                    "eval/router",
                    "--system",
                    "persona_dual_router",
                    "--router",
                    str(router),
                    "--decoding",
                    "router",
                    *forced,
                ),
            ),
            (
                "eval-prompt",
                self._run(
                    ctx.out,
                    ctx.test,
                    ctx.sft,
                    "eval/prompt",
                    "--system",
                    "persona_dual_prompt",
                    "--decoding",
                    "free",
                    *forced,
                ),
            ),
        ]
        return steps

    def seed(self, index: int, seed: int) -> None:
        """Every run of one training seed (module docstring, steps 1-5)."""
        say(f"seed {seed} ({index}/{len(self.seeds)})")
        qs = self.quickstart(seed)
        qs.run_all()
        test = qs.data / "eval_set.jsonl"
        if not self.calibration.exists():
            test_items = [json.loads(line)["item_id"] for line in test.open(encoding="utf-8")]
            kinds = toy.build_calibration(
                self.calibration, test_items, CALIBRATION_ITEMS, CALIBRATION_SEED, TABLE_TASK.variant
            )
            say(f"calibration set (FPPS, router) -> {self.calibration} (rows per kind: {json.dumps(kinds)})")
        sft = qs.finished("sft")["checkpoint"]
        qs.stage(
            1, 1, "sft-base", "the persona-following base: verl SFT trainer, recipe cpu_toy", lambda: self._base(qs)
        )
        base = qs.finished("sft-base")["checkpoint"]
        ctx = ToyContext(seed, qs.out, test, self.calibration, base, sft, EVAL_MAX_NEW_TOKENS, RUN_BATCH_SIZE)
        steps = self.eval_steps(ctx)
        for i, (name, argv) in enumerate(steps, 1):
            qs.stage(i, len(steps), name, f"eval {argv[0]}", lambda argv=argv: _eval(argv))

    def link_systems(self) -> list[str]:
        """``--out/systems/<key>/seed_S`` -> each seed's run of that line; returns compare's ``--system`` args."""
        args = []
        for line in lines():
            folder = self.out / "systems" / line.key
            folder.mkdir(parents=True, exist_ok=True)
            for seed in self.seeds:
                link, target = folder / f"seed_{seed}", self.out / f"seed_{seed}" / line.run
                if not target.is_dir():
                    raise StageError(f"{target}: no such run (a step of seed {seed} did not finish)")
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(os.path.relpath(target, folder), target_is_directory=True)
            args += ["--system", f"{line.system.name}:{line.label}={folder}"]
        return args

    def seed_values(self) -> list[SeedValues]:
        """Every line's :class:`SeedValues` on every seed, from the runs :meth:`link_systems` links."""
        out = []
        for line in lines():
            decoding = line.system.decoding.value
            for seed in self.seeds:
                run = self.out / f"seed_{seed}" / line.run
                (records,) = read_complete_run(f"{line.key} seed {seed}", run)
                out.append(seed_values(line.key, seed, toy_part(records, run), decoding))
        return out

    def curves(self) -> dict[tuple[str, int], Curves]:
        """(``rl-<ablation>``, seed) -> the RL run's training curves (its verl file-logger ``metrics.jsonl``)."""
        out: dict[tuple[str, int], Curves] = {}
        for seed in self.seeds:
            for ablation in ABLATIONS:
                metrics = self.out / f"seed_{seed}" / "runs" / ablation / "metrics.jsonl"
                out[(f"rl-{ablation}", seed)] = metric_curves(read_jsonl(metrics)) if metrics.is_file() else {}
        return out

    def run_all(self) -> Path:
        """Every seed, then the table; returns ``--out/table``."""
        start = time.monotonic()
        for i, seed in enumerate(self.seeds, 1):
            self.seed(i, seed)
        table = self.out / "table"
        _eval(["compare", *self.link_systems(), "--out", str(table)])
        written = write_evidence(
            table,
            self.seed_values(),
            CLAIMS,
            self.curves(),
            {line.key: line.label for line in lines()},
            [f"rl-{a}" for a in ABLATIONS],
            PANELS,
        )
        say(f"per-seed values, claims and plots -> {', '.join(p.name for p in written)}")
        say(f"toy Table 1 over seeds {self.seeds} -> {table / 'table1_toy.md'} ({time.monotonic() - start:.0f} s)")
        return table


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0; a user error or a failed step is one ``error:`` line on stderr and exit status 2."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = Parser(
        prog="python -m verl_personadual.toy_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/toy_table"), help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--seeds", type=non_negative, nargs="+", default=[1, 2, 3, 4, 5], help="training seeds (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds {args.seeds}: a seed given twice")
    check_output_dir(args.out)
    # inputs: each seed's quickstart pins its own (stages.py); more seeds extend the table
    with claim_output(args.out, Build("toy_table", "toy-table"), overwrite=None):
        table = ToyTable(args.out, args.seeds, progress=not args.no_progress).run_all()
        text = (table / "table1_toy.md").read_text(encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
