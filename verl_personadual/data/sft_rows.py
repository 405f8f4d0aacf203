"""Build the SFT data (PersonaDualData, SFT column of Table 5) as verl 0.9.1 multi-turn SFT parquet.

    python -m verl_personadual.apps.build_sft --out data/sft --exclude-rl data/rl          # hub data, expert LLM
    python -m verl_personadual.apps.build_sft --samples --out /tmp/pd_sft                   # shipped samples, offline

``--samples``: the UltraMedical, FLAN and AlignX items come from ``verl_personadual/samples/sft/`` (items disjoint
from the RL samples that ``build_rl --samples`` uses, so ``--exclude-rl`` of such a build removes nothing), the
persona pool and overlap filters from the RL samples, the counts from :data:`SAMPLE_TRAIN_COUNTS` /
:data:`SAMPLE_VAL_COUNTS`; with no endpoint configured, the expert replies are the recorded placeholders of
``verl_personadual.data.samples`` (replayed offline, labelled as such in the output and the manifest).

Pipeline (all randomness from ``--seed``):

1. Items, splits, persona settings and personas exactly as ``verl_personadual.data.rl_rows`` makes them (same loaders,
   overlap filters, stratified draws, aligned / unaligned alternation for objective items, AlignX users), after
   removing every item that an RL build listed by ``--exclude-rl`` uses, so SFT and RL items are disjoint.
2. Each item becomes its RL row (``build_rl.build_rows``): the SFT user turn *is* that row's prompt.
3. The expert (any OpenAI-compatible endpoint, through ``verl_personadual.utils.llm.LLMClient``: cache, concurrency,
   retries, resume) writes one trajectory per mode with ``prompts.build_expert_request``: objective items
   (UltraMedical, FLAN) get a general one (question only) and a personalized one (persona + question);
   personalized items (AlignX) a personalized one only. ``--only-mode general|personalized`` (the SFT data of
   the single-capability baselines G-SFT-RL / P-SFT-RL) asks for that mode's trajectory only: general = the
   objective items (AlignX items have no persona-free answer and are left out), personalized = every item.
4. Replies are normalised, graded with the project's reward and selected by gain
(``verl_personadual.data.sft_selection``
   documents normalisation, tie rules and drops). A reasoning expert's thinking (its reasoning-parser field, or a
   think block at the head of its content) is kept as the head of the trajectory's reasoning
   (``--expert-reasoning keep``, the default: the paper distils DeepSeek-R1 trajectories) or discarded (``drop``).
   Optionally, rows longer than ``--max-length`` tokens under
   ``--tokenizer``'s chat template are dropped (verl's SFT trainer is configured to fail on them).
5. ``train.parquet`` / ``validation.parquet`` (rows in the RL shuffle order, re-indexed) and ``manifest.json`` are
   written atomically.

Row schema: ``messages`` = [user: the RL prompt, assistant: ``<mode prefix> + reasoning + "\\n" +
format_answer(answer)``, reasoning = the expert's thinking (kept) + its written reasoning], ``data_source``,
``extra_info`` (:data:`SFT_EXTRA_INFO_TYPE`: the RL row's extra_info
plus ``ground_truth``, the kept ``mode``, the selection ``decision`` and each mode's expert correctness).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import (
    EXPERT_PROMPT_VERSION,
    OBJECTIVE_SOURCES,
    PERSONALIZED_SOURCES,
    DataSource,
    build_expert_request,
)
from verl_personadual.data import rl_rows as build_rl
from verl_personadual.data import samples, schema
from verl_personadual.data.common import LoadedSource, SchemaError
from verl_personadual.data.rl_rows import BuildConfig, BuildError
from verl_personadual.data.sft_selection import (
    Selection,
    Trajectory,
    assistant_text,
    score_trajectory,
    select,
    select_single,
)
from verl_personadual.utils.atomic import atomic_write, write_json
from verl_personadual.utils.llm import (
    LLMBatchError,
    LLMClient,
    LLMConfig,
    LLMOfflineMissError,
    Reply,
    needs_endpoint,
    redact_url,
)

#: Table 5, SFT column.
DEFAULT_TRAIN_COUNTS = {"ultramedical": 2000, "flan": 4000, "alignx": 2000}
#: Held-out validation items per source (5 % of training).
DEFAULT_VAL_COUNTS = {"ultramedical": 100, "flan": 200, "alignx": 100}
#: Counts used with ``--samples`` (every item of the SFT sample files).
SAMPLE_TRAIN_COUNTS = {"ultramedical": 6, "flan": 8, "alignx": 2}
SAMPLE_VAL_COUNTS = {"ultramedical": 2, "flan": 2, "alignx": 2}
#: Inputs whose ``--samples`` file is an SFT sample file (the others are the RL samples).
SFT_SAMPLE_INPUTS = ("ultramedical", "flan", "alignx")
#: Expert sampling defaults (DeepSeek-R1's recommended temperature); part of the cache key.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_MAX_TOKENS = 4096

SFT_EXTRA_INFO_TYPE = pa.struct(
    list(schema.EXTRA_INFO_TYPE)
    + [
        pa.field("ground_truth", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("decision", pa.string()),
        pa.field("general_correct", pa.bool_()),  # null when no general trajectory was asked for (AlignX)
        pa.field("personalized_correct", pa.bool_()),  # null with --only-mode general
    ]
)
SFT_ROW_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("data_source", pa.string()),
        ("extra_info", SFT_EXTRA_INFO_TYPE),
    ]
)


@dataclass
class SFTConfig:
    """Everything ``build`` needs. ``base`` drives item selection and personas exactly as in ``build_rl``."""

    base: BuildConfig
    expert: LLMConfig | None
    exclude_rl: list[Path] = field(default_factory=list)
    sampling: dict[str, Any] = field(
        default_factory=lambda: {"temperature": DEFAULT_TEMPERATURE, "max_tokens": DEFAULT_MAX_TOKENS}
    )
    require_correct: bool = False
    tie: Mode = Mode.GENERAL
    tokenizer: Path | None = None
    max_length: int | None = None
    keep_expert_reasoning: bool = True
    only_mode: Mode | None = None

    def __post_init__(self) -> None:
        if self.only_mode is Mode.GENERAL:
            asked = {s: self.base.train_counts.get(s, 0) + self.base.val_counts.get(s, 0) for s in build_rl.SOURCES}
            personalized = {s: n for s, n in asked.items() if n and DataSource(s) in PERSONALIZED_SOURCES}
            if personalized:
                raise BuildError(
                    f"general-only SFT data has no personalized items, but {personalized} were requested; "
                    "set their counts to 0 (build_sft --only-mode general does)"
                )


#: Values of ``--expert-reasoning``.
EXPERT_REASONING = {"keep": True, "drop": False}


@dataclass(frozen=True)
class Judged:
    """One RL row with its expert trajectories (None: not asked for) and the selection outcome."""

    row: dict[str, Any]
    general: Trajectory | None
    personalized: Trajectory | None
    selection: Selection


def sample_paths() -> dict[str, Path]:
    """The input files of ``--samples``: SFT sample items (``samples/sft/``), RL samples for the other inputs."""
    sft = samples.samples_dir() / "sft"
    return samples.rl_sample_paths() | {name: sft / f"{name}.jsonl" for name in SFT_SAMPLE_INPUTS}


def excluded_ids(dirs: Sequence[Path]) -> dict[str, set[str]]:
    """``source_id``s per ``data_source`` used by the RL builds in ``dirs`` (their train and validation parquet)."""
    out: dict[str, set[str]] = defaultdict(set)
    for d in dirs:
        for split in build_rl.SPLITS:
            path = Path(d) / f"{split}.parquet"
            if not path.is_file():
                raise BuildError(f"--exclude-rl {d}: {path} does not exist (expected a build_rl output directory)")
            try:
                table = pq.read_table(path, columns=["data_source", "extra_info"]).to_pylist()
            except pa.ArrowException as err:  # not parquet, or without those columns
                raise SchemaError(f"--exclude-rl {d}: {path} is not a build_rl parquet file ({err})") from None
            for i, row in enumerate(table):
                info = row.get("extra_info") or {}
                if not isinstance(info.get("source_id"), str):
                    raise SchemaError(f"{path}, row {i}, field 'extra_info.source_id': missing or not a str")
                out[row["data_source"]].add(info["source_id"])
    return out


def expert_requests(
    rows: Sequence[dict[str, Any]], only_mode: Mode | None = None
) -> list[tuple[int, Mode, list[dict[str, str]]]]:
    """``(row index, mode, messages)`` of every expert request: general + personalized for objective rows,
    personalized only for personalized rows; with ``only_mode``, that mode's request only (general: objective
    rows only)."""
    out = []
    for i, row in enumerate(rows):
        info = row["extra_info"]
        objective = DataSource(row["data_source"]) in OBJECTIVE_SOURCES
        if objective and only_mode in (None, Mode.GENERAL):
            out.append((i, Mode.GENERAL, build_expert_request(info["question"], info["task_family"], None)))
        if only_mode in (None, Mode.PERSONALIZED):
            out.append(
                (i, Mode.PERSONALIZED, build_expert_request(info["question"], info["task_family"], info["persona"]))
            )
    return out


def _ask_expert(cfg: SFTConfig, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[Mode, Reply]], dict[str, Any]]:
    """Expert replies per row and mode, plus the request report for the manifest."""
    if cfg.expert is None:
        raise BuildError(needs_endpoint("writing expert trajectories"))
    requests = expert_requests(rows, cfg.only_mode)
    client = LLMClient(cfg.expert, progress=cfg.base.progress)
    try:
        replies = client.complete_replies([m for _, _, m in requests], desc="expert trajectories", **cfg.sampling)
    except LLMOfflineMissError as err:
        raise BuildError(f"{err}; {samples.MISS_HINT}") from err
    except LLMBatchError as err:
        details = "; ".join(
            f"{rows[requests[k][0]]['data_source']} {rows[requests[k][0]]['extra_info']['source_id']} "
            f"({requests[k][1].name.lower()}): {msg}"
            for k, msg in sorted(err.failures.items())[:5]
        )
        raise BuildError(
            f"{len(err.failures)} of {len(requests)} expert requests failed ({details}). "
            "The successful replies are cached; re-run to retry only the failed ones."
        ) from err
    by_row: list[dict[Mode, Reply]] = [{} for _ in rows]
    for (i, mode, _), reply in zip(requests, replies):
        by_row[i][mode] = reply
    report = {
        "base_url": f"offline replay of {cfg.expert.cache_dir}"
        if cfg.expert.offline
        else redact_url(cfg.expert.base_url),
        "model": cfg.expert.model,
        "prompt_version": EXPERT_PROMPT_VERSION,
        "sampling": cfg.sampling,
        "reasoning": "keep" if cfg.keep_expert_reasoning else "drop",
        "replies_with_reasoning_field": sum(r.reasoning is not None for r in replies),
        "requests": len(requests),
        "requests_made": client.stats.requests,
        "served_from_cache": client.stats.cache_hits,
        "retries": client.stats.retries,
    }
    return by_row, report


def judge(rows: Sequence[dict[str, Any]], replies: Sequence[dict[Mode, Reply]], cfg: SFTConfig) -> list[Judged]:
    """Grade every trajectory and select the kept mode of every row."""
    out = []
    for row, reply in tqdm(
        list(zip(rows, replies)), desc="grading trajectories", unit="item", disable=not cfg.base.progress
    ):
        gt, info = row["reward_model"]["ground_truth"], row["extra_info"]
        graded = {
            m: score_trajectory(r.content, row["data_source"], gt, info, r.reasoning, cfg.keep_expert_reasoning)
            for m, r in reply.items()
        }
        general, personalized = graded.get(Mode.GENERAL), graded.get(Mode.PERSONALIZED)
        if cfg.only_mode is not None:
            selection = select_single(graded[cfg.only_mode], cfg.only_mode, require_correct=cfg.require_correct)
        else:
            assert personalized is not None
            selection = select(general, personalized, require_correct=cfg.require_correct, tie=cfg.tie)
        out.append(Judged(row, general, personalized, selection))
    return out


def sft_row(j: Judged, index: int) -> dict[str, Any]:
    """The SFT row of a kept item (``j.selection.mode`` is not None)."""
    mode = j.selection.mode
    assert mode is not None
    trajectory = j.personalized if mode is Mode.PERSONALIZED else j.general
    assert trajectory is not None
    info = dict(j.row["extra_info"])
    info.update(
        index=index,
        ground_truth=j.row["reward_model"]["ground_truth"],
        mode=mode.name.lower(),
        decision=j.selection.decision.value,
        general_correct=None if j.general is None else j.general.correct,
        personalized_correct=None if j.personalized is None else j.personalized.correct,
    )
    messages = [*j.row["prompt"], {"role": "assistant", "content": assistant_text(mode, trajectory)}]
    return {"messages": messages, "data_source": j.row["data_source"], "extra_info": info}


class _LengthCheck:
    """Token length of a conversation under a tokenizer's chat template."""

    def __init__(self, tokenizer_dir: Path):
        """BuildError naming ``--tokenizer`` when ``tokenizer_dir`` holds no tokenizer."""
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BuildError(f"--tokenizer {tokenizer_dir}: cannot load a tokenizer ({first})") from None

    def __call__(self, messages: list[dict[str, str]]) -> int:
        text = self.tok.apply_chat_template(messages, tokenize=False)
        return len(self.tok(text, add_special_tokens=False)["input_ids"])


