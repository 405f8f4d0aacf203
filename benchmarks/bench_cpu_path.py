"""Where the quickstart's time goes on CPU: its stages split into phases, next to their compute floor.

    python benchmarks/bench_cpu_path.py [--out DIR] [--variants before after] [--floor-sft-steps 20]

1. Runs the quickstart (``verl_personadual.apps.quickstart``: check, data, model, verl's SFT trainer, eval, verl's
   ``main_ppo`` with DualGRPO, eval, report) once per variant, each in its own directory, and splits every training
   stage's wall time into phases by the time each line of its output arrived (``Quickstart(timeline=...)``) and by
   verl's own per-step ``timing_s/*`` metrics:
   - SFT: launcher (interpreter, imports, recipe composed and validated), trainer process start (interpreter,
     imports, Hydra), data + engine set-up, the steps, checkpoint save with HF export, exit;
   - RL: launcher, ``main_ppo`` start (interpreter, imports, config checks), Ray start, the trainer's Ray actor
     start, datasets + transfer queue, actor / reference workers (process, imports, FSDP engines), rollout server +
     reward workers + checkpoint engine, the initial validation (with the agent-loop worker's start), then over
     the steps the sum of each ``timing_s`` phase (``gen``, ``old_log_prob``, ``ref``, ``adv``, ``update_actor``,
     ``update_weights``, ``testing``, ``save_checkpoint``; ``between steps`` = wall time of the steps minus their
     ``timing_s/step``), and the exit.
2. The compute floor, measured in this process after the runs, with the same torch threads: the same batch sizes'
   forward, backward and AdamW step and generation in plain PyTorch on the quickstart's models (SFT steps on the
   base model, RL phases on the first variant's SFT checkpoint: 32 toy prompts x 4 rollouts, two forced in each
   mode, up to 16 new tokens; the 64 validation prompts for ``testing``; ``torch.save`` of model + optimizer and
   ``save_pretrained`` for a checkpoint). ``--floor-sft-steps`` SFT steps are timed and scaled to the run's count.
3. One table: each phase's wall time per variant, its floor and wall / floor (``-`` where a phase does no
   compute: its whole time is overhead).

Variants (the benchmark's switches; the quickstart's default is the last one):
- ``before``: the settings before issue 32: ``OMP_NUM_THREADS`` = the physical cores (torch's default, which the
  launcher now replaces by ``launch.CPU_TORCH_THREADS``) and ``BEFORE_RL_OVERRIDES`` (micro-batches of 8 rows in
  every forward and backward of verl's engine);
- ``after``: the quickstart as it is now.

The floor is measured with 1 thread and with the physical cores; each phase's floor is the faster of the two.

Ratios are measured in one run on one machine; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import psutil
import torch

from verl_personadual.apps.quickstart.stages import EVAL_MAX_NEW_TOKENS, Quickstart
from verl_personadual.utils.atomic import write_json

#: RL overrides that restore the engine's micro-batch sizes of before issue 32 (``rl_backbone/cpu_toy.yaml``).
BEFORE_RL_OVERRIDES = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
)
CORES = psutil.cpu_count(logical=False) or 1
#: variant -> (RL overrides, environment of the quickstart's training commands)
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "before": (BEFORE_RL_OVERRIDES, {"OMP_NUM_THREADS": str(CORES)}),
    "after": ((), {}),
}

#: (phase, regex of the line that ends it) of the SFT stage's output, in order; the last phase ends at the exit.
SFT_MARKS = (
    ("sft: launcher (interpreter, imports, compose, validate)", r"^\[persona_dual\] sft: running"),
    ("sft: trainer process start (interpreter, imports, Hydra)", r"Platform override from VERL_PLATFORM"),
    ("sft: data + engine set-up", r"\bstep:1 - "),
    ("sft: steps", r"^Saving checkpoint to"),
    ("sft: checkpoint save + HF export", r"^Updated checkpoint tracker"),
)
#: The same for the RL stage (verl's Ray actors' lines start with ``(ActorName pid=N)``).
RL_MARKS = (
    ("rl: launcher (interpreter, imports, compose, validate)", r"^\[persona_dual\] rl: running"),
    ("rl: main_ppo start (interpreter, imports, config checks)", r"^ray init kwargs:"),
    ("rl: Ray start", r"Started a local Ray instance"),
    ("rl: trainer actor start (process, imports)", r"\(TaskRunnerV1 pid="),
    ("rl: datasets + transfer queue", r"train and validate dataloader initialized"),
    ("rl: actor / ref workers (process, imports, engines)", r"actor and ref model engine initialized"),
    ("rl: rollout server, reward workers, checkpoint engine", r"checkpoint engine manager initialized"),
    ("rl: trainer ready", r"all initialize finished, ready to fit"),
    ("rl: initial validation (+ agent-loop worker start)", r"Initial validation metrics"),
)
RL_STEP_PHASES = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "testing", "save_checkpoint")


@dataclass
class Profile:
    """One variant's phases: name -> wall seconds, in print order."""

    phases: dict[str, float] = field(default_factory=dict)


