"""The seven evaluation benchmarks: loaders by hub id or from local files in the hub schema, and seeded sampling.

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

__all__ = [
    "BENCHMARKS",
    "OBJECTIVE_BENCHMARKS",
    "PERSONALIZED_BENCHMARKS",
    "DEFAULT_SIZES",
    "BenchmarkSpec",
    "load_benchmark",
    "sample_items",
    "render_feedback_persona",
    "PERSONAFEEDBACK_FILES",
    "PERSONAFEEDBACK_PERSONAS",
    "SPECS",
    "parse_sizes",
]

logger = logging.getLogger(__name__)

#: Benchmarks in table order: objective first, then personalized.
OBJECTIVE_BENCHMARKS: tuple[DataSource, ...] = (
    DataSource.MMLU_PRO,
    DataSource.SUPERGPQA,
    DataSource.TRIVIAQA,
    DataSource.PUBMEDQA,
    DataSource.MATH500,
)
PERSONALIZED_BENCHMARKS: tuple[DataSource, ...] = (DataSource.PERSONAFEEDBACK, DataSource.FSPO_ROLEPLAY)
BENCHMARKS: tuple[DataSource, ...] = OBJECTIVE_BENCHMARKS + PERSONALIZED_BENCHMARKS
assert set(OBJECTIVE_BENCHMARKS) <= OBJECTIVE_SOURCES and set(PERSONALIZED_BENCHMARKS) <= PERSONALIZED_SOURCES

#: Items per benchmark unless overridden: the paper's Table 7 (see module docstring).
DEFAULT_SIZES: dict[DataSource, int] = {
    DataSource.MMLU_PRO: 1000,
    DataSource.SUPERGPQA: 1000,
    DataSource.TRIVIAQA: 1000,
    DataSource.PUBMEDQA: 1000,
    DataSource.MATH500: 500,
    DataSource.PERSONAFEEDBACK: 1000,
    DataSource.FSPO_ROLEPLAY: 1500,
}

PERSONAFEEDBACK_FILES: tuple[str, ...] = tuple(
    f"data/{kind}/{tier}.jsonl" for kind in ("general", "spedific") for tier in ("easy", "medium", "hard")
)
PERSONAFEEDBACK_PERSONAS = "persona/all_personas.jsonl"
_PERSONA_FIELDS = ("Name", "Demographics", "Personality", "Preference", "Bias")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub (PersonaFeedback: raw files, ``split`` unused)."""

    name: DataSource
    hub_id: str
    config: str | None
    split: str


SPECS: dict[DataSource, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec(DataSource.MMLU_PRO, "TIGER-Lab/MMLU-Pro", None, "test"),
        BenchmarkSpec(DataSource.SUPERGPQA, "m-a-p/SuperGPQA", None, "train"),
        BenchmarkSpec(DataSource.TRIVIAQA, "mandarjoshi/trivia_qa", "rc.nocontext", "validation"),
        BenchmarkSpec(DataSource.PUBMEDQA, "qiaojin/PubMedQA", "pqa_labeled", "train"),
        BenchmarkSpec(DataSource.MATH500, "HuggingFaceH4/MATH-500", None, "test"),
        BenchmarkSpec(DataSource.PERSONAFEEDBACK, "PersonalAILab/PersonaFeedback", None, "files"),
        BenchmarkSpec(DataSource.FSPO_ROLEPLAY, "sher222/persona-iterative-responses", None, "test"),
    )
}


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


_PARSERS: dict[DataSource, Callable[[Record, int], Item | None]] = {
    DataSource.MMLU_PRO: _mmlu_pro,
    DataSource.SUPERGPQA: _supergpqa,
    DataSource.TRIVIAQA: _triviaqa,
    DataSource.PUBMEDQA: _pubmedqa,
    DataSource.MATH500: _math500,
    DataSource.FSPO_ROLEPLAY: _fspo,
}


def _download_personafeedback(revision: str | None) -> Path:
    """The local snapshot root of the PersonaFeedback files; a data file missing on the hub is skipped (the
    loader then reads the ones present), the persona file is required."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    spec = SPECS[DataSource.PERSONAFEEDBACK]
    for rel in PERSONAFEEDBACK_FILES:
        try:
            hf_hub_download(spec.hub_id, rel, repo_type="dataset", revision=revision)
        except EntryNotFoundError:
            logger.warning("%s: no %s on the hub; continuing without it", spec.hub_id, rel)
    personas = hf_hub_download(spec.hub_id, PERSONAFEEDBACK_PERSONAS, repo_type="dataset", revision=revision)
    return Path(personas).parent.parent


def load_benchmark(
    name: DataSource | str, path: Path | None = None, seed: int = 0, revision: str | None = None
) -> tuple[LoadedSource, dict[str, str]]:
    """All usable items of one benchmark in file order, and the provenance of its input.

    Args:
        path: a local file in the hub schema (``.jsonl`` / ``.json`` / ``.parquet``; a directory for
            PersonaFeedback); None reads the hub (``datasets.load_dataset`` / ``huggingface_hub``).
        seed: seeds the A/B order of preference items.
    Raises:
        SchemaError naming file, row and field on bad input, or when no usable item is left.
    """
    source = DataSource(name)
    spec = SPECS[source]
    report = LoadedSource(source.value, [])
    if source is DataSource.PERSONAFEEDBACK:
        root = Path(path) if path is not None else _download_personafeedback(revision)
        if not root.is_dir():
            raise SchemaError(f"{root}: PersonaFeedback needs a directory with {PERSONAFEEDBACK_PERSONAS} and data/")
        _personafeedback(root, seed, report)
        provenance = {"dir": str(root)} if path is not None else {"hub_id": spec.hub_id, "revision": revision or "main"}
    else:
        src = SourceSpec(spec.hub_id, spec.config, spec.split, Path(path) if path is not None else None, revision)
        seen: set[str] = set()
        parse = _PARSERS[source]
        for rec in iter_records(src):
            report.rows_read += 1
            item = parse(rec, seed)
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
            f"{source.value}: no usable item ({report.rows_read} rows read, skipped {report.skipped.as_dict()})"
        )
    return report, provenance


def sample_items(items: Sequence[Item], k: int | None, seed: int, name: DataSource | str) -> list[Item]:
    """``k`` items (all when ``k`` is None or >= the pool) drawn with ``random.Random(f"{seed}:{name}")``, in
    pool order."""
    if k is not None and k < 0:
        raise ValueError(f"sample size for {name} must be >= 0, got {k}")
    if k is None or k >= len(items):
        return list(items)
    picked = sorted(random.Random(f"{seed}:{DataSource(name).value}").sample(range(len(items)), k))
    return [items[i] for i in picked]


def parse_sizes(pairs: Iterable[str]) -> dict[DataSource, int]:
    """``["mmlu_pro=100", ...]`` -> sizes (each >= 1); PreflightError naming the bad pair."""
    out: dict[DataSource, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or int(value) < 1:
                raise ValueError
            out[DataSource(name.strip())] = int(value)
        except ValueError:
            raise PreflightError(
                f"bad size {pair!r}: expected <benchmark>=<int >= 1> with a benchmark in "
                f"{[b.value for b in BENCHMARKS]}"
            ) from None
    return out
