"""Rebuild the README's "Analyses" pictures from scratch on a CPU (about 10 minutes on 2 cores at the defaults).

    python docs/analyses/make_pictures.py --out runs/pictures --copy-to docs/analyses

1. toy data (``verl_personadual.data.toy``, seed 0: 1,600 SFT items, 200 eval items) and a tiny Qwen3 of the default
   :class:`~verl_personadual.apps.tiny_model.TinyModelSpec` with the toy's tokenizer;
2. three stand-in checkpoints taught with a plain supervised loop (AdamW, batch 32, loss on the assistant turn):
   ``sft`` on both modes of every SFT item (no preference between the modes, as the toy's SFT data intends) and
   ``taught``, continued from ``sft`` on the better mode only (personalized for ``helpful`` items, general for
   ``misleading`` ones, both for the others): what DualGRPO should teach, without running it; and ``taught_mt``,
   the same rows and steps from ``sft`` but half of them as two-turn rows (``verl_personadual.data.multiturn``: a
   finished first turn from the other family) -- the paper's future work, item 5 of issue 16, in stand-in form;
3. an eval run per checkpoint on the toy eval set (decodings free, free_constrained, general, personalized;
   greedy, 12 new tokens) through ``verl_personadual.eval.run``;
4. the four analyses as their ``python -m verl_personadual.eval`` commands (printed), with
   ``--personalized task=helpful``, and RQ6 (``multiturn``) once more for ``taught_mt``; ``multiturn_training/``
   puts the two mode-alignment tables side by side (``tables/alignment.{md,csv}``, ``plots/alignment.png``);
5. with ``--copy-to``, the seven PNGs of the README into that directory.

The checkpoints are stand-ins: the pictures show what each analysis reports, not results of the method.

``eval run``'s command line and its Table 1 report only know the seven paper benchmarks, not the toy one, so
step 3 calls the run in Python with the toy's default size registered and the Table 1 report skipped (the
analyses read ``predictions.jsonl``, ``eval_set.jsonl`` and ``run_config.json`` only).
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
from pathlib import Path
from typing import Sequence

#: README picture -> (analysis output directory, its PNG), all under ``--out``.
PICTURES = {
    "calibration.png": ("mode_probs", "calibration.png"),
    "sigma_distribution.png": ("mode_probs", "sigma_distribution.png"),
    "oracle_gap.png": ("mode_probs", "oracle_gap.png"),
    "multiturn_deviation.png": ("multiturn", "deviation.png"),
    "lexical.png": ("lexical", "lexical.png"),
    "mixed.png": ("mixed", "mixed.png"),
    "multiturn_training.png": ("multiturn_training", "alignment.png"),
}
#: The toy's better mode per task (verl_personadual.data.toy's table); other tasks keep both modes.
BETTER = {"helpful": "personalized", "misleading": "general"}
BATCH = 32
#: Share of taught_mt's rows given a first turn.
TWO_TURN_RATIO = 0.5


def _say(text: str) -> None:
    print(f"[pictures] {text}", flush=True)


def teach(base: Path, rows: list[dict], out: Path, steps: int, lr: float, seed: int) -> Path:
    """Continue ``base`` with ``steps`` AdamW steps on random batches of ``rows`` (SFT parquet rows: the loss is on
    the last message, the assistant turn, plus EOS); save model and tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)

    def encode(r: dict) -> tuple[list[int], list[int]]:
        prompt = tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
        answer = tok.encode(r["messages"][-1]["content"], add_special_tokens=False) + [tok.eos_token_id]
        return tok.encode(prompt, add_special_tokens=False), answer

    seqs = [encode(r) for r in rows]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = [seqs[rng.randrange(len(seqs))] for _ in range(BATCH)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((BATCH, width), tok.pad_token_id)
        labels = torch.full((BATCH, width), -100)
        mask = torch.zeros((BATCH, width), dtype=torch.long)
        for j, (p, a) in enumerate(batch):
            ids[j, : len(p) + len(a)] = torch.tensor(p + a)
            mask[j, : len(p) + len(a)] = 1
            labels[j, len(p) : len(p) + len(a)] = torch.tensor(a)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            _say(f"{out.name} step {step}: loss {loss.item():.4f}")
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def two_turn_sft_rows(rows: list[dict], ratio: float, seed: int = 0) -> list[dict]:
    """SFT rows with a share ``ratio`` turned two-turn by ``verl_personadual.data.multiturn.add_first_turns`` (the first
    turn a finished exchange of the other family: its prompt, its family's mode prefix and gold answer); the
    answer to learn stays the row's own last message."""
    from verl_personadual.data.families import Selector
    from verl_personadual.data.multiturn import add_first_turns

    as_rl = [
        {
            "prompt": r["messages"][:-1],
            "reward_model": {"ground_truth": r["extra_info"]["ground_truth"]},
            "extra_info": r["extra_info"],
            "answer": r["messages"][-1],
        }
        for r in rows
    ]
    mixed = add_first_turns(as_rl, ratio, seed, "train", Selector.parse("task=helpful"))
    return [{"messages": [*m["prompt"], m["answer"]], "extra_info": m["extra_info"]} for m in mixed]


def compare_alignment(runs: dict[str, Path], out: Path) -> list[Path]:
    """Mode-alignment rate per order of several ``multiturn`` outputs side by side: ``tables/alignment.{md,csv}``
    and a grouped bar plot ``plots/alignment.png`` (bars: aligned %, label: aligned/compared)."""
    import csv

    from verl_personadual.eval.plots import pyplot, save_figure, write_table

    lines, header = [], ["model", "order", "compared", "aligned_%", "second_turn_accuracy_%", "single_turn_accuracy_%"]
    for label, path in runs.items():
        with open(path / "tables" / "alignment.csv", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                lines.append(
                    [
                        label,
                        r["order"],
                        int(r["compared"]),
                        float(r["aligned_%"]),
                        float(r["second_turn_accuracy_%"]),
                        float(r["single_turn_accuracy_%"]),
                    ]
                )
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written = write_table(out / "tables", "alignment", (header, lines))
    plt = pyplot()
    orders = sorted({l[1] for l in lines})
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(runs), 1)
    for k, label in enumerate(runs):
        mine = {l[1]: l for l in lines if l[0] == label}
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(orders))]
        bars = ax.bar(xs, [mine[o][3] for o in orders], width, label=label)
        ax.bar_label(bars, labels=[f"{round(mine[o][3] * mine[o][2] / 100)}/{mine[o][2]}" for o in orders], fontsize=8)
    ax.set_xticks(range(len(orders)), [o.replace("_to_", " → ") for o in orders])
    ax.set_ylim(0, 105)
    ax.set_ylabel("mode-alignment rate (%)")
    ax.set_title("RQ6 after training without / with two-turn rows", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    written.append(save_figure(fig, out / "plots" / "alignment.png"))
    return written


def eval_toy(model: Path, eval_set: Path, out: Path) -> Path:
    """``eval run`` of ``model`` on the toy eval set (module docstring: why in Python)."""
    from verl_personadual.core.prompts import DataSource, PersonaSetting
    from verl_personadual.data import benchmarks
    from verl_personadual.eval import run as run_module
    from verl_personadual.eval.generate import Decoding, DecodingParams

    benchmarks.DEFAULT_SIZES.setdefault(DataSource.TOY, 10**6)  # the whole saved set
    run_module.write_report = lambda out_dir: []  # Table 1 does not know the toy benchmark
    decodings = [Decoding.FREE, Decoding.FREE_CONSTRAINED, Decoding.GENERAL, Decoding.PERSONALIZED]
    cfg = run_module.RunConfig(
        model=str(model),
        out_dir=out,
        benchmarks=[DataSource.TOY],
        settings=list(PersonaSetting),
        decodings=decodings,
        eval_set=eval_set,
        backend="hf",
        device="cpu",
        decoding=DecodingParams(max_new_tokens=12),
        batch_size=32,
        progress=False,
    )
    run_module.run(cfg)
    return out


def analyse(argv: list[str]) -> None:
    """One analysis command, printed as the shell line that reruns it."""
    from verl_personadual.apps.eval_cli import main as eval_main

    _say("python -m verl_personadual.eval " + shlex.join(argv))
    if eval_main(argv) != 0:
        raise SystemExit(f"analysis failed: {shlex.join(argv)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="work directory (created; steps already done are reused)"
    )
    parser.add_argument("--sft-steps", type=int, default=300, help="steps of the sft stand-in (default %(default)s)")
    parser.add_argument(
        "--taught-steps", type=int, default=100, help="further steps of the taught stand-in (default %(default)s)"
    )
    parser.add_argument("--eval-items", type=int, default=200, help="toy eval items (default %(default)s)")
    parser.add_argument(
        "--sft-items", type=int, default=1600, help="toy SFT items, two rows each (default %(default)s)"
    )
    parser.add_argument("--copy-to", type=Path, help="copy the README's six PNGs into this directory")
    a = parser.parse_args(argv)

    import pyarrow.parquet as pq

    from verl_personadual.apps.tiny_model import TinyModelSpec, write_tiny_model
    from verl_personadual.data import toy

    out: Path = a.out
    if not (out / "toy").exists():
        _say(f"toy data -> {out / 'toy'}")
        toy.build(out / "toy", toy.ToySizes(sft=a.sft_items, rl=64, rl_val=8, eval=a.eval_items), seed=0)
    if not (out / "base").exists():
        write_tiny_model(out / "base", TinyModelSpec(), extra_corpus=toy.corpus(), whole_words=toy.whole_words())
    rows = pq.read_table(out / "toy" / "sft" / "train.parquet").to_pylist()
    if not (out / "sft").exists():
        teach(out / "base", rows, out / "sft", a.sft_steps, 2e-3, seed=0)
    better = [
        r for r in rows if BETTER.get(r["extra_info"]["task"], r["extra_info"]["mode"]) == r["extra_info"]["mode"]
    ]
    if not (out / "taught").exists():
        teach(out / "sft", better, out / "taught", a.taught_steps, 1e-3, seed=1)
    if not (out / "taught_mt").exists():
        two_turn = two_turn_sft_rows(better, TWO_TURN_RATIO)
        teach(out / "sft", two_turn, out / "taught_mt", a.taught_steps, 1e-3, seed=1)
    eval_set = out / "toy" / "eval_set.jsonl"
    for name in ("sft", "taught", "taught_mt"):
        _say(f"eval run {name} -> {out / f'run_{name}'}")
        eval_toy(out / name, eval_set, out / f"run_{name}")

    sel = ["--personalized", "task=helpful"]
    hf = ["--backend", "hf", "--device", "cpu", "--no-progress"]
    runs = ["--run", f"sft={out / 'run_sft'}", "--run", f"taught={out / 'run_taught'}"]
    analyse(["mode-probs", *runs, "--out", str(out / "mode_probs"), *hf])
    analyse(["multiturn", "--run", str(out / "run_taught"), "--out", str(out / "multiturn"), "--by", "task", *sel, *hf])
    analyse(
        [
            "multiturn",
            "--run",
            str(out / "run_taught_mt"),
            "--out",
            str(out / "multiturn_mt"),
            "--by",
            "task",
            *sel,
            *hf,
        ]
    )
    compare_alignment({"taught": out / "multiturn", "taught_mt": out / "multiturn_mt"}, out / "multiturn_training")
    analyse(["lexical", "--run", str(out / "run_taught"), "--out", str(out / "lexical")])
    analyse(["mixed", *runs, "--out", str(out / "mixed"), *sel])
    if a.copy_to:
        a.copy_to.mkdir(parents=True, exist_ok=True)
        for name, (sub, png) in PICTURES.items():
            shutil.copyfile(out / sub / "plots" / png, a.copy_to / name)
        _say(f"{len(PICTURES)} pictures -> {a.copy_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