def split_stage(lines: list[tuple[float, str]], marks: Sequence[tuple[str, str]], exit_name: str) -> dict[str, float]:
    """A stage's timeline (its start and exit entries have empty lines) cut at the first line matching each mark,
    in order: phase -> seconds; a mark never seen merges its phase into the next one. What follows the last mark is
    ``exit_name`` (up to the exit entry)."""
    start, end = lines[0][0], lines[-1][0]
    out: dict[str, float] = {}
    t_prev, i, pending = start, 0, 0.0
    for name, pattern in marks:
        regex = re.compile(pattern)
        j = next((k for k in range(i, len(lines)) if lines[k][1] and regex.search(lines[k][1])), None)
        if j is None:
            out[name] = float("nan")
            continue
        out[name] = lines[j][0] - t_prev + pending
        t_prev, i, pending = lines[j][0], j, 0.0
    out[exit_name] = end - t_prev
    return out


def rl_steps(lines: list[tuple[float, str]], metrics: Path, after: str) -> dict[str, float]:
    """The RL steps: the sum of each ``timing_s`` phase over the steps, and ``between steps`` (wall time from the
    line matching ``after`` to the last ``step:N -`` line, minus the sums of ``timing_s/step`` and ``testing``)."""
    records = [json.loads(line)["data"] for line in metrics.read_text().splitlines() if line.strip()]
    records = [r for r in records if "timing_s/step" in r]
    regex, step_line = re.compile(after), re.compile(r"\bstep:\d+ - ")
    t0 = next(t for t, line in lines if line and regex.search(line))
    t1 = max(t for t, line in lines if line and step_line.search(line))
    out = {f"rl step: {p}": sum(r.get(f"timing_s/{p}", 0.0) for r in records) for p in RL_STEP_PHASES}
    total = sum(r["timing_s/step"] for r in records)  # verl times ``testing`` after ``step``, not inside it
    testing = out["rl step: testing"]
    out["rl step: other (inside timing_s/step)"] = total - (sum(out.values()) - testing)
    out["rl steps: between steps"] = (t1 - t0) - total - testing
    out["rl: after the last step (shutdown)"] = lines[-1][0] - t1
    return out


