"""Recorded placeholder LLM replies for the shipped samples, so that every ``--samples`` command runs offline.

``verl_personadual/samples/llm_cache`` holds, in the layout of ``llm.ReplyCache`` and keyed exactly as
``llm.LLMClient`` keys a request to the model :data:`REPLAY_MODEL`:

- the expert trajectories of ``python -m data_preprocess.build_sft --samples`` (default ``--seed``, counts and
  expert sampling): template text, NOT written by an expert model (:func:`expert_reply`). Each reply reasons in
  one labelled placeholder sentence and answers with the gold answer, except general-mode replies to items whose
  persona is aligned, which answer wrongly: gain-based selection then keeps personalized trajectories for aligned
  items and general ones for unaligned items, so both modes occur in the SFT data, as with a real expert whom the
  aligned persona helps;
- the aligned personas of ``python -m verl_personadual.eval run --samples``: one template persona per benchmark
  (:data:`EVAL_PERSONAS`), not question-specific.

With ``--samples`` and no endpoint configured, those commands replay this cache (``LLMConfig(offline=True)``:
nothing is sent); a request outside the recording fails with :data:`MISS_HINT`. The manifests name
:data:`REPLAY_MODEL` as the model. After changing a prompt template or a sample file, re-record::

    python -m verl_personadual.sample_replies            # rewrite samples/llm_cache
    python -m verl_personadual.sample_replies --check    # exit 1 if it is stale (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.errors import UserError, run_cli
from verl_personadual.llm import ENV_BASE_URL, ENV_MODEL, LLMConfig, Reply, ReplyCache, cache_key
from verl_personadual.modes import Mode
from verl_personadual.prompts import PERSONA_KEY, DataSource, PersonaSetting, TaskFamily, format_answer

__all__ = [
    "REPLAY_MODEL",
    "CACHE_DIR",
    "MISS_HINT",
    "EVAL_PERSONAS",
    "replay_config",
    "is_replay",
    "expert_reply",
    "recordings",
    "stale_keys",
    "record",
    "main",
]

#: The model name of the recorded replies (part of every cache key; shown in manifests).
REPLAY_MODEL = "personadual-samples-placeholder"
#: Where the recorded replies are shipped.
CACHE_DIR = Path(str(resources.files("verl_personadual") / "samples" / "llm_cache"))
#: Appended to the error of a request that was not recorded.
MISS_HINT = (
    "the recorded sample replies cover only `--samples` runs with the default --seed, counts and sampling; for "
    f"anything else set {ENV_BASE_URL} and {ENV_MODEL} (or --llm-base-url / --llm-model)"
)
#: The recorded aligned persona of each objective evaluation benchmark.
EVAL_PERSONAS: dict[DataSource, str] = {
    DataSource.MMLU_PRO: "A university student revising for a broad multiple-choice exam.",
    DataSource.SUPERGPQA: "A graduate student preparing for a qualifying exam in their field.",
    DataSource.TRIVIAQA: "A pub-quiz regular who collects trivia facts.",
    DataSource.PUBMEDQA: "A clinician who reads medical research abstracts.",
    DataSource.MATH500: "A high-school student training for a mathematics competition.",
}
_PLACEHOLDER = "Placeholder reasoning recorded for the shipped samples (not written by an expert model)"


def replay_config() -> LLMConfig:
    """An offline client configuration that replays the recorded replies."""
    return LLMConfig(base_url="", model=REPLAY_MODEL, cache_dir=CACHE_DIR, offline=True)


def is_replay(config: LLMConfig | None) -> bool:
    """True for :func:`replay_config`'s configuration."""
    return config is not None and config.offline and config.model == REPLAY_MODEL


def _wrong_answer(gold: str, family: str, choices: Sequence[str]) -> str:
    """An answer the reward grades wrong for ``gold`` (a deterministic pick)."""
    if family in (TaskFamily.MULTIPLE_CHOICE.value, TaskFamily.PREFERENCE.value):
        return "A" if gold != "A" else "B"
    if family == TaskFamily.OPTION_TEXT.value:
        return next(c for c in choices if c.strip().lower() != gold.strip().lower())
    if family == TaskFamily.MATH.value:
        return "-1" if gold != "-1" else "1"
    return "I do not know"