def _summary(judged: Sequence[Judged], too_long: set[int]) -> dict[str, Any]:
    """Per source -> persona setting: kept general / personalized / dropped, decisions, expert accuracy."""
    table: dict[str, dict[str, dict[str, Counter[str]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(Counter))
    )
    for k, j in enumerate(judged):
        cell = table[j.row["data_source"]][j.row["extra_info"]["persona_setting"]]
        kept = j.selection.mode is not None and k not in too_long
        cell["kept"][j.selection.mode.name.lower() if kept else "dropped"] += 1
        cell["decisions"][j.selection.decision.value] += 1
        if k in too_long:
            cell["dropped_reasons"]["too_long"] += 1
        elif j.selection.mode is None:
            cell["dropped_reasons"][j.selection.decision.value] += 1
        for name, t in (("general", j.general), ("personalized", j.personalized)):
            if t is None:
                continue
            cell["expert"][f"{name}_correct"] += int(t.correct)
            cell["expert"][f"{name}_total"] += 1
            if t.problem is not None:
                cell["expert"][f"{name}_unusable_{t.problem.value}"] += 1
    return {
        src: {
            setting: {
                "general": c["kept"]["general"],
                "personalized": c["kept"]["personalized"],
                "dropped": c["kept"]["dropped"],
                "decisions": dict(sorted(c["decisions"].items())),
                "dropped_reasons": dict(sorted(c["dropped_reasons"].items())),
                "expert": dict(sorted(c["expert"].items())),
            }
            for setting, c in sorted(settings.items())
        }
        for src, settings in sorted(table.items())
    }


@dataclass
class Prepared:
    """The RL rows of the SFT items per split (before any expert request) and how they were made."""

    loaded: dict[str, LoadedSource]
    pool_report: LoadedSource
    provenance: dict[str, Any]
    filters: dict[str, Any]
    excluded: dict[str, int]
    persona_report: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]]

    def flat_rows(self) -> list[dict[str, Any]]:
        """Every row, splits in ``build_rl.SPLITS`` order."""
        return [r for split in build_rl.SPLITS for r in self.rows[split]]