def profile(
    out: Path, overrides: Sequence[str], env: dict[str, str]
) -> tuple[Profile, Quickstart, int, dict[str, int]]:
    """Runs the quickstart into ``out`` with ``env`` added to the environment; its profile, the Quickstart, the SFT
    step count and RL step counts (``steps``, ``testing``, ``save_checkpoint``). An ``out`` that this benchmark
    filled before (its ``timeline.json``) is profiled again without running (the total is then the sum of the
    stages' seconds)."""
    timeline: list[tuple[str, float, str]] = []
    qs = Quickstart(out, ["none"], progress=False, overrides=list(overrides), timeline=timeline)
    saved_timeline = out / "timeline.json"
    if saved_timeline.exists():  # --out of an earlier run of this benchmark: its runs are profiled again
        timeline[:] = [tuple(entry) for entry in json.loads(saved_timeline.read_text())]
        stages = [json.loads(m.read_text())["seconds"] for m in (out / "stages").glob("*.json")]
        wall = sum(stages)
    else:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        t0 = time.monotonic()
        try:
            qs.run_all()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        wall = time.monotonic() - t0
        write_json(saved_timeline, timeline)
    (label,) = qs.runs
    prof = Profile()
    seconds = {name: qs.finished(name)["seconds"] for name in ("check", "data", "model", "eval-sft")}
    prof.phases["check + data + model"] = seconds["check"] + seconds["data"] + seconds["model"]
    sft = [(t, line) for stage, t, line in timeline if stage == "sft"]
    prof.phases.update(split_stage(sft, SFT_MARKS, "sft: exit"))
    prof.phases["eval-sft (plain PyTorch already)"] = seconds["eval-sft"]
    rl = [(t, line) for stage, t, line in timeline if stage == f"rl-{label}"]
    split = split_stage(rl, RL_MARKS, "rl: after initial validation")
    del split["rl: after initial validation"]
    prof.phases.update(split)
    metrics = Path(qs.finished(f"rl-{label}")["metrics"])
    prof.phases.update(rl_steps(rl, metrics, RL_MARKS[-1][1]))
    prof.phases["eval-rl (plain PyTorch already)"] = qs.finished(f"eval-rl-{label}")["seconds"]
    prof.phases["stages: sft"] = qs.finished("sft")["seconds"]
    prof.phases["stages: rl"] = qs.finished(f"rl-{label}")["seconds"]
    prof.phases["quickstart total"] = wall
    records = [json.loads(line)["data"] for line in metrics.read_text().splitlines() if line.strip()]
    counts = {k: sum(1 for r in records if f"timing_s/{k}" in r) for k in ("step", "testing", "save_checkpoint")}
    # verl's console logger prints ``step:N - ...`` right after tqdm's bar, on the bar's line
    sft_steps = max(int(m.group(1)) for _, line in sft for m in [re.search(r"\bstep:(\d+) - ", line)] if m)
    return prof, qs, sft_steps, counts


# --- compute floor ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeats: int = 2) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (the first call warms up when repeats > 1)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def train_step(model, opt, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Forward, token-mean next-token loss, backward, AdamW step."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sft_floor(qs: Quickstart, steps: int, timed_steps: int) -> tuple[float, float]:
    """Seconds of ``steps`` SFT steps (``timed_steps`` timed, scaled) on the toy's first SFT rows in batches of the
    recipe's size, and of one checkpoint save (model + optimizer state, HF export)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qs.model)
    model = AutoModelForCausalLM.from_pretrained(qs.model, dtype=torch.float32, attn_implementation="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = pd.read_parquet(qs.data / "sft" / "train.parquet")["messages"]
    seqs = [list(tok.apply_chat_template(list(m), tokenize=True, return_dict=True)["input_ids"]) for m in rows[:320]]
    batches = [padded(seqs[i : i + 32], tok.pad_token_id) for i in range(0, len(seqs), 32)]
    train_step(model, opt, *batches[0])
    start = time.perf_counter()
    for k in range(timed_steps):
        train_step(model, opt, *batches[k % len(batches)])
    per_step = (time.perf_counter() - start) / timed_steps
    return per_step * steps, save_floor(model, opt)


def save_floor(model, opt) -> float:
    def save() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, Path(tmp) / "ckpt.pt")
            model.save_pretrained(Path(tmp) / "hf")

    return timed(save)


def rl_floor(qs: Quickstart) -> dict[str, float]:
    """Per-step floors of the RL phases on the SFT checkpoint (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_personadual.core.cpu.generation import BatchGenerator, GenerationRequest, SamplingParams
    from verl_personadual.core.modes import Mode, resolve_prefixes

    ckpt = Path(qs.finished("sft")["checkpoint"])
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa")
    copy = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa")
    prefixes = resolve_prefixes(tok).ids
    engine = BatchGenerator(model.eval(), eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)

    def prompt_ids(messages) -> list[int]:
        return list(
            tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )

    train = [prompt_ids(m) for m in pd.read_parquet(qs.data / "rl" / "train.parquet")["prompt"][:32]]
    val = [prompt_ids(m) for m in pd.read_parquet(qs.data / "rl" / "validation.parquet")["prompt"]]
    forced = [p + list(prefixes[mode]) for p in train for mode in (Mode.GENERAL,) * 2 + (Mode.PERSONALIZED,) * 2]

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        params = SamplingParams(max_tokens=EVAL_MAX_NEW_TOKENS, temperature=1.0)
        reqs = [GenerationRequest(p, params, torch.Generator().manual_seed(i)) for i, p in enumerate(prompts)]
        return [p + r.token_ids for p, r in zip(prompts, engine.generate(reqs), strict=True)]

    seqs = generate(forced)
    ids, mask = padded(seqs, tok.pad_token_id)

    @torch.no_grad()
    def log_probs() -> None:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])

    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def update() -> None:
        model.train()
        for i in range(0, len(seqs), 32):
            train_step(model, opt, ids[i : i + 32], mask[i : i + 32])
        model.eval()

    return {
        "gen": timed(lambda: generate(forced)),
        "old_log_prob": timed(log_probs),
        "ref": timed(log_probs),
        "update_actor": timed(update),
        "update_weights": timed(lambda: copy.load_state_dict(model.state_dict())),
        "testing": timed(lambda: generate(val)),
        "save_checkpoint": save_floor(model, opt),
    }


