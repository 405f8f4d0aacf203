"""Helpers of the integration tests that run the project's real commands in subprocesses (no assertion on time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch


def run_ok(argv: list[str], cwd: Path, timeout_s: float, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` offline in ``cwd`` (no hub, no Ray usage stats, no outside Ray cluster); assert exit status 0
    (showing the log's end) and return stdout + stderr. ``timeout_s`` only bounds a hung run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout_s)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def hf_params(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a single-file HF checkpoint (``model.safetensors``)."""
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def hf_checksum(model_dir: Path) -> float:
    """float64 sum of every element of every tensor of the checkpoint (what the rollout servers log per sync)."""
    return float(sum(t.double().sum() for t in hf_params(model_dir).values()))


def teach(
    model: torch.nn.Module,
    tok,
    seqs: list[tuple[list[int], list[int]]],
    out: Path,
    steps: int = 80,
    lr: float = 3e-3,
    batch_size: int = 8,
) -> Path:
    """Teach ``model`` to continue each ``(prompt ids, target ids)`` of ``seqs`` with its target (AdamW, ``steps``
    batches of ``batch_size`` drawn with torch's global generator, loss on the targets only); saves model and
    tokenizer to ``out`` and returns it."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = [seqs[i] for i in torch.randint(len(seqs), (batch_size,)).tolist()]
        width = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (a, b) in enumerate(batch):
            ids[j, : len(a) + len(b)] = torch.tensor(a + b)
            mask[j, : len(a) + len(b)] = 1
            labels[j, len(a) : len(a) + len(b)] = torch.tensor(b)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@dataclass(frozen=True)
class ToySFT:
    """What :func:`toy_sft` built: the tiny base model, the toy data, the SFT model (HF) and the SFT run's log."""

    base: Path
    data: Path
    sft_hf: Path
    log: str


#: The integration tests' recipe command.
RECIPES = [sys.executable, "-m", "verl_personadual.recipes"]


def toy_sft(root: Path, steps: int, timeout_s: float, personalized_share: Mapping[str, float] | None = None) -> ToySFT:
    """The tests' model size with the toy's tokenizer (answers are 2-3 tokens), trained ``steps`` SFT steps on the toy
    through ``recipes sft --backbone cpu_tiny``: a few steps teach the answer format, so DualGRPO groups get rewards
    that differ and non-zero advantages. ``personalized_share`` is the SFT data's mode mix (``toy.build``; None: both
    modes of every item)."""
    from verl_personadual.apps.tiny_model import TinyModelSpec, write_tiny_model
    from verl_personadual.data import toy

    data = root / "data"
    base = write_tiny_model(
        root / "base",
        TinyModelSpec(hidden_size=64, num_layers=2, head_dim=16, intermediate_size=128),
        extra_corpus=toy.corpus(),
        whole_words=toy.whole_words(),
    )
    toy.build(data, toy.ToySizes(sft=48, rl=16, rl_val=4, eval=4), personalized_share=personalized_share)
    argv = RECIPES + ["sft", "--backbone", "cpu_tiny", "--model", str(base)]
    argv += ["--train-files", str(data / "sft" / "train.parquet"), "--output-dir", str(root / "sft"), "--"]
    argv += [f"trainer.total_training_steps={steps}", "optim.lr=3e-3", "optim.lr_warmup_steps=1"]
    log = run_ok(argv, root, timeout_s)
    return ToySFT(base, data, root / "sft" / f"global_step_{steps}" / "huggingface", log)


#: SFT steps of the toy checkpoint the CPU DualGRPO integration tests share (conftest's ``toy_sft_run``): a few teach
#: the answer format (2-3 tokens), so DualGRPO groups get rewards that differ.
TOY_SFT_STEPS = 24
#: A generous bound against a hung SFT run; no assertion depends on time.
TOY_SFT_HANG_LIMIT_S = 1500


def shared_toy_sft(shared_root: Path, steps: int, timeout_s: float) -> ToySFT:
    """:func:`toy_sft` built once per pytest run in ``shared_root / toy_sft_<steps>`` and reused by every test
    process (pytest-xdist workers included: a file lock serialises the build, a marker file records it done)."""
    from filelock import FileLock

    root = shared_root / f"toy_sft_{steps}"
    done = root / "done.json"
    with FileLock(str(root) + ".lock"):
        if not done.exists():
            root.mkdir(parents=True, exist_ok=True)
            sft = toy_sft(root, steps, timeout_s)
            record = {"base": str(sft.base), "data": str(sft.data), "sft_hf": str(sft.sft_hf), "log": sft.log}
            done.write_text(json.dumps(record))
    record = json.loads(done.read_text())
    return ToySFT(Path(record["base"]), Path(record["data"]), Path(record["sft_hf"]), record["log"])


#: The size of every CPU DualGRPO integration run on the toy: 4 prompts x 4 rollouts (2 per mode), short sequences,
#: verl's console and file loggers.
TINY_RL_OVERRIDES = [
    "data.train_batch_size=4",
    "data.max_prompt_length=64",
    "data.max_response_length=16",
    "actor_rollout_ref.rollout.max_model_len=80",
    "actor_rollout_ref.rollout.n=4",
    "trainer.logger=[console,file]",
]


#: The training runs whose checkpoints the tests read back: an actor checkpoint with its HF export every step, no
#: validation, lr 1e-3 from the first step (the weights change visibly each step).
CHECKPOINTED_TRAINING_OVERRIDES = [
    "trainer.save_freq=1",
    "trainer.test_freq=-1",
    "trainer.val_before_train=false",
    "actor_rollout_ref.actor.optim.lr=1e-3",
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0",
    "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
]


def tiny_rl_argv(
    sft: ToySFT, output_dir: Path, options: Sequence[str] = (), overrides: Sequence[str] = ()
) -> list[str]:
    """``recipes rl --backbone cpu_tiny`` from ``sft``'s checkpoint on its toy data into ``output_dir``, with the
    recipe ``options`` (before ``--``) and Hydra ``overrides`` after :data:`TINY_RL_OVERRIDES`."""
    argv = RECIPES + ["rl", "--backbone", "cpu_tiny", "--model", str(sft.sft_hf), "--output-dir", str(output_dir)]
    argv += ["--train-files", str(sft.data / "rl" / "train.parquet")]
    argv += ["--val-files", str(sft.data / "rl" / "validation.parquet"), *options, "--"]
    return argv + TINY_RL_OVERRIDES + list(overrides)