def expert_reply(row: Mapping[str, Any], mode: Mode) -> str:
    """The recorded expert reply to ``row`` (a ``build_rl`` row) in ``mode`` (module docstring)."""
    info, gold = row["extra_info"], row["reward_model"]["ground_truth"]
    wrong = mode is Mode.GENERAL and info["persona_setting"] == PersonaSetting.ALIGNED.value
    answer = _wrong_answer(gold, info["task_family"], info["choices"]) if wrong else gold
    return f"{_PLACEHOLDER}: {mode.name.lower()} mode, item {info['source_id']}.\n{format_answer(answer)}"


def _sft_recordings() -> dict[str, str]:
    from data_preprocess import build_sft

    with tempfile.TemporaryDirectory() as tmp:
        args = build_sft.make_parser().parse_args(["--samples", "--out", tmp, "--no-progress"])
        cfg = build_sft.config_from_args(args)
        rows = build_sft.prepare(cfg).flat_rows()
    return {
        cache_key(REPLAY_MODEL, messages, cfg.sampling): expert_reply(rows[i], mode)
        for i, mode, messages in build_sft.expert_requests(rows)
    }


def _eval_recordings() -> dict[str, str]:
    from data_preprocess.personas import ALIGNED_SAMPLING
    from verl_personadual.eval.benchmarks import OBJECTIVE_BENCHMARKS, load_benchmark
    from verl_personadual.eval.cli import samples_paths
    from verl_personadual.prompts import build_aligned_persona_request

    paths = samples_paths()
    out = {}
    for bench in OBJECTIVE_BENCHMARKS:
        reply = json.dumps({PERSONA_KEY: EVAL_PERSONAS[bench]})
        for item in load_benchmark(bench, paths[bench.value])[0].items:
            out[cache_key(REPLAY_MODEL, build_aligned_persona_request(item.question), ALIGNED_SAMPLING)] = reply
    return out


def recordings() -> dict[str, str]:
    """Cache key -> reply of every recorded request, computed now from the sample files and prompt templates."""
    return _sft_recordings() | _eval_recordings()


def stale_keys(root: Path = CACHE_DIR) -> list[str]:
    """Keys whose entry under ``root`` is missing, different or not recorded any more (empty: up to date)."""
    want = recordings()
    cache = ReplyCache(root)
    bad = {k for k, reply in want.items() if cache.get(k) != Reply(reply)}
    return sorted(bad | (cache.keys() - set(want)))


def record(root: Path = CACHE_DIR) -> int:
    """Rewrite ``root`` with exactly :func:`recordings` (built next to it, then swapped in); returns the count."""
    want = recordings()
    root.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    cache = ReplyCache(staged)
    for key, reply in want.items():
        cache.put(key, Reply(reply))
    if root.exists():
        shutil.rmtree(root)
    staged.rename(root)
    return len(want)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0, or 1 when ``--check`` finds the cache stale; a bad argument is one ``error:`` line and
    exit status 2 (``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m verl_personadual.sample_replies",
        description="Re-record (or --check) the placeholder LLM replies shipped for offline `--samples` runs of "
        "build_sft and eval run (see this module's docstring for what they are).",
    )
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the shipped cache is stale")
    p.add_argument("--root", type=Path, default=CACHE_DIR, help="cache directory (default: the shipped one)")
    args = p.parse_args(argv)
    if args.root.exists() and not args.root.is_dir():
        raise UserError(f"--root {args.root}: not a directory")
    if args.check:
        stale = stale_keys(args.root)
        if stale:
            print(f"{args.root}: {len(stale)} recorded replies are stale; run `python -m verl_personadual.sample_replies`",
                  file=sys.stderr)
            return 1
        print(f"{args.root}: up to date")
        return 0
    print(f"{args.root}: {record(args.root)} replies recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
