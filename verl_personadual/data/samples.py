"""Recorded placeholder LLM replies for the shipped samples, so that every ``--samples`` command runs offline.

``verl_personadual/samples/llm_cache`` holds, in the layout of ``llm.ReplyCache`` and keyed exactly as
``llm.LLMClient`` keys a request to the model :data:`REPLAY_MODEL`:

- the expert trajectories of ``python -m verl_personadual.apps.build_sft --samples`` (default ``--seed``, counts and
  expert sampling): template text, NOT written by an expert model (:func:`expert_reply`). Each reply reasons in
  one labelled placeholder sentence and answers with the gold answer, except general-mode replies to items whose
  persona is aligned, which answer wrongly: gain-based selection then keeps personalized trajectories for aligned
  items and general ones for unaligned items, so both modes occur in the SFT data, as with a real expert whom the
  aligned persona helps;
- the aligned personas of ``python -m verl_personadual.eval run --samples``: one template persona per benchmark
  (:func:`eval_personas`), not question-specific.

With ``--samples`` and no endpoint configured, those commands replay this cache (``LLMConfig(offline=True)``:
nothing is sent); a request outside the recording fails with :data:`MISS_HINT`. The manifests name
:data:`REPLAY_MODEL` as the model. After changing a prompt template or a sample file, re-record::

    python -m verl_personadual.apps.record_samples            # rewrite samples/llm_cache
    python -m verl_personadual.apps.record_samples --check    # exit 1 if it is stale (a test runs this)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import (
    PersonaSetting,
    TaskFamily,
    format_answer,
)
from verl_personadual.data.benchmarks import benchmarks
from verl_personadual.data.rl_rows import FILE_INPUTS
from verl_personadual.utils.llm import (
    ENV_BASE_URL,
    ENV_MODEL,
    LLMConfig,
)

__all__ = [
    "REPLAY_MODEL",
    "CACHE_DIR",
    "MISS_HINT",
    "eval_personas",
    "replay_config",
    "is_replay",
    "expert_reply",
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
_PLACEHOLDER = "Placeholder reasoning recorded for the shipped samples (not written by an expert model)"


def eval_personas() -> dict[str, str]:
    """The recorded aligned persona of each benchmark that has one (``benchmarks.Benchmark.sample_persona``)."""
    return {b.name: b.sample_persona for b in benchmarks() if b.sample_persona is not None}


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


def samples_dir() -> Path:
    """Directory of the shipped sample files (one per input, in the hub schemas)."""
    return Path(str(resources.files("verl_personadual") / "samples"))


def rl_sample_paths() -> dict[str, Path]:
    return {name: samples_dir() / f"{name}.jsonl" for name in FILE_INPUTS}


def eval_sample_paths() -> dict[str, Path]:
    """The shipped fixture files (a few rows of each benchmark that has one, ``benchmarks.Benchmark.sample_file``,
    in its hub schema, and a PersonaHub sample)."""
    root = Path(str(resources.files("verl_personadual") / "samples" / "eval"))
    paths = {b.name: root / b.sample_file for b in benchmarks() if b.sample_file is not None}
    paths["personahub"] = root / "personahub.jsonl"
    return paths
