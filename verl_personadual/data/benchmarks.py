"""The registry of evaluation benchmarks, the paper's seven registered in it, their loaders (by hub id or from
local files in the hub schema), and seeded sampling.

A benchmark is one :class:`Benchmark` record added by one :func:`register_benchmark` call: spec, row parser or
loader, default size, reward family (a registered one, ``verl_personadual.core.rewards.families``), Table 1
section and column, judge and overlap rules, shipped sample. ``eval run`` (choices, defaults, loading, persona
settings, judge), the reports (Table 1's columns and names, the other tables' order), ``--samples``, the recorded
sample replies and ``build_rl``'s overlap filters read the registry. The built-in benchmarks are registered at the
end of this module, in Table 7's order; a worked example of another is in ``docs/extending.md``.

Every loader turns raw rows (schemas in ``shared/datasets.md``) into ``verl_personadual.data.common.Item`` s whose
``gold`` is in the reward encoding of their family (``verl_personadual.core.rewards.scorers``):

=================  =====================================  ================  ==========================
benchmark          hub id [config/split]                  family            question / gold
=================  =====================================  ================  ==========================
mmlu_pro           TIGER-Lab/MMLU-Pro [default/test]      multiple_choice   question + lettered options
                                                                            ("N/A" dropped) / ``answer``
supergpqa          m-a-p/SuperGPQA [default/train]        multiple_choice   same / ``answer_letter``
triviaqa           mandarjoshi/trivia_qa                  open_qa           ``question`` only, no evidence
                   [rc.nocontext/validation]                                / JSON list of ``answer.aliases``
pubmedqa           qiaojin/PubMedQA [pqa_labeled/train]   yes_no_maybe      "Abstract:" + contexts +
                                                                            "Question:" / ``final_decision``
math500            HuggingFaceH4/MATH-500 [default/test]  math              ``problem`` / ``answer``
personafeedback    PersonalAILab/PersonaFeedback (files)  preference        post + responses A/B / letter
fspo_roleplay      sher222/persona-iterative-responses    preference        ``x`` + responses A/B / letter
                   [default/test]
=================  =====================================  ================  ==========================

Preference items follow the AlignX training convention (``verl_personadual.data.alignx``): the question is
``prompts.build_preference_question(post, A, B)``; whether the preferred response is A is drawn from
``random.Random(f"{seed}:{source_id}")`` (< 0.5 -> A), so it is reproducible and independent of row order; the
gold is the letter of the preferred response; ``choices`` = (A, B). They carry their own persona (setting
``aligned``).

PersonaFeedback is raw JSONL files in its hub repo, not a dataset config: rows in ``data/general/<tier>.jsonl`` and
``data/spedific/<tier>.jsonl`` (sic) with tiers easy/medium/hard (fields ``user_id``, ``question``, ``chosen``,
``reject``), personas in ``persona/all_personas.jsonl`` (dict fields ``Name``, ``Demographics``, ``Personality``,
``Preference``, ``Bias``). A persona's id is its ``user_id`` field when it has one, else its 1-based line number
(the card does not say which; both are accepted). A local copy is a directory with the same layout. The persona
text is :func:`render_feedback_persona`. FSPO's persona is ``score_persona.persona_description``.

Bad input: a missing or mistyped field raises ``SchemaError`` naming file, row and field; items that cannot be
scored (TriviaQA rows with no aliases, i.e. the hidden test split) are skipped and counted.

Sampling (:func:`sample_items`): ``k`` items drawn with ``random.Random(f"{seed}:{benchmark}")`` from the pool in
file order, returned in file order (all of them when the pool is smaller). Defaults (:data:`DEFAULT_SIZES`): the
paper's Table 7 sizes, MMLU-Pro, SuperGPQA, TriviaQA, PubMedQA and PersonaFeedback 1,000 each, MATH-500 500 (all
of it), FSPO-roleplay 1,500 (PubMedQA's labelled set has exactly 1,000 items, so that is all of it too).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from verl_personadual.core.prompts import (
    LETTERS,
    OBJECTIVE_SOURCES,
    PERSONALIZED_SOURCES,
    DataSource,
    TaskFamily,
    format_choices,
)
from verl_personadual.core.rewards.families import register_source
from verl_personadual.data.common import (
    Item,
    LoadedSource,
    Record,
    SchemaError,
    SourceSpec,
    iter_records,
    preference_item,
    require,
    stable_id,
)
from verl_personadual.data.preflight import PreflightError
from verl_personadual.data.ultramedical import pubmed_id
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "Benchmark",
    "BenchmarkSpec",
    "OverlapRule",
    "Section",
    "register_benchmark",
    "get_benchmark",
    "benchmarks",
    "benchmark_names",
    "is_benchmark",
    "is_personalized",
    "table1_columns",
    "DEFAULT_SIZES",
    "load_benchmark",
    "sample_items",
    "render_feedback_persona",
    "PERSONAFEEDBACK_FILES",
    "PERSONAFEEDBACK_PERSONAS",
    "parse_sizes",
]

logger = logging.getLogger(__name__)

PERSONAFEEDBACK_FILES: tuple[str, ...] = tuple(
    f"data/{kind}/{tier}.jsonl" for kind in ("general", "spedific") for tier in ("easy", "medium", "hard")
)
PERSONAFEEDBACK_PERSONAS = "persona/all_personas.jsonl"
_PERSONA_FIELDS = ("Name", "Demographics", "Personality", "Preference", "Bias")


class Section(StrEnum):
    """A benchmark's kind, hence its Table 1 section: objective answers (evaluated without a persona and under
    each persona setting) or personalized ones (each item carries its own user's persona, setting ``aligned``)."""

    OBJECTIVE = "objective"
    PERSONALIZED = "personalized"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub (PersonaFeedback: raw files, ``split`` unused)."""

    hub_id: str
    config: str | None
    split: str


@dataclass(frozen=True)
class OverlapRule:
    """Training items of data source ``target`` whose question is one of this benchmark's (its field
    ``question``) are removed from the RL and SFT data (``verl_personadual.data.overlap``); with ``id_field``, also
    those whose id (``item_id(source_id)``, None when the item has none) equals that field of a benchmark row."""

    target: str
    id_field: str | None = None
    item_id: Callable[[str], str | None] | None = None


#: ``(local path or None for the hub, seed, hub revision) -> (items, provenance)``: a benchmark's own loader.
Loader = Callable[[Path | None, int, str | None], tuple[LoadedSource, dict[str, str]]]


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark: everything the harness needs to know about it, in one record.

    Attributes:
        name: its ``data_source`` / ``benchmark`` value, the ``--benchmarks`` choice and the sampling-seed salt.
        family: the registered reward family (``core.rewards.families``) of its items and, for rows without one,
            of its data source.
        section: objective or personalized (:class:`Section`); personalized items carry their own persona.
        spec: where it lives on the hub.
        default_size: items sampled unless ``--sizes`` / ``--limit`` say otherwise.
        table1_name: its column header in Table 1's Markdown.
        parse: ``(raw row, seed) -> Item`` (None: skip the row, counted as ``no_gold``) for a benchmark whose rows
            are one file or hub split; read by :func:`load_benchmark`, which drops repeated item ids.
        load: a loader of its own (:data:`Loader`) instead of ``parse`` (PersonaFeedback's raw file tree).
        table1_column: its position among its section's Table 1 columns (the paper's order); None: after those.
        judged: ``eval run --judge`` grades it with the extract-then-verify LLM judge (``eval.judge``).
        overlap: its questions are removed from a training source (:class:`OverlapRule`).
        sample_file: its shipped sample under ``verl_personadual/samples/eval`` (``--samples``).
        sample_persona: the recorded aligned persona of its sample items (``data.samples``; objective only).
    """

    name: str
    family: str
    section: Section
    spec: BenchmarkSpec
    default_size: int
    table1_name: str
    parse: Callable[[Record, int], Item | None] | None = None
    load: Loader | None = None
    table1_column: int | None = None
    judged: bool = False
    overlap: OverlapRule | None = None
    sample_file: str | None = None
    sample_persona: str | None = None

    @property
    def personalized(self) -> bool:
        return self.section is Section.PERSONALIZED


