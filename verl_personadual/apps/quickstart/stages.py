"""The main job on a CPU: a tiny model learns *when* to use the persona, SFT -> DualGRPO -> eval, in minutes.

    python -m verl_personadual.quickstart [--out outputs/quickstart] [--ablation none no_dual_adv ...] [--set K=V ...]

Stages (each one's outputs under --out; a rerun skips the stages already finished, so a killed run resumes, and an
RL run killed mid-way continues from its last checkpoint, saved every 4 steps):

1. check     the plugin's registrations, seen by a fresh ``import verl``;
2. data      the toy persona task (``python -m verl_personadual.apps.build_toy``): RL + SFT parquet and a held-out eval
set;
3. model     a tiny random Qwen3 with untied embeddings and a tokenizer made for the toy (``tiny_model``); then
             every check of each RL run's launch (``recipes rl --dry-run`` with the ``--set`` overrides), before SFT;
4. sft       Stage 1 with verl's SFT trainer, recipe backbone ``cpu_toy`` (both modes on every item, no preference);
5. eval-sft  the eval harness on the held-out set (free, forced general, forced personalized) + mode probabilities;
6. rl        Stage 2 with verl's real ``main_ppo`` and ``algorithm.adv_estimator=dual_grpo`` (recipe ``cpu_toy``),
             one run per ``--ablation`` (``--set`` adds Hydra overrides to each, e.g.
             ``--set algorithm.dual_grpo.prefix_kl=mass``; the run is then labelled ``none+prefix_kl=mass``);
7. eval-rl   the same evaluation of each RL checkpoint;
8. report    ``report.md`` + ``report.png`` + ``summary.json``: mode-selection accuracy, probability of the better
             mode, free accuracy vs the forced upper bound, before and after RL, and verl's per-step curves
             (definitions: ``verl_personadual.apps.quickstart.report``). With several ablations the table is the toy's
             Table 2.

The last line printed starts ``mode-selection accuracy:`` (before -> after RL). Logs of the training stages are in
``--out/logs``; a failing stage is named with the reason and its log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from verl_personadual.data.toy import ToyTask
from verl_personadual.utils.atomic import atomic_write_text, write_json
from verl_personadual.utils.errors import UserError

__all__ = ["Quickstart", "StageError", "run_label", "seed_overrides", "MODEL_SEED", "TOY_BACKBONE"]

#: The stages before RL, in order: what ``--stop-after`` accepts.
FIRST_STAGES = ("check", "data", "model", "sft", "eval-sft")
#: Recipe backbone of both stages (``recipes/config/{sft,rl}_backbone/cpu_toy.yaml``).
TOY_BACKBONE = "cpu_toy"
#: Weight-initialisation seed of the tiny model (the README's figures were measured with it).
MODEL_SEED = 1
#: Tokens of a response in the eval harness: the mode token plus ``{"answer": "false"}`` with room to spare.
EVAL_MAX_NEW_TOKENS = 16
_STEP = re.compile(r"\bstep:(\d+)\b")
#: A child command's own user-error line (``errors.run_cli``), and, failing that, any line that looks like an error.
_CHILD_ERROR = re.compile(r"^error: (.*)$")
_ANY_ERROR = re.compile(r"(Error|error:|Exception)\b")


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the quickstart's child commands: offline, no Ray usage stats, no tokenizer threads."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra or {}),
    }


class StageError(UserError, RuntimeError):
    """A quickstart stage failed; the message names the stage, the reason and where its log is."""


def say(text: str) -> None:
    print(f"[quickstart] {text}", flush=True)


def run_label(ablation: str, overrides: Sequence[str]) -> str:
    """An RL run's label: the ablation, plus each override's last key segment and value
    (``none`` + ``algorithm.dual_grpo.prefix_kl=mass`` -> ``none+prefix_kl=mass``)."""
    parts = [ablation]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StageError(f"--set {item!r}: expected KEY=VALUE")
        parts.append(f"{key.lstrip('+~').split('.')[-1]}={value}")
    return "+".join(parts).replace("/", "_")


def seed_overrides(stage: str, seed: int) -> list[str]:
    """Hydra overrides that seed a training stage (``sft`` or ``rl``) with ``seed``: every seed the composed
    recipe has (SFT: data order and engine; RL: data order, mini-batch order, rollout sampling)."""
    keys = {
        "sft": ("trainer.seed", "engine.seed"),
        "rl": ("data.seed", "actor_rollout_ref.actor.data_loader_seed", "actor_rollout_ref.rollout.seed"),
    }[stage]
    return [f"{key}={seed}" for key in keys]


def _hf_dir(root: Path, sub: str) -> Path | None:
    """The newest ``global_step_N/<sub>`` checkpoint directory under ``root`` with a config.json, or None."""
    found = sorted(
        (int(p.name.split("_")[-1]), p / sub)
        for p in root.glob("global_step_*")
        if p.name.split("_")[-1].isdigit() and (p / sub / "config.json").exists()
    )
    return found[-1][1] if found else None


def _saved_step(ckpt_root: Path) -> int:
    """The step of the newest complete checkpoint verl recorded under ``ckpt_root`` (its
    ``latest_checkpointed_iteration.txt``, written after the step's folder), or 0."""
    latest = ckpt_root / "latest_checkpointed_iteration.txt"
    try:
        step = int(latest.read_text().strip())
    except (OSError, ValueError):
        return 0
    return step if (ckpt_root / f"global_step_{step}" / "actor").is_dir() else 0


def _metric_lines(path: Path, keep: Callable[[int], bool]) -> list[str]:
    """The whole lines of a verl file-logger JSONL whose step ``keep`` accepts (a torn last line is dropped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
        if line.endswith("\n") and keep(step):
            out.append(line)
    return out


class Quickstart:
    """The stages of the module docstring on one output directory."""

    def __init__(
        self,
        out: Path,
        ablations: Sequence[str],
        progress: bool = True,
        overrides: Sequence[str] = (),
        seed: int | None = None,
        toy_task: ToyTask = ToyTask(),
        timeline: list[tuple[str, float, str]] | None = None,
    ) -> None:
        """``seed`` None: the recipes' own seeds and :data:`MODEL_SEED` (the README's figures); an int: that seed
        for the tiny model's weights and for SFT and RL (:func:`seed_overrides`), one training seed of a
        multi-seed comparison. ``toy_task``: the toy to build (default: the quickstart's, the occupations variant
        with both modes of every SFT item; the toy table passes its own). ``timeline``: a list that gets
        ``(stage, time.monotonic(), line)`` for every line a training command prints, and ``(stage, time, "")``
        when it is started and when it has exited (``benchmarks/bench_cpu_path.py`` splits a stage's wall time with
        it)."""
        self.out = out.absolute()
        self.toy_task = toy_task
        self.timeline = timeline
        self.overrides = list(overrides)
        self.seed = seed
        #: run label -> ablation
        self.runs = {run_label(a, self.overrides): a for a in ablations}
        self.progress = progress
        self.data = self.out / "data"
        self.model = self.out / "model"
        self.logs = self.out / "logs"

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def _marker(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    def finished(self, name: str) -> dict:
        """What stage ``name`` recorded when it finished (its marker: checkpoint, command, ...); a StageError when
        it has not finished."""
        marker = self._marker(name)
        if not marker.exists():
            raise StageError(f"stage {name} has not finished under {self.out}")
        return json.loads(marker.read_text())

    def stage(self, index: int, total: int, name: str, title: str, fn: Callable[[], dict]) -> None:
        """Run ``fn`` unless its marker says it finished; write the marker (what it produced) when it does."""
        marker = self._marker(name)
        if marker.exists():
            say(f"{index}/{total} {name}: done before, reused ({marker})")
            return
        say(f"{index}/{total} {name}: {title}")
        start = time.monotonic()
        try:
            info = fn()
        except StageError:
            raise
        except Exception as err:  # any failure of a stage is reported with the stage's name
            raise StageError(f"stage {name} failed: {type(err).__name__}: {err}") from err
        info = {**info, "seconds": round(time.monotonic() - start, 1)}
        write_json(marker, info, sort_keys=True)
        say(f"    {name} finished in {info['seconds']:.0f} s")

    def _launch(self, name: str, argv: list[str], total_steps: int | None, env: dict[str, str] | None = None) -> str:
        """Run a training command with its output in ``logs/<name>.log`` and a progress bar of its ``step:N``
        lines; returns the command line. A non-zero exit is a StageError quoting the child's last ``error:`` line
        (its user-error convention), else the log's last line that looks like an error, and the log's path."""
        from tqdm.auto import tqdm

        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        command = shlex.join(argv)
        say(f"    $ {command}")
        say(f"    log: {log}")
        run_env = _child_env(env)
        last_error, child_error = "", ""
        with (
            open(log, "w", encoding="utf-8") as fh,
            tqdm(total=total_steps, desc=name, unit="step", disable=not self.progress) as bar,
        ):
            if self.timeline is not None:
                self.timeline.append((name, time.monotonic(), ""))
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env, cwd=self.out
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if self.timeline is not None:
                    self.timeline.append((name, time.monotonic(), line))
                m = _STEP.search(line)
                if m and int(m.group(1)) > bar.n:
                    bar.update(int(m.group(1)) - bar.n)
                own = _CHILD_ERROR.match(line.rstrip("\n"))
                if own:
                    child_error = own.group(1).strip()[:300]
                elif _ANY_ERROR.search(line):
                    last_error = line.strip()[:300]
            rc = proc.wait()
            if self.timeline is not None:
                self.timeline.append((name, time.monotonic(), ""))
        if rc != 0:
            reason = child_error or last_error or "see the log"
            raise StageError(f"stage {name} failed (exit {rc}): {reason} (log: {log})")
        return command

    # --- stages ---------------------------------------------------------------------------------------------------

    def check(self) -> dict:
        from verl_personadual.apps.check import registration_checks

        checks = registration_checks()
        for c in checks:
            print(f"    {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        failed = [c.name for c in checks if not c.ok]
        if failed:
            raise StageError(f"stage check failed: verl does not see {failed}; see `python -m verl_personadual.check`")
        return {"checks": len(checks)}

    def build_data(self) -> dict:
        if self.data.exists():
            shutil.rmtree(self.data)
        manifest = self.toy_task.build(self.data)
        say(f"    toy task -> {self.data} (kinds per split: {json.dumps(manifest['kinds'], sort_keys=True)})")
        return {"dir": str(self.data), "sft_rows": manifest["sft_rows"], "toy": self.toy_task.record()}

    def build_model(self) -> dict:
        from verl_personadual.apps.tiny_model import TinyModelSpec, write_tiny_model
        from verl_personadual.data import toy

        if self.model.exists():
            shutil.rmtree(self.model)
        spec = TinyModelSpec(seed=MODEL_SEED if self.seed is None else self.seed)
        variant = self.toy_task.variant
        write_tiny_model(self.model, spec, extra_corpus=toy.corpus(variant), whole_words=toy.whole_words(variant))
        say(f"    tiny model ({spec.hidden_size} hidden x {spec.num_layers} layers, untied embeddings) -> {self.model}")
        return {"dir": str(self.model), "spec": spec.__dict__, "seed": self.seed}

    def _recipe_argv(
        self, stage: str, model: Path, output: Path, ablation: str | None = None, train_file: Path | None = None
    ) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "verl_personadual.recipes",
            stage,
            "--backbone",
            TOY_BACKBONE,
            "--model",
            str(model),
            "--train-files",
            str(train_file or self.data / stage / "train.parquet"),
            "--output-dir",
            str(output),
        ]
        if stage == "rl":
            argv += ["--val-files", str(self.data / "rl" / "validation.parquet"), "--ablation", ablation or "none"]
        return argv

    def _rl_argv(self, label: str, model: Path, dry_run: bool = False) -> list[str]:
        """The ``recipes rl`` command line of run ``label`` from ``model`` (with ``--dry-run`` if ``dry_run``)."""
        root = self.out / "runs" / label / "checkpoints"
        return [
            *self._recipe_argv("rl", model, root, self.runs[label]),
            *(["--dry-run"] if dry_run else []),
            "--",
            "trainer.logger=[console,file]",
            "trainer.resume_mode=auto",
            *self._seeds("rl"),
            *self.overrides,
        ]

    def _seeds(self, stage: str) -> list[str]:
        """The stage's seed overrides (:func:`seed_overrides`), none without ``seed``."""
        return [] if self.seed is None else seed_overrides(stage, self.seed)

    def _steps(self, stage: str, ablation: str = "none", sft_rows: int | None = None) -> int:
        """Training steps of the composed recipe (for the progress bar); SFT over ``sft_rows`` rows (default: the
        toy's dual-mode SFT file)."""
        from verl_personadual.apps.recipes import compose as recipes

        overrides = recipes.build_overrides(
            stage=stage,
            backbone=TOY_BACKBONE,
            model=str(self.model),
            train_files=[str(self.data / stage / "train.parquet")],
            val_files=[str(self.data / "rl" / "validation.parquet")] if stage == "rl" else (),
            **({"ablation": ablation, "extra": self.overrides} if stage == "rl" else {}),
        )
        cfg = recipes.compose_checked(stage, overrides)
        if stage == "rl":
            return int(cfg.trainer.total_training_steps)
        rows = sft_rows or json.loads(self._marker("data").read_text())["sft_rows"]
        return rows // int(cfg.data.train_batch_size) * int(cfg.trainer.total_epochs)

    def train_sft(self, name: str = "sft", train_file: Path | None = None, rows: int | None = None) -> dict:
        """verl's SFT trainer (recipe backbone ``cpu_toy``) from the tiny model on ``train_file`` (default: the
        toy's dual-mode SFT file; ``rows``: its row count) into ``--out/<name>``, logged to ``logs/<name>.log``;
        returns the HF checkpoint and the command."""
        output = self.out / name
        if output.exists():
            shutil.rmtree(output)
        argv = self._recipe_argv("sft", self.model, output, train_file=train_file)
        seeds = self._seeds("sft")
        command = self._launch(name, argv + (["--", *seeds] if seeds else []), self._steps("sft", sft_rows=rows))
        hf = _hf_dir(output, "huggingface")
        if hf is None:
            raise StageError(
                f"stage {name}: no global_step_*/huggingface checkpoint under {output} "
                f"(log: {self.logs / f'{name}.log'})"
            )
        return {"checkpoint": str(hf), "command": command}

    def train_rl(self, label: str) -> dict:
        """One RL run. A run killed after a periodic checkpoint (``cpu_toy``: every 4 steps) continues from its
        newest one: verl resumes from ``latest_checkpointed_iteration.txt`` (``trainer.resume_mode=auto``), and the
        metrics of the steps up to it are kept (verl's file logger starts its file anew). verl saves a step before it
        logs it: a run killed in between has no training metrics of the saved step (its validation comes from the
        rerun)."""
        ablation = self.runs[label]
        root = self.out / "runs" / label
        ckpt_root, metrics = root / "checkpoints", root / "metrics.jsonl"
        resumed = _saved_step(ckpt_root)
        kept: list[str] = []
        if resumed:
            say(
                f"    resuming from step {resumed}: the checkpoint {ckpt_root / f'global_step_{resumed}'} of a "
                f"killed run"
            )
            kept = _metric_lines(metrics, lambda step: step <= resumed)
        else:
            if ckpt_root.exists():
                shutil.rmtree(ckpt_root)
            metrics.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        sft = Path(json.loads(self._marker("sft").read_text())["checkpoint"])
        argv = self._rl_argv(label, sft)
        command = self._launch(
            f"rl-{label}", argv, self._steps("rl", ablation), env={"VERL_FILE_LOGGER_PATH": str(metrics)}
        )
        if (
            resumed
        ):  # the saved step's own line comes from the rerun's validation when the kill came before verl logged it
            have_saved = any(json.loads(line)["step"] == resumed for line in kept)
            rerun = _metric_lines(metrics, lambda step: step > resumed or (step == resumed and not have_saved))
            atomic_write_text(metrics, "".join(kept + rerun))
        hf = _hf_dir(ckpt_root, "actor/huggingface")
        if hf is None:
            raise StageError(f"stage rl-{label}: no global_step_*/actor/huggingface checkpoint under {ckpt_root}")
        info = {"checkpoint": str(hf), "metrics": str(metrics), "command": f"VERL_FILE_LOGGER_PATH={metrics} {command}"}
        return {**info, "resumed_from_step": resumed} if resumed else info

    def evaluate(self, label: str, checkpoint: Path) -> dict:
        from verl_personadual.core.prompts import DataSource, PersonaSetting
        from verl_personadual.data.eval_sets import read_eval_set
        from verl_personadual.eval.analyses.mode_probs import compute
        from verl_personadual.eval.generate import Decoding, DecodingParams
        from verl_personadual.eval.run import RunConfig, run

        out = self.out / "eval" / label
        eval_set = self.data / "eval_set.jsonl"
        cfg = RunConfig(
            model=str(checkpoint),
            out_dir=out,
            benchmarks=[DataSource.TOY],
            settings=list(PersonaSetting),
            decodings=[Decoding.FREE, Decoding.GENERAL, Decoding.PERSONALIZED],
            eval_set=eval_set,
            backend="hf",
            device="cpu",
            dtype="float32",
            batch_size=64,
            decoding=DecodingParams(max_new_tokens=EVAL_MAX_NEW_TOKENS),
            progress=self.progress,
        )
        predictions = run(cfg)
        probs = out / "mode_probs.jsonl"
        compute(
            checkpoint,
            read_eval_set(out / "eval_set.jsonl"),
            device="cpu",
            dtype="float32",
            batch_size=64,
            out_file=probs,
            progress=self.progress,
        )
        say(f"    eval of {label} ({checkpoint}) -> {out}")
        return {"checkpoint": str(checkpoint), "predictions": str(predictions), "mode_probs": str(probs)}

    def rl_curves(self, label: str) -> dict[str, list[tuple[int, float]]]:
        """The metric curves (``report.metric_curves``) of finished RL run ``label`` from its metrics log; none when
        the run logged no metrics file."""
        from verl_personadual.apps.quickstart.report import metric_curves, read_jsonl

        metrics = Path(self.finished(f"rl-{label}")["metrics"])
        return metric_curves(read_jsonl(metrics)) if metrics.exists() else {}

    def report(self) -> tuple[dict, list[Path]]:
        from verl_personadual.apps.quickstart.report import summarize, write_report
        from verl_personadual.eval.store import read_predictions

        runs, curves, commands = {}, {}, [json.loads(self._marker("sft").read_text())["command"]]
        # every finished RL run in --out (earlier invocations' too): the toy's Table 2 grows run by run
        finished = sorted(m.stem[len("eval-rl-") :] for m in (self.out / "stages").glob("eval-rl-*.json"))
        rl_labels = [a for a in self.runs if a in finished] + [a for a in finished if a not in self.runs]
        labels = ["sft"] + [f"rl-{a}" for a in rl_labels]
        for label in labels:
            info = json.loads(self._marker(f"eval-{label}").read_text())
            runs[label] = summarize(
                read_predictions(Path(info["predictions"])), read_predictions(Path(info["mode_probs"]))
            )
        for a in rl_labels:
            commands.append(self.finished(f"rl-{a}")["command"])
            curves[f"rl-{a}"] = self.rl_curves(a)
        return runs, write_report(self.out, runs, curves, commands)

    def check_overrides(self) -> None:
        """Before the first stage: each RL run's recipe, with ``--set``, composed and validated as ``recipes rl``
        does (``recipes_validate.compose_and_validate``); a StageError naming the run and the recipes' one-line
        reason."""
        from verl_personadual.apps.recipes import compose as recipes
        from verl_personadual.apps.recipes import validate as recipes_validate

        for label, ablation in self.runs.items():
            overrides = recipes.build_overrides(
                stage="rl",
                backbone=TOY_BACKBONE,
                model=str(self.model),
                train_files=[str(self.data / "rl" / "train.parquet")],
                val_files=[str(self.data / "rl" / "validation.parquet")],
                ablation=ablation,
                extra=self.overrides,
            )
            try:
                recipes_validate.compose_and_validate("rl", overrides)
            except UserError as err:  # PreflightError, ConfigError: our and verl's config checks
                raise StageError(f"--set for run rl-{label}: {err}") from None

    def check_rl_launches(self) -> None:
        """Once the data and the model exist, before SFT: each RL run's ``recipes rl`` command as :meth:`train_rl`
        starts it, with ``--dry-run``, so every check of the launch runs (``recipes.cli.plan_run``: the data and the
        tokenizer against the recipe with ``--set``, the batch fill, ...); the tiny model stands in for the SFT
        checkpoint (same tokenizer). A refusal is a StageError naming the run and the recipes' error line."""
        for label in self.runs:
            argv = self._rl_argv(label, self.model, dry_run=True)
            proc = subprocess.run(argv, capture_output=True, text=True, env=_child_env(), cwd=self.out)
            if proc.returncode != 0:
                errors = [m.group(1) for m in map(_CHILD_ERROR.match, proc.stderr.splitlines()) if m]
                reason = errors[-1] if errors else proc.stderr.strip()[-300:]
                raise StageError(f"--set for run rl-{label}: {reason}")

    def check_seed(self) -> None:
        """Before the first stage: an ``--out`` whose model was made with another ``--seed``, or whose data is
        another toy task, is refused (its checkpoints would be mixed with this run's). A data marker that records
        no toy task was written before there was a choice: the default one."""
        marker = self._marker("model")
        if marker.exists():
            made = json.loads(marker.read_text()).get("seed")
            if made != self.seed:
                raise StageError(
                    f"--out {self.out} was made with --seed {made}, not {self.seed}: use another --out, or that seed"
                )
        marker = self._marker("data")
        if marker.exists():
            made = json.loads(marker.read_text()).get("toy", ToyTask().record())
            if made != self.toy_task.record():
                raise StageError(
                    f"--out {self.out} holds another toy task ({json.dumps(made, sort_keys=True)}, not "
                    f"{json.dumps(self.toy_task.record(), sort_keys=True)}): use another --out"
                )

    def run_all(self, stop_after: str | None = None) -> dict | None:
        """Every stage in order (the ``--set`` overrides and the seed checked first, each RL launch's every check once
        the model exists: :meth:`check_rl_launches`); returns the report's runs
        (label -> figures), or None when it stopped after stage ``stop_after`` (one of :data:`FIRST_STAGES`)."""
        self.check_overrides()
        self.check_seed()
        n = 6 + 2 * len(self.runs)
        i = iter(range(1, n + 1))
        first = {
            "check": ("plugin registrations seen by verl", self.check),
            "data": ("toy persona task (verl_personadual.data.toy)", self.build_data),
            "model": ("tiny random model + toy tokenizer", self.build_model),
            "sft": ("Stage 1: verl SFT trainer, recipe cpu_toy", self.train_sft),
            "eval-sft": (
                "held-out eval of the SFT checkpoint",
                lambda: self.evaluate("sft", Path(json.loads(self._marker("sft").read_text())["checkpoint"])),
            ),
        }
        assert tuple(first) == FIRST_STAGES
        for name, (title, fn) in first.items():
            self.stage(next(i), n, name, title, fn)
            if name == "model":
                self.check_rl_launches()
            if name == stop_after:
                say(f"stopped after stage {name} (--stop-after); rerun without it to continue from there")
                return None
        for a, ablation in self.runs.items():
            settings = f"ablation {ablation}" + (f", {' '.join(self.overrides)}" if self.overrides else "")
            self.stage(
                next(i),
                n,
                f"rl-{a}",
                f"Stage 2: verl main_ppo, DualGRPO recipe cpu_toy, {settings}",
                lambda a=a: self.train_rl(a),
            )
            ckpt = Path(json.loads(self._marker(f"rl-{a}").read_text())["checkpoint"])
            self.stage(
                next(i),
                n,
                f"eval-rl-{a}",
                f"held-out eval of the RL checkpoint ({a})",
                lambda a=a, ckpt=ckpt: self.evaluate(f"rl-{a}", ckpt),
            )
        say(f"{n}/{n} report")
        runs, written = self.report()
        for path in written:
            say(f"    wrote {path}")
        return runs