def floors(qs: Quickstart, sft_steps: int, counts: dict[str, int], timed_sft_steps: int) -> dict[str, float]:
    """Phase -> floor seconds for the phases that compute: the faster of 1 thread and :data:`CORES` threads."""
    threads = torch.get_num_threads()
    measured = []
    try:
        for n in sorted({1, CORES}):
            torch.set_num_threads(n)
            measured.append((*sft_floor(qs, sft_steps, timed_sft_steps), rl_floor(qs)))
            print(
                f"floor with {n} torch thread(s): SFT steps {measured[-1][0]:.1f} s, RL step phases {measured[-1][2]}"
            )
    finally:
        torch.set_num_threads(threads)
    sft_total, sft_save = min(m[0] for m in measured), min(m[1] for m in measured)
    per_step = {k: min(m[2][k] for m in measured) for k in measured[0][2]}
    out = {"sft: steps": sft_total, "sft: checkpoint save + HF export": sft_save}
    for phase, seconds in per_step.items():
        n = counts.get(phase, counts["step"])
        out[f"rl step: {phase}"] = seconds * n
    out["rl: initial validation (+ agent-loop worker start)"] = per_step["testing"]
    out["stages: sft"] = sft_total + sft_save
    out["stages: rl"] = sum(out[k] for k in out if k.startswith("rl"))
    out["quickstart total"] = out["stages: sft"] + out["stages: rl"]
    return out


def table(profiles: dict[str, Profile], floor: dict[str, float]) -> str:
    names = list(next(iter(profiles.values())).phases)
    head = ["phase", *(f"{v} s" for v in profiles), "floor s", *(f"{v} / floor" for v in profiles)]
    rows = [head, ["---"] * len(head)]
    for name in names:
        walls = [p.phases.get(name, float("nan")) for p in profiles.values()]
        f = floor.get(name)
        ratios = [f"{w / f:.1f}" if f else "-" for w in walls]
        rows.append([name, *(f"{w:.1f}" for w in walls), f"{f:.2f}" if f else "-", *ratios])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--floor-sft-steps", type=int, default=20, help="SFT steps timed for the floor (scaled)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_cpu_path_"))
    profiles: dict[str, Profile] = {}
    first: tuple[Quickstart, int, dict[str, int]] | None = None
    for variant in args.variants:
        prof, qs, sft_steps, counts = profile(out / variant, *VARIANTS[variant])
        profiles[variant] = prof
        first = first or (qs, sft_steps, counts)
        print(f"{variant}: quickstart {prof.phases['quickstart total']:.0f} s ({out / variant})", flush=True)
    assert first is not None
    floor = floors(*first, args.floor_sft_steps)
    print("compute floor: plain PyTorch in this process, the faster of 1 and", CORES, "torch threads per phase")
    print(table(profiles, floor))


if __name__ == "__main__":
    main()
