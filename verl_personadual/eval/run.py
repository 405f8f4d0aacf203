"""One evaluation run: eval set -> generation per decoding mode -> scoring -> predictions JSONL -> tables + plots.

Output directory layout (``--out``):

- ``eval_set.jsonl`` + ``eval_manifest.json``: the sampled items with their persona per setting, and how they
  were made (inputs with SHA-256, seed, sizes, skip counts, persona-LLM request counts). Built once; a resumed
  run, or another model given ``--eval-set``, reuses it (a run given ``--eval-set`` keeps a copy of the rows it
  evaluates).
- ``run_config.json``: model and generation settings; a resumed run must match it (else use another ``--out``).
- ``predictions.jsonl``: one line per (row, decoding): ``row_id`` (``<item_id>|<setting>``), ``item_id``,
  ``benchmark``, ``task``, ``family``, ``setting``, ``decoding``, ``prompt_style``, ``mode`` (the mode the
  response is in: general / personalized / unknown), ``persona_id``, ``pred`` (extracted answer), ``correct``,
  ``format_ok``, ``has_answer``, ``score`` (the training reward), ``response_tokens``, ``truncated``,
  ``response``. Append-only; a crashed run continues where it stopped (``store.PredictionStore``).
- ``tables/`` and ``plots/``: written by ``report.write_report`` at the end of the run.

Mode of a response: read from its token ids (``ModePrefixes.mode_of_ids``); forced responses start with their
prefix by construction. When the prefixes are plain text (no dedicated tokens) or the prompt style is
``mode_choice`` (a plain model writing the tags as text), an unknown id head falls back to the decoded text head.

Scoring: ``verl_personadual.rewards.compute_score`` (the training reward) with ``extra_info`` carrying the task
family, options, question, persona setting and mode. With ``--judge``, ``rewards.LLMJudge`` on the shared
``LLMClient`` (cached) is consulted for PubMedQA and MATH-500 (families ``yes_no_maybe`` and ``math``) when the
rules say incorrect, as the paper graded them with an LLM; rule-based otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from data_preprocess import personahub
from data_preprocess.common import Item
from verl_personadual.atomic import atomic_write_text
from verl_personadual.eval.baselines import (
    PromptStyle,
    Router,
    build_messages,
    mode_from_text,
)
from verl_personadual.eval.benchmarks import DEFAULT_SIZES, load_benchmark, sample_items
from verl_personadual.eval.generate import (
    Decoding,
    DecodingParams,
    Generator,
    make_generator,
    prompt_ids,
    request_seed,
)
from verl_personadual.eval.mode_probs import choose_modes
from verl_personadual.eval.personas import (
    EvalRow,
    build_eval_set,
    read_eval_set,
    write_eval_set,
)
from verl_personadual.eval.report import write_report
from verl_personadual.eval.store import PredictionStore
from verl_personadual.llm import LLMClient, LLMConfig
from verl_personadual.modes import UNKNOWN_MODE, Mode, ModePrefixes, resolve_prefixes
from verl_personadual.names import MODE_FIELD
from verl_personadual.prompts import (
    PERSONALIZED_SOURCES,
    DataSource,
    PersonaSetting,
    TaskFamily,
)
from verl_personadual.rewards import LLMJudge, compute_score

__all__ = ["RunConfig", "RunError", "run", "prepare_eval_set", "score_response", "JUDGE_FAMILIES", "EVAL_SET", "PREDICTIONS"]

logger = logging.getLogger(__name__)

EVAL_SET = "eval_set.jsonl"
EVAL_MANIFEST = "eval_manifest.json"
RUN_CONFIG = "run_config.json"
PREDICTIONS = "predictions.jsonl"
#: Families the optional judge grades (PubMedQA, MATH-500).
JUDGE_FAMILIES = (TaskFamily.YES_NO_MAYBE, TaskFamily.MATH)
_MODE_NAME = {int(Mode.GENERAL): "general", int(Mode.PERSONALIZED): "personalized", UNKNOWN_MODE: "unknown"}
#: The progress bar: responses done (fractions while a batch decodes), elapsed < remaining (the ETA assumes every
#: response runs to --max-new-tokens, so it shrinks when responses end early).
_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} resp [{elapsed}<{remaining}]"


class RunError(ValueError):
    """The run cannot proceed as configured (the message says what to change)."""


@dataclass
class RunConfig:
    """Everything a run needs; see ``python -m verl_personadual.eval run --help`` for each field."""

    model: str
    out_dir: Path
    benchmarks: list[DataSource]
    settings: list[PersonaSetting]
    decodings: list[Decoding]
    paths: dict[str, Path] = field(default_factory=dict)  # benchmark or "personahub" -> local file / dir
    sizes: dict[DataSource, int] = field(default_factory=dict)
    seed: int = 0
    eval_set: Path | None = None
    backend: str = "auto"
    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 16
    decoding: DecodingParams = field(default_factory=DecodingParams)
    prompt_style: PromptStyle = PromptStyle.PERSONA
    router: Path | None = None
    judge: bool = False
    llm: LLMConfig | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


def _selection(cfg: RunConfig) -> dict[str, Any]:
    return {
        "benchmarks": [b.value for b in cfg.benchmarks],
        "settings": [s.value for s in cfg.settings],
        "sizes": {b.value: cfg.sizes.get(b, DEFAULT_SIZES.get(b)) for b in cfg.benchmarks},
        "seed": cfg.seed,
    }


def _client(cfg: RunConfig, purpose: str) -> LLMClient:
    if cfg.llm is None:
        raise RunError(
            f"{purpose} needs an OpenAI-compatible endpoint: set PERSONADUAL_LLM_BASE_URL and PERSONADUAL_LLM_MODEL "
            "(or --llm-base-url / --llm-model)"
        )
    return LLMClient(cfg.llm, progress=cfg.progress)


def _keep(row: EvalRow, cfg: RunConfig) -> bool:
    if row.source not in cfg.benchmarks:
        return False
    return row.source in PERSONALIZED_SOURCES or PersonaSetting(row.setting) in cfg.settings


def prepare_eval_set(cfg: RunConfig) -> list[EvalRow]:
    """The rows to evaluate: from ``cfg.eval_set``, else the run directory's saved set (which must have been made
    with the same selection), else built now and saved (module docstring)."""
    own = cfg.out_dir / EVAL_SET
    manifest_path = cfg.out_dir / EVAL_MANIFEST
    if cfg.eval_set is not None:
        rows = [r for r in read_eval_set(cfg.eval_set) if _keep(r, cfg)]
        if not rows:
            raise RunError(f"{cfg.eval_set}: no row of the selected benchmarks and settings")
        if own.exists() and own.resolve() != Path(cfg.eval_set).resolve():
            if read_eval_set(own) != rows:
                raise RunError(f"{own} holds other rows than the selection from {cfg.eval_set}; use another --out")
        elif not own.exists():  # the manifest first: a saved eval set always has its manifest
            selection = {"eval_set": str(cfg.eval_set), **_selection(cfg)}
            atomic_write_text(manifest_path, json.dumps({"selection": selection, "rows": len(rows)}, indent=2) + "\n")
            write_eval_set(own, rows)
        logger.info("eval set: %d rows from %s (copy in %s)", len(rows), cfg.eval_set, own)
        return rows
    if own.exists():
        saved = json.loads(manifest_path.read_text(encoding="utf-8")).get("selection") if manifest_path.exists() else None
        if saved != _selection(cfg):
            raise RunError(
                f"{own} was built for {saved} but this run asks for {_selection(cfg)}; use another --out, or "
                f"--eval-set {own} to evaluate (a subset of) the saved set"
            )
        rows = read_eval_set(own)
        logger.info("eval set: %d rows reused from %s", len(rows), own)
        return rows
    items: list[Item] = []
    inputs: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for bench in cfg.benchmarks:
        loaded, provenance = load_benchmark(bench, cfg.paths.get(bench.value), seed=cfg.seed)
        picked = sample_items(loaded.items, cfg.sizes.get(bench, DEFAULT_SIZES[bench]), cfg.seed, bench)
        items.extend(picked)
        inputs[bench.value] = {**provenance, "rows_read": loaded.rows_read, "usable": len(loaded.items), "sampled": len(picked)}
        skipped[bench.value] = loaded.skipped.as_dict()
    has_objective = any(b not in PERSONALIZED_SOURCES for b in cfg.benchmarks)
    pool: list[personahub.Persona] = []
    if PersonaSetting.UNALIGNED in cfg.settings and has_objective:
        spec = personahub.spec(cfg.paths.get("personahub"))
        pool, _ = personahub.load(spec)
        inputs["personahub"] = {**spec.describe(), "pool": len(pool)}
    client = None
    if PersonaSetting.ALIGNED in cfg.settings and has_objective:
        client = _client(cfg, "the aligned persona setting")
    rows = build_eval_set(items, cfg.settings, pool, cfg.seed, client)
    manifest = {"selection": _selection(cfg), "inputs": inputs, "skipped": skipped, "rows": len(rows)}
    if client is not None:
        manifest["persona_llm"] = {"model": client.config.model, **client.stats.as_dict()}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_eval_set(own, rows)
    logger.info("eval set: %d rows written to %s", len(rows), own)
    return rows


def _check_run_config(cfg: RunConfig) -> None:
    current = {
        "model": cfg.model,
        "prompt_style": cfg.prompt_style.value,
        "decoding": asdict(cfg.decoding),
        "chat_template_kwargs": cfg.chat_template_kwargs,
        "router": str(cfg.router) if cfg.router else None,
        "judge": cfg.judge,
    }
    path = cfg.out_dir / RUN_CONFIG
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != current:
            diff = sorted(k for k in current if saved.get(k) != current[k])
            raise RunError(f"{path} differs from this run in {diff}; resume with the same settings or use another --out")
    else:
        atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")


def score_response(row: EvalRow, text: str, mode: int, judge: LLMJudge | None = None) -> dict[str, Any]:
    """``rewards.compute_score`` of one decoded response to ``row`` (mode code 0 / 1 / -1), with ``extra_info``
    carrying the family, options, question, persona setting and mode name."""
    extra = {
        "task_family": row.family,
        "choices": row.choices or None,
        "question": row.question,
        "persona_setting": row.setting,
        MODE_FIELD: _MODE_NAME[mode],
    }
    return compute_score(row.benchmark, text, row.gold, extra, judge=judge)


def _read_mode(ids: Sequence[int], gen: Generator, prefixes: ModePrefixes, style: PromptStyle) -> int:
    mode = prefixes.mode_of_ids(ids)
    if mode == UNKNOWN_MODE and (not prefixes.single_token or style is PromptStyle.MODE_CHOICE):
        mode = mode_from_text(gen.tokenizer.decode(list(ids), skip_special_tokens=False))
    return mode


def _generate_batch(
    batch: Sequence[tuple[EvalRow, Decoding, Mode | None]], gen: Generator, prefixes: ModePrefixes, cfg: RunConfig
) -> list[tuple[list[int], bool]]:
    prompts, budgets, heads, seeds = [], [], [], []
    for row, dec, forced in batch:
        ids = prompt_ids(gen.tokenizer, build_messages(row, cfg.prompt_style), cfg.chat_template_kwargs)
        head = list(prefixes.ids[forced]) if forced is not None else []
        budget = cfg.decoding.max_new_tokens - len(head)
        if budget < 1:
            raise RunError(f"--max-new-tokens {cfg.decoding.max_new_tokens} leaves no room after the mode prefix")
        prompts.append(ids + head)
        budgets.append(budget)
        heads.append(head)
        seeds.append(request_seed(cfg.decoding.seed, f"{row.row_id}|{dec.value}"))
    outs = gen.generate(prompts, budgets, seeds)
    return [(head + out, len(out) >= budget) for head, out, budget in zip(heads, outs, budgets)]


def run(cfg: RunConfig, generator: Generator | None = None) -> Path:
    """Evaluate ``cfg.model`` (or the given ``generator``) and write every output; returns the predictions path.

    Items already in ``predictions.jsonl`` are skipped, so calling this again after a crash finishes the run.
    """
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if Decoding.ROUTER in cfg.decodings and cfg.router is None:
        raise RunError("decoding 'router' needs --router (a file written by `train-router`)")
    rows = prepare_eval_set(cfg)
    _check_run_config(cfg)
    store = PredictionStore(cfg.out_dir / PREDICTIONS)
    todo = [(r, d) for r in rows for d in cfg.decodings if (r.row_id, d.value) not in store]
    logger.info(
        "%d rows x %d decodings: %d done, %d to generate", len(rows), len(cfg.decodings), len(rows) * len(cfg.decodings) - len(todo), len(todo)
    )
    if todo:
        routed: dict[str, Mode] = {}
        router_rows = [r for r, d in todo if d is Decoding.ROUTER]
        if router_rows:
            routed = dict(zip((r.row_id for r in router_rows), Router.load(cfg.router).predict(router_rows)))
        units = [(r, d, routed[r.row_id] if d is Decoding.ROUTER else d.forced_mode) for r, d in todo]
        gen = generator or make_generator(
            cfg.backend, cfg.model, cfg.decoding, cfg.device, cfg.dtype, cfg.engine_kwargs
        )
        prefixes = resolve_prefixes(gen.tokenizer)
        judge = None
        if cfg.judge:
            if cfg.llm is None:
                raise RunError("--judge needs an OpenAI-compatible endpoint: set PERSONADUAL_LLM_BASE_URL and "
                               "PERSONADUAL_LLM_MODEL (or --llm-base-url / --llm-model)")
            judge = LLMJudge(LLMClient(cfg.llm, validate=LLMJudge.check_reply, progress=False), JUDGE_FAMILIES)
        score = functools.partial(score_response, judge=judge)
        workers = cfg.llm.max_concurrency if judge is not None and cfg.llm is not None else 1
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(units), desc="generate+score", unit="resp", disable=not cfg.progress, bar_format=_BAR
        ) as bar:
            for start in range(0, len(units), cfg.batch_size):
                batch = units[start : start + cfg.batch_size]
                if hasattr(gen, "step_callback"):  # move the bar within the batch (generate.py: Progress)
                    step = len(batch) / cfg.decoding.max_new_tokens
                    gen.step_callback = functools.partial(_advance, bar, step, start + len(batch))
                if any(d is Decoding.FREE_CONSTRAINED for _, d, _ in batch):
                    batch = _constrain(batch, gen, prefixes, cfg)
                outs = _generate_batch(batch, gen, prefixes, cfg)
                texts = [gen.tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in outs]
                modes = [
                    int(forced) if forced is not None else _read_mode(ids, gen, prefixes, cfg.prompt_style)
                    for (_, _, forced), (ids, _) in zip(batch, outs)
                ]
                results = list(pool.map(score, [u[0] for u in batch], texts, modes))
                store.append(
                    _record(row, dec, cfg.prompt_style, mode, res, ids, trunc, text)
                    for (row, dec, _), (ids, trunc), text, mode, res in zip(batch, outs, texts, modes, results)
                )
                bar.update(start + len(batch) - bar.n)
    written = write_report(cfg.out_dir)
    logger.info("predictions: %s", store.path)
    for path in written:
        logger.info("wrote %s", path)
    return store.path


def _constrain(
    batch: Sequence[tuple[EvalRow, Decoding, Mode | None]], gen: Generator, prefixes: ModePrefixes, cfg: RunConfig
) -> list[tuple[EvalRow, Decoding, Mode | None]]:
    """The batch with each ``free_constrained`` unit's mode drawn among the two prefixes only
    (``mode_probs.choose_modes``, seeded per request); the response is then generated after it, as when forced."""
    idx = [i for i, (_, d, _) in enumerate(batch) if d is Decoding.FREE_CONSTRAINED]
    rows = [batch[i][0] for i in idx]
    prompts = [prompt_ids(gen.tokenizer, build_messages(r, cfg.prompt_style), cfg.chat_template_kwargs) for r in rows]
    seeds = [request_seed(cfg.decoding.seed, f"{r.row_id}|{Decoding.FREE_CONSTRAINED.value}|mode") for r in rows]
    out = list(batch)
    for i, mode in zip(idx, choose_modes(gen, prompts, prefixes, cfg.decoding.temperature, seeds, cfg.batch_size)):
        out[i] = (batch[i][0], batch[i][1], mode)
    return out


def _advance(bar: Any, step: float, stop: float) -> None:
    """One decoding step of a batch: move the progress bar by ``step`` responses, never past ``stop``."""
    bar.update(min(step, stop - bar.n))


def _record(
    row: EvalRow, dec: Decoding, style: PromptStyle, mode: int, res: dict[str, Any], ids: list[int], truncated: bool, text: str
) -> dict[str, Any]:
    return {
        "row_id": row.row_id,
        "item_id": row.item_id,
        "benchmark": row.benchmark,
        "task": row.task,
        "family": row.family,
        "setting": row.setting,
        "decoding": dec.value,
        "prompt_style": style.value,
        "mode": _MODE_NAME[mode],
        "persona_id": row.persona_id,
        "pred": res["pred"],
        "correct": res["correct"],
        "format_ok": res["format_ok"],
        "has_answer": res["has_answer"],
        "score": res["score"],
        "response_tokens": len(ids),
        "truncated": truncated,
        "response": text,
    }
