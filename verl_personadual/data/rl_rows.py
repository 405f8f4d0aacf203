"""Build the RL data (PersonaDualData, RL column of Table 5) as verl 0.9.1 RL parquet.

    python -m verl_personadual.apps.build_rl --samples --out /tmp/pd_rl          # shipped samples, offline
    python -m verl_personadual.apps.build_rl --out data/rl                       # hub data + LLM personas

Pipeline (all randomness from ``--seed``; the same inputs and seed give byte-identical parquet):

1. Load UltraMedical, FLAN, AlignX and PersonaHub (local files or hub ids; bad-input policy in
   ``verl_personadual.data.common``), remove items overlapping the PubMedQA test questions (from UltraMedical) and the
   TriviaQA ones (from FLAN), as the paper does (Table 5). The question lists are the evaluation benchmarks' own
   (``verl_personadual.data.overlap``): local files given with ``--pubmedqa`` / ``--triviaqa``, else their hub ids. A
   list that cannot be loaded stops the build; ``--no-overlap-filter`` builds without the filters (the manifest
   says, per filter, whether it ran, on what input, and what it removed by which key: text or id). Malformed
   AlignX rows are skipped and counted (``--strict``: the first one stops the build). The manifest's
   ``per_source`` shows, per source, the rows read, the items kept and the drops by reason (the loader's skips
   and ``overlap:<filter>``), read = kept + dropped.
2. Per source, sort the pool by ``source_id``, draw the training items stratified by task (largest-remainder
   allocation proportional to task size), then the validation items the same way from what is left (disjoint).
3. Objective items (UltraMedical, FLAN) alternate aligned / unaligned persona in their stratified order, so each
   split and each task is split equally (the odd one out is aligned). AlignX items keep their own user persona
   (setting ``aligned``).
4. Unaligned personas come from PersonaHub; aligned ones from the LLM (or the labelled offline templates).
5. Rows are shuffled per split and written atomically as ``train.parquet`` / ``validation.parquet`` with a
   ``manifest.json`` next to them.

Row schema (verl-notes §5): ``prompt`` (chat list from ``prompts.build_prompt``), ``data_source``,
``reward_model`` {``style``: "rule", ``ground_truth``: str}, ``extra_info`` (:data:`EXTRA_INFO_TYPE`, the
same struct for every row), ``agent_name`` (forced agent loop for training rows, free for validation rows).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from verl_personadual.core import names
from verl_personadual.core.prompts import PersonaSetting, build_prompt
from verl_personadual.data import alignx, flan, overlap, personahub, ultramedical
from verl_personadual.data.common import (
    BuildError,
    Item,
    LoadedSource,
    SchemaError,
    SourceUnavailableError,
)
from verl_personadual.data.personahub import Persona
from verl_personadual.data.personas import (
    AlignedMode,
    aligned_personas_llm,
    aligned_personas_offline,
    unaligned_personas,
)
from verl_personadual.data.schema import ROW_SCHEMA
from verl_personadual.utils.atomic import atomic_write, write_json
from verl_personadual.utils.llm import (
    LLMBatchError,
    LLMClient,
    LLMConfig,
    needs_endpoint,
    redact_url,
)

SOURCES = ("ultramedical", "flan", "alignx")
FILE_INPUTS = SOURCES + ("personahub", *overlap.filter_rules())
#: Table 5, RL column.
DEFAULT_TRAIN_COUNTS = {"ultramedical": 3000, "flan": 5998, "alignx": 1000}
#: Held-out validation items per source (about 5 % of training).
DEFAULT_VAL_COUNTS = {"ultramedical": 150, "flan": 300, "alignx": 50}
#: Counts used with ``--samples`` (sized to the shipped sample files).
SAMPLE_TRAIN_COUNTS = {"ultramedical": 6, "flan": 10, "alignx": 4}
SAMPLE_VAL_COUNTS = {"ultramedical": 2, "flan": 4, "alignx": 2}
SPLITS = ("train", "validation")
AGENT_FOR_SPLIT = {"train": names.AGENT_LOOP_FORCED, "validation": names.AGENT_LOOP_FREE}


@dataclass
class BuildConfig:
    out_dir: Path
    paths: dict[str, Path | None] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)
    train_counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TRAIN_COUNTS))
    val_counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_VAL_COUNTS))
    seed: int = 0
    aligned: AlignedMode = AlignedMode.LLM
    llm: LLMConfig | None = None
    progress: bool = True
    #: Share of each split's rows given a first turn from the other family (``verl_personadual.data.multiturn``).
    multi_turn_ratio: float = 0.0
    overlap_filter: bool = True
    #: Where the files are written when not ``out_dir`` (the staging folder of a replacement, ``utils.outputs``);
    #: the manifest names them under ``out_dir``, where they end up.
    write_dir: Path | None = None
    #: Stop at the first malformed AlignX row instead of skipping and counting it.
    strict: bool = False


@dataclass(frozen=True)
class Assigned:
    """A sampled item with its split, persona setting and persona."""

    item: Item
    split: str
    setting: PersonaSetting
    persona: Persona | None = None


def stratified_sample(items: Sequence[Item], k: int, rng: random.Random) -> list[Item]:
    """``k`` items, each task getting a share proportional to its size (largest remainder, ties by task name);
    result grouped by task in name order, random order within a task."""
    by_task: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_task[item.task].append(item)
    total = len(items)
    if k > total:
        raise ValueError(f"cannot draw {k} of {total} items")
    tasks = sorted(by_task)
    exact = {t: k * len(by_task[t]) / total for t in tasks} if total else {}
    quota = {t: int(exact[t]) for t in tasks}
    by_remainder = sorted(tasks, key=lambda t: (-(exact[t] - quota[t]), t))
    for t in by_remainder[: k - sum(quota.values())]:
        quota[t] += 1
    out: list[Item] = []
    for t in tasks:
        out.extend(rng.sample(by_task[t], quota[t]))
    return out


def load_sources(cfg: BuildConfig) -> tuple[dict[str, LoadedSource], list[Persona], LoadedSource, dict[str, Any]]:
    def spec(module: Any, name: str) -> Any:
        return module.spec(cfg.paths.get(name), cfg.revisions.get(name))

    needed = [s for s in SOURCES if cfg.train_counts.get(s, 0) + cfg.val_counts.get(s, 0) > 0]
    loaded: dict[str, LoadedSource] = {}
    provenance: dict[str, Any] = {}
    modules = {"ultramedical": ultramedical, "flan": flan, "alignx": alignx}
    for name in needed:
        source_spec = spec(modules[name], name)
        if name == "alignx":
            loaded[name] = alignx.load(source_spec, cfg.seed, cfg.progress, strict=cfg.strict)
        else:
            loaded[name] = modules[name].load(source_spec, cfg.progress)
        provenance[name] = source_spec.describe()
    pool_spec = spec(personahub, "personahub")
    pool, pool_report = personahub.load(pool_spec, cfg.progress)
    provenance["personahub"] = pool_spec.describe()
    return loaded, pool, pool_report, provenance


def apply_filters(cfg: BuildConfig, loaded: dict[str, LoadedSource]) -> dict[str, Any]:
    """Remove the items overlapping an evaluation benchmark (module docstring, step 1) in place; returns the
    manifest's ``filters`` section. Raises ``BuildError`` when a question list cannot be loaded."""
    report: dict[str, Any] = {}
    for name, rule in overlap.filter_rules().items():
        hub, target = overlap.hub_source(name), rule.target
        if not cfg.overlap_filter:
            report[name] = {"ran": False, "applies_to": target, "removed": 0, "reason": "--no-overlap-filter"}
            continue
        if target not in loaded:
            report[name] = {"ran": False, "applies_to": target, "removed": 0, "reason": f"no {target} items requested"}
            continue
        try:
            filt = overlap.load_filter(name, hub, cfg.paths.get(name), cfg.revisions.get(name))
        except SourceUnavailableError as err:
            raise BuildError(
                f"overlap filter {name} (removes {target} items that are {name} test questions, paper Table 5): "
                f"{err}. Pass --{name} FILE (the {hub.hub_id} {hub.config}/{hub.split} rows, field 'question'), "
                "or --no-overlap-filter to build without it"
            ) from err
        result = filt.split(loaded[target].items)
        loaded[target].items = result.kept
        report[name] = {
            "ran": True,
            "applies_to": target,
            "keys": list(filt.keys),
            "questions": len(filt.questions),
            **({"ids": len(filt.ids)} if "id" in filt.keys else {}),
            "removed": len(result.removed),
            "removed_by": result.removed_by,
            "removed_ids": [it.source_id for it in result.removed],
            "input": filt.origin,
        }
    return report