_REGISTRY: dict[str, Benchmark] = {}
#: Items per benchmark unless overridden, filled by :func:`register_benchmark` (the paper's Table 7 for the built-in
#: ones: see the module docstring).
DEFAULT_SIZES: dict[str, int] = {}


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Add ``bench`` to the registry (and its data source's default reward family to ``core.rewards.families``);
    returns it. ValueError when its reward family is not registered, when it gives both or neither of ``parse`` and
    ``load``, or when its name is registered with another record."""
    name = str(bench.name)
    if not isinstance(bench.name, str) or not name or name in OBJECTIVE_SOURCES | PERSONALIZED_SOURCES:
        raise ValueError(f"benchmark name {bench.name!r}: expected a non-empty str that names no training source")
    if (bench.parse is None) == (bench.load is None):
        raise ValueError(f"benchmark {name!r}: give exactly one of parse and load")
    if bench.default_size < 1:
        raise ValueError(f"benchmark {name!r}: default_size must be >= 1, got {bench.default_size}")
    known = _REGISTRY.get(name)
    if known is not None and known != bench:
        raise ValueError(f"benchmark {name!r} is already registered with another record")
    register_source(name, bench.family)  # checks that the family is registered
    _REGISTRY[name] = bench
    DEFAULT_SIZES[name] = bench.default_size
    return bench


def get_benchmark(name: Any) -> Benchmark:
    """The registered benchmark called ``name``; ValueError naming the registered ones."""
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise ValueError(f"{name!r} is not a registered benchmark ({benchmark_names()})") from None


def benchmarks(section: Section | None = None) -> list[Benchmark]:
    """The registered benchmarks in registration order (the built-in ones in Table 7's order), optionally those of
    one section only."""
    return [b for b in _REGISTRY.values() if section is None or b.section is section]


def benchmark_names(section: Section | None = None) -> list[str]:
    """Names of :func:`benchmarks`."""
    return [b.name for b in benchmarks(section)]


def is_benchmark(name: Any) -> bool:
    return str(name) in _REGISTRY


def is_personalized(source: Any) -> bool:
    """True for a personalized benchmark and a personalized training source (``prompts.PERSONALIZED_SOURCES``)."""
    bench = _REGISTRY.get(str(source))
    return bench.personalized if bench is not None else source in PERSONALIZED_SOURCES


def table1_columns(section: Section) -> list[Benchmark]:
    """A section's benchmarks in Table 1's column order: by ``table1_column``, then the others in registration
    order."""
    order = benchmarks(section)
    return sorted(order, key=lambda b: (b.table1_column is None, b.table1_column or 0, order.index(b)))


def _text(rec: Record, name: str) -> str:
    value = require(rec, name, str).strip()
    if not value:
        raise SchemaError(f"{rec.where(name)}: empty")
    return value


def _nested(rec: Record, name: str, key: str, kind: type) -> Any:
    outer = require(rec, name, dict)
    if key not in outer:
        raise SchemaError(f"{rec.where(f'{name}.{key}')}: missing field")
    value = outer[key]
    if not isinstance(value, kind):
        raise SchemaError(f"{rec.where(f'{name}.{key}')}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _options(rec: Record, name: str = "options") -> list[str]:
    options = require(rec, name, list)
    if not options or not all(isinstance(o, str) for o in options) or len(options) > len(LETTERS):
        raise SchemaError(f"{rec.where(name)}: expected a non-empty list of at most {len(LETTERS)} str")
    return options


def _letter(rec: Record, name: str, options: list[str]) -> str:
    letter = require(rec, name, str).strip().upper()
    valid = [LETTERS[i] for i, o in enumerate(options) if o.strip() != "N/A"]
    if letter not in valid:
        raise SchemaError(f"{rec.where(name)}: {letter!r} is not the letter of a listed option ({''.join(valid)})")
    return letter


def _mc_item(rec: Record, source: DataSource, id_field: str, gold_field: str, task_field: str) -> Item:
    raw_id = require(rec, id_field, (str, int))
    question = _text(rec, "question")
    options = _options(rec)
    gold = _letter(rec, gold_field, options)
    return Item(
        source=source,
        source_id=f"{source.value}:{raw_id}",
        task=str(require(rec, task_field, str)),
        family=TaskFamily.MULTIPLE_CHOICE,
        question=f"{question}\n\n{format_choices(options)}",
        gold=gold,
        choices=tuple(options),
    )


def _mmlu_pro(rec: Record, seed: int) -> Item | None:
    return _mc_item(rec, DataSource.MMLU_PRO, "question_id", "answer", "category")


def _supergpqa(rec: Record, seed: int) -> Item | None:
    return _mc_item(rec, DataSource.SUPERGPQA, "uuid", "answer_letter", "discipline")


def _triviaqa(rec: Record, seed: int) -> Item | None:
    aliases = _nested(rec, "answer", "aliases", list)
    if not all(isinstance(a, str) for a in aliases):
        raise SchemaError(f"{rec.where('answer.aliases')}: expected a list of str")
    aliases = [a for a in aliases if a.strip() and a.strip() != "<unk>"]
    if not aliases:
        return None
    return Item(
        source=DataSource.TRIVIAQA,
        source_id=f"triviaqa:{_text(rec, 'question_id')}",
        task="triviaqa",
        family=TaskFamily.OPEN_QA,
        question=_text(rec, "question"),
        gold=json.dumps(aliases, ensure_ascii=False),
    )


def _pubmedqa(rec: Record, seed: int) -> Item | None:
    contexts = _nested(rec, "context", "contexts", list)
    if not all(isinstance(c, str) for c in contexts):
        raise SchemaError(f"{rec.where('context.contexts')}: expected a list of str")
    decision = require(rec, "final_decision", str).strip().lower()
    if decision not in ("yes", "no", "maybe"):
        raise SchemaError(f"{rec.where('final_decision')}: {decision!r} is not yes, no or maybe")
    abstract = "\n".join(c.strip() for c in contexts if c.strip())
    question = _text(rec, "question")
    return Item(
        source=DataSource.PUBMEDQA,
        source_id=f"pubmedqa:{require(rec, 'pubid', int)}",
        task="pubmedqa",
        family=TaskFamily.YES_NO_MAYBE,
        question=f"Abstract:\n{abstract}\n\nQuestion: {question}" if abstract else question,
        gold=decision,
    )


def _math500(rec: Record, seed: int) -> Item | None:
    return Item(
        source=DataSource.MATH500,
        source_id=f"math500:{_text(rec, 'unique_id')}",
        task=str(require(rec, "subject", str)),
        family=TaskFamily.MATH,
        question=_text(rec, "problem"),
        gold=_text(rec, "answer"),
    )


def _fspo(rec: Record, seed: int) -> Item | None:
    post, preferred, other = _text(rec, "x"), _text(rec, "yw"), _text(rec, "yl")
    persona = _nested(rec, "score_persona", "persona_description", str).strip()
    if not persona:
        raise SchemaError(f"{rec.where('score_persona.persona_description')}: empty")
    level = require(rec, "level", (str, int))
    sid = stable_id("fspo_roleplay", str(level), post, preferred, other)
    return preference_item(DataSource.FSPO_ROLEPLAY, sid, "fspo_roleplay", post, preferred, other, persona, seed)


def _render_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_render_value(v)}" for k, v in value.items() if _render_value(v))
    if isinstance(value, (list, tuple)):
        return ", ".join(_render_value(v) for v in value if _render_value(v))
    return " ".join(str(value).split()) if value is not None else ""


def render_feedback_persona(persona: Mapping[str, Any]) -> str:
    """A PersonaFeedback persona as one text: ``"<Name>. Demographics: k: v; ... Personality: ... Preference: ...
    Bias: ..."`` (fields in that order, nested dicts flattened as ``key: value`` joined by ``"; "``, lists by
    ``", "``; empty fields left out). Raises ValueError when nothing is left."""
    parts = []
    name = _render_value(persona.get("Name"))
    if name:
        parts.append(name)
    for field_name in _PERSONA_FIELDS[1:]:
        text = _render_value(persona.get(field_name))
        if text:
            parts.append(f"{field_name}: {text}")
    if not parts:
        raise ValueError(f"persona has none of the fields {list(_PERSONA_FIELDS)}")
    return ". ".join(p.rstrip(" .") for p in parts)


def _feedback_personas(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for rec in iter_records(SourceSpec("", None, "", path)):
        try:
            text = render_feedback_persona(rec.data)
        except ValueError as err:
            raise SchemaError(f"{rec.where()}: {err}") from None
        key = rec.data.get("user_id")
        out[str(key if key is not None else rec.row)] = text
    return out


def _personafeedback(root: Path, seed: int, report: LoadedSource) -> None:
    """Items of a PersonaFeedback directory (hub layout, module docstring) appended to ``report``."""
    persona_path = root / PERSONAFEEDBACK_PERSONAS
    personas = _feedback_personas(persona_path)
    present = [rel for rel in PERSONAFEEDBACK_FILES if (root / rel).is_file()]
    if not present:
        raise SchemaError(f"{root}: none of {list(PERSONAFEEDBACK_FILES)} exists")
    for rel in present:
        task = "/".join(Path(rel).with_suffix("").parts[1:]).replace("spedific", "specific")
        for rec in iter_records(SourceSpec("", None, "", root / rel)):
            report.rows_read += 1
            user = str(require(rec, "user_id", (str, int)))
            if user not in personas:
                raise SchemaError(f"{rec.where('user_id')}: {user!r} is not a persona in {persona_path}")
            post, chosen, reject = _text(rec, "question"), _text(rec, "chosen"), _text(rec, "reject")
            sid = stable_id("personafeedback", task, user, post, chosen, reject)
            report.items.append(
                preference_item(DataSource.PERSONAFEEDBACK, sid, task, post, chosen, reject, personas[user], seed)
            )


def _download_personafeedback(revision: str | None) -> Path:
    """The local snapshot root of the PersonaFeedback files; a data file missing on the hub is skipped (the
    loader then reads the ones present), the persona file is required."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    spec = get_benchmark(DataSource.PERSONAFEEDBACK).spec
    for rel in PERSONAFEEDBACK_FILES:
        try:
            hf_hub_download(spec.hub_id, rel, repo_type="dataset", revision=revision)
        except EntryNotFoundError:
            logger.warning("%s: no %s on the hub; continuing without it", spec.hub_id, rel)
    personas = hf_hub_download(spec.hub_id, PERSONAFEEDBACK_PERSONAS, repo_type="dataset", revision=revision)
    return Path(personas).parent.parent


def _load_personafeedback(path: Path | None, seed: int, revision: str | None) -> tuple[LoadedSource, dict[str, str]]:
    report = LoadedSource(DataSource.PERSONAFEEDBACK.value, [])
    root = Path(path) if path is not None else _download_personafeedback(revision)
    if not root.is_dir():
        raise SchemaError(f"{root}: PersonaFeedback needs a directory with {PERSONAFEEDBACK_PERSONAS} and data/")
    _personafeedback(root, seed, report)
    hub_id = get_benchmark(DataSource.PERSONAFEEDBACK).spec.hub_id
    return report, {"dir": str(root)} if path is not None else {"hub_id": hub_id, "revision": revision or "main"}


def load_benchmark(
    name: str, path: Path | None = None, seed: int = 0, revision: str | None = None
) -> tuple[LoadedSource, dict[str, str]]:
    """All usable items of one registered benchmark in file order, and the provenance of its input.

    Args:
        path: a local file in the hub schema (``.jsonl`` / ``.json`` / ``.parquet``; a directory for
            PersonaFeedback); None reads the hub (``datasets.load_dataset`` / ``huggingface_hub``).
        seed: seeds the A/B order of preference items.
    Raises:
        SchemaError naming file, row and field on bad input, or when no usable item is left.
    """
    bench = get_benchmark(name)
    if bench.load is not None:
        report, provenance = bench.load(path, seed, revision)
    else:
        assert bench.parse is not None  # register_benchmark checks it
        report = LoadedSource(bench.name, [])
        spec = bench.spec
        src = SourceSpec(spec.hub_id, spec.config, spec.split, Path(path) if path is not None else None, revision)
        seen: set[str] = set()
        for rec in iter_records(src):
            report.rows_read += 1
            item = bench.parse(rec, seed)
            if item is None:
                report.skipped["no_gold"] += 1
            elif item.source_id in seen:
                report.skipped["duplicate_id"] += 1
            else:
                seen.add(item.source_id)
                report.items.append(item)
        provenance = src.describe()
    if not report.items:
        raise SchemaError(
            f"{bench.name}: no usable item ({report.rows_read} rows read, skipped {report.skipped.as_dict()})"
        )
    return report, provenance


def sample_items(items: Sequence[Item], k: int | None, seed: int, name: str) -> list[Item]:
    """``k`` items (all when ``k`` is None or >= the pool) drawn with ``random.Random(f"{seed}:{name}")``, in
    pool order."""
    if k is not None and k < 0:
        raise ValueError(f"sample size for {name} must be >= 0, got {k}")
    if k is None or k >= len(items):
        return list(items)
    picked = sorted(random.Random(f"{seed}:{name}").sample(range(len(items)), k))
    return [items[i] for i in picked]


def parse_sizes(pairs: Iterable[str]) -> dict[str, int]:
    """``["mmlu_pro=100", ...]`` -> sizes (each >= 1) of registered benchmarks; PreflightError naming the bad
    pair."""
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or int(value) < 1 or not is_benchmark(name.strip()):
                raise ValueError
            out[name.strip()] = int(value)
        except ValueError:
            raise PreflightError(
                f"bad size {pair!r}: expected <benchmark>=<int >= 1> with a benchmark in {benchmark_names()}"
            ) from None
    return out


# The built-in benchmarks, one registration each, in Table 7's order (the default ``--benchmarks`` order).
register_benchmark(
    Benchmark(
        DataSource.MMLU_PRO.value,
        TaskFamily.MULTIPLE_CHOICE.value,
        Section.OBJECTIVE,
        BenchmarkSpec("TIGER-Lab/MMLU-Pro", None, "test"),
        1000,
        "MMLU-Pro",
        parse=_mmlu_pro,
        table1_column=2,
        sample_file="mmlu_pro.jsonl",
        sample_persona="A university student revising for a broad multiple-choice exam.",
    )
)
register_benchmark(
    Benchmark(
        DataSource.SUPERGPQA.value,
        TaskFamily.MULTIPLE_CHOICE.value,
        Section.OBJECTIVE,
        BenchmarkSpec("m-a-p/SuperGPQA", None, "train"),
        1000,
        "SuperGPQA",
        parse=_supergpqa,
        table1_column=3,
        sample_file="supergpqa.jsonl",
        sample_persona="A graduate student preparing for a qualifying exam in their field.",
    )
)
register_benchmark(
    Benchmark(
        DataSource.TRIVIAQA.value,
        TaskFamily.OPEN_QA.value,
        Section.OBJECTIVE,
        BenchmarkSpec("mandarjoshi/trivia_qa", "rc.nocontext", "validation"),
        1000,
        "TriviaQA",
        parse=_triviaqa,
        table1_column=1,
        overlap=OverlapRule(DataSource.FLAN.value),
        sample_file="triviaqa.jsonl",
        sample_persona="A pub-quiz regular who collects trivia facts.",
    )
)
register_benchmark(
    Benchmark(
        DataSource.PUBMEDQA.value,
        TaskFamily.YES_NO_MAYBE.value,
        Section.OBJECTIVE,
        BenchmarkSpec("qiaojin/PubMedQA", "pqa_labeled", "train"),
        1000,
        "PubMedQA",
        parse=_pubmedqa,
        table1_column=0,
        judged=True,
        overlap=OverlapRule(DataSource.ULTRAMEDICAL.value, "pubid", pubmed_id),
        sample_file="pubmedqa.jsonl",
        sample_persona="A clinician who reads medical research abstracts.",
    )
)
register_benchmark(
    Benchmark(
        DataSource.MATH500.value,
        TaskFamily.MATH.value,
        Section.OBJECTIVE,
        BenchmarkSpec("HuggingFaceH4/MATH-500", None, "test"),
        500,
        "MATH500",
        parse=_math500,
        table1_column=4,
        judged=True,
        sample_file="math500.jsonl",
        sample_persona="A high-school student training for a mathematics competition.",
    )
)
register_benchmark(
    Benchmark(
        DataSource.PERSONAFEEDBACK.value,
        TaskFamily.PREFERENCE.value,
        Section.PERSONALIZED,
        BenchmarkSpec("PersonalAILab/PersonaFeedback", None, "files"),
        1000,
        "P.FB.",
        load=_load_personafeedback,
        table1_column=0,
        sample_file="personafeedback",
    )
)
register_benchmark(
    Benchmark(
        DataSource.FSPO_ROLEPLAY.value,
        TaskFamily.PREFERENCE.value,
        Section.PERSONALIZED,
        BenchmarkSpec("sher222/persona-iterative-responses", None, "test"),
        1500,
        "F.RP.",
        parse=_fspo,
        table1_column=1,
        sample_file="fspo_roleplay.jsonl",
    )
)
