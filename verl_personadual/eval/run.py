"""One evaluation run: eval set -> generation per decoding mode -> scoring -> predictions JSONL -> tables + plots.

Output directory layout (``--out``):

- ``eval_set.jsonl`` + ``eval_manifest.json``: the sampled items with their persona per setting, and how they
  were made (inputs with SHA-256, seed, sizes, skip counts, persona-LLM request counts). Built once; a resumed
  run, or another model given ``--eval-set``, reuses it (a run given ``--eval-set`` keeps a copy of the rows it
  evaluates).
- ``run_config.json``: model (resolved path or hub id, revision and content fingerprint:
  ``fingerprint.model_identity``) and generation settings, plus ``generator`` for a run with a custom generator
  (``RunConfig.generator_pins``: what a generator-based system's generator is made of, e.g. the FPPS artifact of
  ``--system fpps_*``); a resumed run must match it (else use another ``--out``).
- ``predictions.jsonl``: one line per (row, decoding): ``row_id`` (``<item_id>|<setting>``), ``item_id``,
  ``benchmark``, ``task``, ``family``, ``setting``, ``decoding``, ``prompt_style``, ``mode`` (the mode the
  response is in: general / personalized / unknown), ``persona_id``, ``pred`` (extracted answer), ``correct``,
  ``format_ok``, ``has_answer``, ``score`` (the training reward), ``response_tokens``, ``truncated``,
  ``response``; with ``--judge``, for PubMedQA and MATH-500, also ``rule_correct`` (the rules' verdict),
  ``judge_correct`` (the judge's), ``judge_pred`` (the answer it extracted) and ``grader`` (``judge``: what
  ``correct`` is; a response the judge gave no verdict for is not saved, and the run fails with exit status 2
  after its last batch, so no rule verdict stands in a judged column and a rerun asks the judge again); with a
  row-aware generator (``generate.RowGenerator``) also its extra fields (FPPS: ``fpps``, see
  ``eval.fpps.generator``). Append-only; a crashed run continues where it stopped (``store.PredictionStore``).
- ``tables/`` and ``plots/``: written by ``report.write_report`` at the end of the run.

Several sampling seeds (``--seeds 0 1 2``: the paper's "averaged over three runs"): the eval set is built once in
``--out``; each seed is an ordinary run of it in ``--out/seed_<s>/`` (sampling at ``--temperature``, by default the
recipes' 0.6, with request seeds derived from ``<s>``), and ``--out/tables`` report the mean over seeds, its
sample standard deviation and its 95 % Student-t interval (``report``). One model load serves every seed; a killed
run resumes seed by seed. Without ``--seeds`` a run is a single greedy one (``--temperature 0``) in ``--out``
itself.

Mode of a response: read from its token ids (``ModePrefixes.mode_of_ids``); forced responses start with their
prefix by construction. When the prefixes are plain text (no dedicated tokens) or the prompt style is
``mode_choice`` (a plain model writing the tags as text), an unknown id head falls back to the decoded text head.

Scoring: ``verl_personadual.core.rewards.compute_score`` (the training reward) with ``extra_info`` carrying the task
family, options, question, persona setting and mode. With ``--judge``, PubMedQA and MATH-500 responses are graded
as the paper grades them: ``eval.judge.ExtractVerifyJudge`` (any OpenAI-compatible endpoint through the shared,
cached ``LLMClient``) extracts the concise answer from the whole response and verifies it; ``correct`` is its
verdict, and the rules' verdict is kept next to it (``tables/judge_agreement``). The other benchmarks are graded by
the rules (TriviaQA by exact match against its aliases, as in the paper).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from verl_personadual.core.modes import (
    UNKNOWN_MODE,
    Mode,
    ModePrefixes,
    mode_name,
    resolve_prefixes,
)
from verl_personadual.core.names import MODE_FIELD
from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.core.rewards import compute_score
from verl_personadual.data import personahub
from verl_personadual.data.benchmarks import DEFAULT_SIZES, is_personalized, load_benchmark, sample_items
from verl_personadual.data.common import Item
from verl_personadual.data.eval_sets import (
    EvalRow,
    build_eval_set,
    read_eval_set,
    write_eval_set,
)
from verl_personadual.data.preflight import check_mode_tokens
from verl_personadual.eval.baselines import (
    PromptStyle,
    Router,
    build_messages,
    mode_from_text,
)
from verl_personadual.eval.generate import (
    Decoding,
    DecodingParams,
    Generator,
    RowGenerator,
    make_generator,
    prompt_ids,
    request_seed,
)
from verl_personadual.eval.judge import (
    ExtractVerifyJudge,
    JudgeVerdict,
    is_judged,
)
from verl_personadual.eval.mode_choice import choose_modes
from verl_personadual.eval.report import write_report
from verl_personadual.eval.store import PredictionStore
from verl_personadual.eval.systems import System
from verl_personadual.utils.atomic import output_dir, write_json
from verl_personadual.utils.errors import UserError
from verl_personadual.utils.fingerprint import model_identity
from verl_personadual.utils.llm import LLMClient, LLMConfig, needs_endpoint

__all__ = [
    "RunConfig",
    "RunError",
    "run",
    "expects_mode_tokens",
    "check_model_modes",
    "prepare_eval_set",
    "score_response",
    "grade_with_judge",
    "EVAL_SET",
    "PREDICTIONS",
    "SAMPLING_TEMPERATURE",
    "SEED_DIR",
]

logger = logging.getLogger(__name__)

EVAL_SET = "eval_set.jsonl"
EVAL_MANIFEST = "eval_manifest.json"
RUN_CONFIG = "run_config.json"
PREDICTIONS = "predictions.jsonl"
#: Sub-run directory of one sampling seed of a multi-seed run.
SEED_DIR = "seed_{}"
#: Sampling temperature of multi-seed runs unless told otherwise: the recipes' rollout temperature (paper Table 6).
SAMPLING_TEMPERATURE = 0.6
#: The progress bar: responses done (fractions while a batch decodes), elapsed < remaining (the ETA assumes every
#: response runs to --max-new-tokens, so it shrinks when responses end early).
_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} resp [{elapsed}<{remaining}]"


class RunError(UserError, ValueError):
    """The run cannot proceed as configured (the message says what to change)."""


@dataclass
class RunConfig:
    """Everything a run needs; see ``python -m verl_personadual.eval run --help`` for each field."""

    model: str
    out_dir: Path
    benchmarks: list[str]  # registered benchmark names (``data.benchmarks``), or the toy task with ``eval_set``
    settings: list[PersonaSetting]
    decodings: list[Decoding]
    paths: dict[str, Path] = field(default_factory=dict)  # benchmark or "personahub" -> local file / dir
    sizes: dict[str, int] = field(default_factory=dict)
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
    seeds: list[int] | None = None  # sampling seeds of a multi-seed run (module docstring); None: one run
    system: System | None = None  # the Table 1 system this run evaluates (recorded for `compare --system`)
    generator_pins: dict[str, Any] = field(default_factory=dict)  # what a custom generator is made of (run_config)
    llm: LLMConfig | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    disjoint_from: Path | None = None  # an eval set whose items a built set leaves out (:func:`prepare_eval_set`)


def _selection(cfg: RunConfig) -> dict[str, Any]:
    selection = {
        "benchmarks": [str(b) for b in cfg.benchmarks],
        "settings": [s.value for s in cfg.settings],
        "sizes": {str(b): cfg.sizes.get(b, DEFAULT_SIZES.get(b)) for b in cfg.benchmarks},
        "seed": cfg.seed,
    }
    if cfg.disjoint_from is not None:  # only then: the manifests of sets built before the key existed still match
        selection["disjoint_from"] = str(Path(cfg.disjoint_from).resolve())
    return selection


def _client(cfg: RunConfig, purpose: str) -> LLMClient:
    if cfg.llm is None:
        raise RunError(needs_endpoint(purpose))
    return LLMClient(cfg.llm, progress=cfg.progress)


def _keep(row: EvalRow, cfg: RunConfig) -> bool:
    if row.source not in cfg.benchmarks:
        return False
    return is_personalized(row.source) or PersonaSetting(row.setting) in cfg.settings


def prepare_eval_set(cfg: RunConfig) -> list[EvalRow]:
    """The rows to evaluate: from ``cfg.eval_set``, else the run directory's saved set (which must have been made
    with the same selection), else built now and saved (module docstring).

    Built with ``cfg.disjoint_from`` (a calibration set for FPPS or the router, ``eval calibration-set``): each
    benchmark's items are drawn, as usual, but from the usable items that eval set does NOT hold (by item id). A
    benchmark with none left (the eval set drew all of it, e.g. MATH-500 and PubMedQA at Table 7 sizes) contributes
    no item: a warning names it and the manifest lists it under ``exhausted``; if every benchmark is exhausted,
    RunError. The built rows are checked to share no item with that eval set before anything is written."""
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
            write_json(manifest_path, {"selection": selection, "rows": len(rows)})
            write_eval_set(own, rows)
        logger.info("eval set: %d rows from %s (copy in %s)", len(rows), cfg.eval_set, own)
        return rows
    if own.exists():
        saved = (
            json.loads(manifest_path.read_text(encoding="utf-8")).get("selection") if manifest_path.exists() else None
        )
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
    excluded = set() if cfg.disjoint_from is None else {r.item_id for r in read_eval_set(cfg.disjoint_from)}
    exhausted: list[str] = []
    for bench in cfg.benchmarks:
        name = str(bench)
        loaded, provenance = load_benchmark(name, cfg.paths.get(name), seed=cfg.seed)
        left = [it for it in loaded.items if it.source_id not in excluded]
        if excluded and not left:
            exhausted.append(name)
            logger.warning(
                "%s: all %d usable items are in %s; the set gets no %s item",
                name,
                len(loaded.items),
                cfg.disjoint_from,
                name,
            )
        picked = sample_items(left, cfg.sizes.get(name, DEFAULT_SIZES[name]), cfg.seed, name)
        items.extend(picked)
        inputs[name] = {
            **provenance,
            "rows_read": loaded.rows_read,
            "usable": len(loaded.items),
            **({"in_disjoint_from": len(loaded.items) - len(left)} if excluded else {}),
            "sampled": len(picked),
        }
        skipped[name] = loaded.skipped.as_dict()
    if excluded and not items:
        raise RunError(
            f"every usable item of {[str(b) for b in cfg.benchmarks]} is in {cfg.disjoint_from}: no item is left "
            "for a disjoint set (give more data with --data, or evaluate on fewer items)"
        )
    has_objective = any(not is_personalized(b) for b in cfg.benchmarks)
    pool: list[personahub.Persona] = []
    if PersonaSetting.UNALIGNED in cfg.settings and has_objective:
        spec = personahub.spec(cfg.paths.get("personahub"))
        pool, _ = personahub.load(spec)
        inputs["personahub"] = {**spec.describe(), "pool": len(pool)}
    client = None
    if PersonaSetting.ALIGNED in cfg.settings and has_objective:
        client = _client(cfg, "the aligned persona setting")
    rows = build_eval_set(items, cfg.settings, pool, cfg.seed, client)
    shared = sorted({r.item_id for r in rows} & excluded)
    if shared:  # a bug, not a user error: the draw above leaves these items out
        raise AssertionError(f"the built set shares {len(shared)} item(s) with {cfg.disjoint_from}: {shared[:3]}")
    manifest = {"selection": _selection(cfg), "inputs": inputs, "skipped": skipped, "rows": len(rows)}
    if excluded:
        manifest["exhausted"] = exhausted
    if client is not None:
        manifest["persona_llm"] = {"model": client.config.model, **client.stats.as_dict()}
    write_json(manifest_path, manifest, sort_keys=True)
    write_eval_set(own, rows)
    logger.info("eval set: %d rows written to %s", len(rows), own)
    return rows


#: How an ``eval run`` on a model without dedicated mode tokens can go on.
EVAL_MODE_TOKENS_HINT = (
    "a PersonaDual checkpoint has them (`python -m verl_personadual.apps.add_mode_tokens` before SFT); for one trained "
    "with plain-text prefixes (algorithm.dual_grpo.require_mode_tokens=false) pass --text-prefixes; for a plain "
    "model without modes pass --system base (or another baseline's --system / --prompt-style)"
)


def expects_mode_tokens(cfg: RunConfig) -> bool:
    """True when the run evaluates a dual-mode checkpoint: a ``dual_mode`` system (``eval.systems``), or, without
    ``--system``, the ``persona`` prompt style (PersonaDual's own). Baselines (base, CoT, Personal-Prompt,
    AlignXpert, PersonaDual-Prompt, any other prompt style) run on plain models."""
    if cfg.system is not None:
        return cfg.system.dual_mode
    return cfg.prompt_style is PromptStyle.PERSONA


def check_model_modes(cfg: RunConfig, text_prefixes: bool = False) -> None:
    """Before anything is generated: a run that :func:`expects_mode_tokens` on a model whose tokenizer has no
    dedicated mode tokens is a PreflightError (unless ``text_prefixes``: the model was trained on text prefixes)."""
    if expects_mode_tokens(cfg) and not text_prefixes:
        check_mode_tokens(cfg.model, True, hint=EVAL_MODE_TOKENS_HINT)


def _check_run_config(cfg: RunConfig) -> None:
    """Pin what the run is made with in ``run_config.json``, or check a resumed run against it: the model by its
    resolved path / hub revision and content fingerprint (``fingerprint.model_identity``), so that another
    checkpoint under the same spelling is never appended. RunError names the keys that differ."""
    current = {
        **model_identity(cfg.model),
        "prompt_style": cfg.prompt_style.value,
        "decoding": asdict(cfg.decoding),
        "chat_template_kwargs": cfg.chat_template_kwargs,
        "router": str(cfg.router) if cfg.router else None,
        "judge": cfg.judge,
        "judge_model": cfg.llm.model if cfg.judge and cfg.llm is not None else None,
        "seeds": cfg.seeds,
        "system": None if cfg.system is None else cfg.system.name,
    }
    if cfg.generator_pins:  # only then: the run_config.json of runs made before the key existed still matches
        current["generator"] = cfg.generator_pins
    path = cfg.out_dir / RUN_CONFIG
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            shown = "; ".join(
                f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in diff if k.startswith("model")
            )
            raise RunError(
                f"{path} differs from this run in {diff}{' (' + shown + ')' if shown else ''}; resume with "
                "the same model and settings, use another --out, or --overwrite to replace it"
            )
    else:
        write_json(path, current, sort_keys=True)


def score_response(row: EvalRow, text: str, mode: int) -> dict[str, Any]:
    """``rewards.compute_score`` of one decoded response to ``row`` (mode code 0 / 1 / -1), with ``extra_info``
    carrying the family, options, question, persona setting and mode name."""
    extra = {
        "task_family": row.family,
        "choices": row.choices or None,
        "question": row.question,
        "persona_setting": row.setting,
        MODE_FIELD: mode_name(mode),
    }
    return compute_score(row.benchmark, text, row.gold, extra)


def grade_with_judge(result: dict[str, Any], verdict: JudgeVerdict | None) -> dict[str, Any]:
    """A judged benchmark's result (module docstring): ``rule_correct`` = the rules' ``correct``; ``judge_correct``
    / ``judge_pred`` = the judge's verdict and extracted answer (None when its request failed); ``correct`` = the
    judge's verdict when there is one, else the rules'; ``grader`` says which (``rule``: not saved by ``run``)."""
    out = dict(result, rule_correct=result["correct"], judge_correct=None, judge_pred=None, grader="rule")
    if verdict is not None:
        out.update(judge_correct=1.0 if verdict.correct else 0.0, judge_pred=verdict.extracted, grader="judge")
        out["correct"] = out["judge_correct"]
    return out


def read_mode(ids: Sequence[int], gen: Generator | RowGenerator, prefixes: ModePrefixes, style: PromptStyle) -> int:
    """Mode code of response ``ids`` (module docstring: from the ids, else from the decoded text head)."""
    mode = prefixes.mode_of_ids(ids)
    if mode == UNKNOWN_MODE and (not prefixes.single_token or style is PromptStyle.MODE_CHOICE):
        mode = mode_from_text(gen.tokenizer.decode(list(ids), skip_special_tokens=False))
    return mode


def _generate_batch(
    batch: Sequence[tuple[EvalRow, Decoding, Mode | None]],
    gen: Generator | RowGenerator,
    prefixes: ModePrefixes,
    cfg: RunConfig,
) -> list[tuple[list[int], bool, dict[str, Any]]]:
    """Per unit: the response ids (forced prefix included), whether it hit its budget, and the generator's extra
    predictions fields (a :class:`~verl_personadual.eval.generate.RowGenerator`'s; none otherwise)."""
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
    if hasattr(gen, "generate_rows"):
        outs, extra = gen.generate_rows([row for row, _, _ in batch], prompts, budgets, seeds)
    else:
        outs, extra = gen.generate(prompts, budgets, seeds), [{} for _ in prompts]
    return [(head + out, len(out) >= budget, more) for head, out, budget, more in zip(heads, outs, budgets, extra)]


def run(cfg: RunConfig, generator: Generator | RowGenerator | None = None) -> Path:
    """Evaluate ``cfg.model`` (or the given ``generator``) and write every output; returns the predictions path
    (one run) or the run directory (several ``cfg.seeds``).

    Items already in ``predictions.jsonl`` are skipped, so calling this again after a crash finishes the run. A run
    that fails before writing anything leaves no (empty) ``cfg.out_dir`` behind.
    """
    if Decoding.ROUTER in cfg.decodings and cfg.router is None:
        raise RunError("decoding 'router' needs --router (a file written by `train-router`)")
    if cfg.seeds is not None:
        seeds = list(cfg.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise RunError(f"--seeds must list distinct seeds, got {seeds}")
        if cfg.decoding.temperature == 0 and len(seeds) > 1:
            raise RunError(
                "greedy decoding (--temperature 0) gives the same responses for every seed; sample with "
                f"--temperature > 0 (default with --seeds: {SAMPLING_TEMPERATURE}) or run without --seeds"
            )
    with output_dir(cfg.out_dir):
        if cfg.seeds is not None:
            return _run_seeds(cfg, generator)
        return _run_one(cfg, _Lazy(cfg, generator))


class _Lazy:
    """The generator, made on first use (a finished or resumed-complete run loads no model)."""

    def __init__(self, cfg: RunConfig, generator: Generator | RowGenerator | None) -> None:
        self.cfg, self.generator = cfg, generator

    def __call__(self) -> Generator | RowGenerator:
        if self.generator is None:
            c = self.cfg
            self.generator = make_generator(c.backend, c.model, c.decoding, c.device, c.dtype, c.engine_kwargs)
        return self.generator


def _run_seeds(cfg: RunConfig, generator: Generator | RowGenerator | None) -> Path:
    """One sub-run per seed over the run directory's eval set (module docstring), then the aggregated report."""
    seeds = list(cfg.seeds or [])
    prepare_eval_set(cfg)
    _check_run_config(cfg)
    lazy = _Lazy(cfg, generator)
    for seed in seeds:
        sub = replace(
            cfg,
            out_dir=cfg.out_dir / SEED_DIR.format(seed),
            eval_set=cfg.out_dir / EVAL_SET,
            seeds=None,
            decoding=replace(cfg.decoding, seed=seed),
        )
        sub.out_dir.mkdir(parents=True, exist_ok=True)
        logger.info("seed %d of %s -> %s", seed, seeds, sub.out_dir)
        _run_one(sub, lazy)
    for path in write_report(cfg.out_dir):
        logger.info("wrote %s", path)
    return cfg.out_dir


def _run_one(cfg: RunConfig, get_generator: _Lazy) -> Path:
    rows = prepare_eval_set(cfg)
    _check_run_config(cfg)
    store = PredictionStore(cfg.out_dir / PREDICTIONS)
    todo = [(r, d) for r in rows for d in cfg.decodings if (r.row_id, d.value) not in store]
    logger.info(
        "%d rows x %d decodings: %d done, %d to generate",
        len(rows),
        len(cfg.decodings),
        len(rows) * len(cfg.decodings) - len(todo),
        len(todo),
    )
    asked = unjudged = 0  # judged responses, and those the judge gave no verdict for
    if todo:
        routed: dict[str, Mode] = {}
        router_rows = [r for r, d in todo if d is Decoding.ROUTER]
        if router_rows:
            routed = dict(zip((r.row_id for r in router_rows), Router.load(cfg.router).predict(router_rows)))
        units = [(r, d, routed[r.row_id] if d is Decoding.ROUTER else d.forced_mode) for r, d in todo]
        gen = get_generator()
        prefixes = resolve_prefixes(gen.tokenizer)
        judge = None
        if cfg.judge:
            if cfg.llm is None:
                raise RunError(needs_endpoint("--judge"))
            judge = ExtractVerifyJudge(LLMClient(cfg.llm, progress=False))
        with tqdm(
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
                texts = [gen.tokenizer.decode(ids, skip_special_tokens=True) for ids, _, _ in outs]
                modes = [
                    int(forced) if forced is not None else read_mode(ids, gen, prefixes, cfg.prompt_style)
                    for (_, _, forced), (ids, _, _) in zip(batch, outs)
                ]
                results = [score_response(u[0], text, mode) for u, text, mode in zip(batch, texts, modes)]
                if judge is not None:
                    results = _judged(batch, texts, results, judge)
                    asked += sum(is_judged(u[0].source) for u in batch)
                    unjudged += sum(r.get("grader") == "rule" for r in results)
                store.append(
                    _record(row, dec, cfg.prompt_style, mode, res, ids, trunc, text, more)
                    for (row, dec, _), (ids, trunc, more), text, mode, res in zip(batch, outs, texts, modes, results)
                    if res.get("grader") != "rule"  # no judge verdict: not saved, so a rerun asks again
                )
                bar.update(start + len(batch) - bar.n)
        if unjudged:
            raise RunError(
                f"--judge: the judge ({cfg.llm.model if cfg.llm else None}) gave no verdict for {unjudged} of {asked} "
                f"judged responses (PubMedQA / MATH-500; see the warnings above); those are not saved and the "
                f"tables not written: rerun the same command to generate and judge them again"
            )
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


def _judged(
    batch: Sequence[tuple[EvalRow, Decoding, Mode | None]],
    texts: Sequence[str],
    results: list[dict[str, Any]],
    judge: ExtractVerifyJudge,
) -> list[dict[str, Any]]:
    """``results`` with the judged benchmarks' responses graded by ``judge`` (one concurrent batch of requests)."""
    index = [k for k, (row, _, _) in enumerate(batch) if is_judged(row.source)]
    verdicts = judge.judge_many([(batch[k][0].question, batch[k][0].gold, texts[k]) for k in index])
    out = list(results)
    for k, verdict in zip(index, verdicts):
        out[k] = grade_with_judge(results[k], verdict)
    return out


def _advance(bar: Any, step: float, stop: float) -> None:
    """One decoding step of a batch: move the progress bar by ``step`` responses, never past ``stop``."""
    bar.update(min(step, stop - bar.n))


def _record(
    row: EvalRow,
    dec: Decoding,
    style: PromptStyle,
    mode: int,
    res: dict[str, Any],
    ids: list[int],
    truncated: bool,
    text: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    judged = {k: res[k] for k in ("rule_correct", "judge_correct", "judge_pred", "grader") if k in res}
    return {
        "row_id": row.row_id,
        "item_id": row.item_id,
        "benchmark": row.benchmark,
        "task": row.task,
        "family": row.family,
        "setting": row.setting,
        "decoding": dec.value,
        "prompt_style": style.value,
        "mode": mode_name(mode),
        "persona_id": row.persona_id,
        "pred": res["pred"],
        "correct": res["correct"],
        "format_ok": res["format_ok"],
        "has_answer": res["has_answer"],
        "score": res["score"],
        **judged,
        **extra,
        "response_tokens": len(ids),
        "truncated": truncated,
        "response": text,
    }