def per_source(loaded: dict[str, LoadedSource], filters: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``per_source``: rows read, items kept and drops by reason (loader skips and
    ``overlap:<filter>`` removals) of each source; read = kept + the sum of the drops."""
    out = {}
    for name, src in loaded.items():
        dropped = src.skipped.as_dict()
        for filt, rep in filters.items():
            if rep["applies_to"] == name and rep["removed"]:
                dropped[f"overlap:{filt}"] = rep["removed"]
        out[name] = {"read": src.rows_read, "kept": len(src.items), "dropped": dropped}
    return out


def compose(cfg: BuildConfig, loaded: dict[str, LoadedSource]) -> list[Assigned]:
    assigned: list[Assigned] = []
    for name in SOURCES:
        n_train, n_val = cfg.train_counts.get(name, 0), cfg.val_counts.get(name, 0)
        if n_train + n_val == 0:
            continue
        src = loaded[name]
        pool = sorted(src.items, key=lambda it: it.source_id)
        if not pool:
            raise SchemaError(
                f"source {name!r} yielded no usable item ({src.rows_read} rows read, skipped {src.skipped.as_dict()})"
            )
        if n_train + n_val > len(pool):
            raise BuildError(
                f"{name}: {n_train} train + {n_val} validation items requested but only {len(pool)} available "
                f"after filtering ({src.rows_read} rows read, skipped {src.skipped.as_dict()}); "
                "lower --train-counts / --val-counts"
            )
        rng = random.Random(f"{cfg.seed}:{name}")
        train = stratified_sample(pool, n_train, rng)
        taken = {it.source_id for it in train}
        val = stratified_sample([it for it in pool if it.source_id not in taken], n_val, rng)
        for split, items in (("train", train), ("validation", val)):
            for i, item in enumerate(items):
                if item.persona is not None:
                    setting = PersonaSetting.ALIGNED
                    persona = Persona(item.persona_id or "", item.persona)
                    assigned.append(Assigned(item, split, setting, persona))
                else:
                    setting = PersonaSetting.ALIGNED if i % 2 == 0 else PersonaSetting.UNALIGNED
                    assigned.append(Assigned(item, split, setting))
    return assigned


def attach_personas(
    cfg: BuildConfig, assigned: list[Assigned], pool: list[Persona]
) -> tuple[list[Assigned], dict[str, Any]]:
    need_unaligned = [i for i, a in enumerate(assigned) if a.persona is None and a.setting is PersonaSetting.UNALIGNED]
    need_aligned = [i for i, a in enumerate(assigned) if a.persona is None and a.setting is PersonaSetting.ALIGNED]
    out = list(assigned)
    if need_unaligned and not pool:
        raise SchemaError("the PersonaHub source yielded no usable persona, but unaligned personas are needed")
    for i, persona in zip(need_unaligned, unaligned_personas(pool, len(need_unaligned), cfg.seed)):
        out[i] = replace(out[i], persona=persona)
    llm_report: dict[str, Any] = {"mode": str(cfg.aligned), "items": len(need_aligned)}
    items = [assigned[i].item for i in need_aligned]
    if cfg.aligned is AlignedMode.OFFLINE_TEMPLATE:
        generated = aligned_personas_offline(items)
    else:
        if cfg.llm is None:
            raise BuildError(needs_endpoint("--aligned-personas llm", "pass --aligned-personas offline-template"))
        client = LLMClient(cfg.llm, progress=cfg.progress)
        try:
            generated = aligned_personas_llm(items, client) if items else []
        except LLMBatchError as err:
            details = "; ".join(
                f"{items[i].source} {items[i].source_id}: {msg}" for i, msg in sorted(err.failures.items())[:5]
            )
            raise BuildError(
                f"{len(err.failures)} of {len(items)} aligned-persona requests failed ({details}). "
                "The successful replies are cached; re-run to retry only the failed ones."
            ) from err
        llm_report.update(
            base_url=redact_url(cfg.llm.base_url),
            model=cfg.llm.model,
            requests_made=client.stats.requests,
            served_from_cache=client.stats.cache_hits,
            retries=client.stats.retries,
        )
    for i, persona in zip(need_aligned, generated):
        out[i] = replace(out[i], persona=persona)
    return out, llm_report


def build_rows(assigned: Sequence[Assigned], split: str, seed: int) -> list[dict[str, Any]]:
    """The rows of one split, shuffled with the seed and indexed 0..n-1."""
    chosen = [a for a in assigned if a.split == split]
    random.Random(f"{seed}:shuffle:{split}").shuffle(chosen)
    rows = []
    for index, a in enumerate(chosen):
        item, persona = a.item, a.persona
        assert persona is not None
        rows.append(
            {
                "data_source": str(item.source),
                "prompt": build_prompt(item.question, item.family, persona.text),
                "reward_model": {"style": "rule", "ground_truth": item.gold},
                "extra_info": {
                    "index": index,
                    "split": split,
                    "source_id": item.source_id,
                    "task": item.task,
                    "task_family": str(item.family),
                    "persona_setting": a.setting.value,
                    "persona_id": persona.persona_id,
                    "persona": persona.text,
                    "question": item.question,
                    "choices": list(item.choices),
                },
                "agent_name": AGENT_FOR_SPLIT[split],
            }
        )
    return rows


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _counts(assigned: Sequence[Assigned]) -> dict[str, dict[str, dict[str, int]]]:
    table: dict[str, dict[str, Counter[str]]] = {s: defaultdict(Counter) for s in SPLITS}
    for a in assigned:
        table[a.split][str(a.item.source)][a.setting.value] += 1
    return {s: {src: dict(sorted(c.items())) for src, c in sorted(t.items())} for s, t in table.items()}


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Run the pipeline; returns the manifest (also written to ``out_dir/manifest.json``)."""
    loaded, pool, pool_report, provenance = load_sources(cfg)
    filters = apply_filters(cfg, loaded)
    assigned = compose(cfg, loaded)
    assigned, llm_report = attach_personas(cfg, assigned, pool)
    outputs = {}
    for split in SPLITS:
        rows = build_rows(assigned, split, cfg.seed)
        path = (cfg.write_dir or cfg.out_dir) / f"{split}.parquet"
        if cfg.multi_turn_ratio > 0:
            from verl_personadual.data import multiturn

            rows = multiturn.add_first_turns(rows, cfg.multi_turn_ratio, cfg.seed, split)
            multiturn.write_rows(rows, path)
        else:
            write_parquet(rows, path)
        outputs[split] = {
            "path": str(cfg.out_dir / path.name),
            "rows": len(rows),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    manifest = {
        "seed": cfg.seed,
        "sources": provenance,
        "rows_read": {name: src.rows_read for name, src in loaded.items()} | {"personahub": pool_report.rows_read},
        "skipped": {name: src.skipped.as_dict() for name, src in loaded.items()}
        | {"personahub": pool_report.skipped.as_dict()},
        "available_after_filters": {name: len(src.items) for name, src in loaded.items()} | {"personahub": len(pool)},
        "per_source": per_source(loaded, filters),
        "filters": filters,
        "requested": {"train": cfg.train_counts, "validation": cfg.val_counts},
        "counts": _counts(assigned),
        "aligned_personas": llm_report,
        "agent_name": AGENT_FOR_SPLIT,
        "outputs": outputs,
    }
    if cfg.multi_turn_ratio > 0:
        manifest["multi_turn_ratio"] = cfg.multi_turn_ratio
    write_json((cfg.write_dir or cfg.out_dir) / "manifest.json", manifest)
    return manifest