def prepare(cfg: SFTConfig) -> Prepared:
    """Steps 1-2 of the module docstring: items, splits, personas and RL rows."""
    base = cfg.base
    loaded, pool, pool_report, provenance = build_rl.load_sources(base)
    filters = build_rl.apply_filters(base, loaded)
    exclude = excluded_ids(cfg.exclude_rl)
    excluded = {}
    for name, src in loaded.items():
        before = len(src.items)
        src.items = [it for it in src.items if it.source_id not in exclude.get(name, set())]
        excluded[name] = before - len(src.items)
    assigned = build_rl.compose(base, loaded)
    assigned, persona_report = build_rl.attach_personas(base, assigned, pool)
    rows = {split: build_rl.build_rows(assigned, split, base.seed) for split in build_rl.SPLITS}
    return Prepared(loaded, pool_report, provenance, filters, excluded, persona_report, rows)


def build(cfg: SFTConfig) -> dict[str, Any]:
    """Run the pipeline; returns the manifest (also written to ``out_dir/manifest.json``)."""
    base = cfg.base
    length = _LengthCheck(cfg.tokenizer) if cfg.tokenizer is not None and cfg.max_length is not None else None
    prep = prepare(cfg)
    loaded, pool_report, rows = prep.loaded, prep.pool_report, prep.rows
    flat = prep.flat_rows()
    replies, expert_report = _ask_expert(cfg, flat)
    judged_flat = judge(flat, replies, cfg)

    outputs, selection, kept = {}, {}, {}
    start = 0
    for split in build_rl.SPLITS:
        judged = judged_flat[start : start + len(rows[split])]
        start += len(rows[split])
        out_rows, too_long, lengths = [], set(), []
        for k, j in enumerate(judged):
            if j.selection.mode is None:
                continue
            row = sft_row(j, len(out_rows))
            if length is not None and (tokens := length(row["messages"])) > cfg.max_length:
                too_long.add(k)
                lengths.append(tokens)
                continue
            out_rows.append(row)
        if too_long and not out_rows:  # before any file is written
            raise BuildError(
                f"--max-length {cfg.max_length}: every selected {split} row is longer ({len(too_long)} rows of "
                f"{min(lengths)} to {max(lengths)} tokens under --tokenizer {cfg.tokenizer}); raise --max-length"
            )
        kept[split] = (judged, out_rows, too_long)
    for split, (judged, out_rows, too_long) in kept.items():
        path = (base.write_dir or base.out_dir) / f"{split}.parquet"
        table = pa.Table.from_pylist(out_rows, schema=SFT_ROW_SCHEMA)
        atomic_write(path, lambda tmp, t=table: pq.write_table(t, tmp))
        outputs[split] = {
            "path": str(base.out_dir / path.name),
            "rows": len(out_rows),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        selection[split] = _summary(judged, too_long)

    manifest = {
        "seed": base.seed,
        "sources": prep.provenance,
        "rows_read": {name: src.rows_read for name, src in loaded.items()} | {"personahub": pool_report.rows_read},
        "skipped": {name: src.skipped.as_dict() for name, src in loaded.items()}
        | {"personahub": pool_report.skipped.as_dict()},
        "per_source": build_rl.per_source(prep.loaded, prep.filters),
        "filters": prep.filters,
        "excluded_rl": {"dirs": [str(d) for d in cfg.exclude_rl], "removed": prep.excluded},
        "requested": {"train": base.train_counts, "validation": base.val_counts},
        "aligned_personas": prep.persona_report,
        "expert": expert_report,
        "selection_rules": {
            "module": "verl_personadual.data.sft_selection",
            "require_correct": cfg.require_correct,
            "tie": cfg.tie.name.lower(),
            "only_mode": None if cfg.only_mode is None else cfg.only_mode.name.lower(),
            "assistant_turn": '<mode prefix> + reasoning + "\\n" + {"answer": <extracted answer>}',
        },
        "length_filter": {
            "tokenizer": None if cfg.tokenizer is None else str(cfg.tokenizer),
            "max_length": cfg.max_length,
        },
        "selection": selection,
        "outputs": outputs,
    }
    write_json((base.write_dir or base.out_dir) / "manifest.json", manifest)
    return manifest
