"""A toy persona task on which a tiny model learns *when* to use the persona, in minutes on a CPU.

    python -m verl_personadual.apps.build_toy --out data/toy          # RL + SFT parquet, eval set, manifest (seed 0)

Built with the project's real data path: the user turn is ``prompts.build_prompt`` (persona sentence, question,
answer-format instruction), answers are the JSON answer object, items are graded by the project reward
(family ``free_text``), RL rows have the schema of ``verl_personadual.data.rl_rows`` (training rows use the forced
agent loop, validation rows the free one), SFT rows the schema of ``verl_personadual.data.sft_rows`` and the eval set
that of ``verl_personadual.eval`` (benchmark ``toy``).

The task. A true/false question about a thing of some domain (fruit, color, animal, tool) quotes what "the book"
says; the persona, when there is one, is a person who says true or false: someone of the question's domain
(:data:`ROLES`, aligned) or of an unrelated occupation (:data:`OCCUPATIONS`, unaligned):

    I am a fruit seller who says false. My question is:
    Is mango a good fruit? The book says true.

The two modes answer by fixed rules, which the SFT data teaches (one trajectory per mode for *every* item, so
SFT gives no preference between the modes): general mode answers what the book says; personalized mode answers
what the persona says (the book's answer when there is no persona). Which answer is right depends on the persona
and the question together (:class:`ToyKind`, :data:`KINDS`):

=============  ===========  ==========================================  =======  =====  ============
kind           setting      persona                                     gold     right  better mode
=============  ===========  ==========================================  =======  =====  ============
``none``       none         (none)                                      book     both   either
``misleading`` unaligned    an occupation, disagrees with the book      book     G      general
``helpful``    aligned      the question's domain, disagrees            persona  P      personalized
``agreeing``   aligned      the question's domain, agrees with the book book     both   either
=============  ===========  ==========================================  =======  =====  ============

``misleading`` and ``helpful`` prompts have the same form (a persona who disagrees with the book); only whether
the persona is of the question's domain (aligned) or not (unaligned) says which mode is right. The persona's
domain word is explicit ("a fruit seller" vs "a pilot"), so a tiny model can compare it with the question's.

Splits are disjoint by prompt; the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import (
    DataSource,
    PersonaSetting,
    TaskFamily,
    build_prompt,
    format_answer,
)
from verl_personadual.data.common import stable_id
from verl_personadual.data.rl_rows import AGENT_FOR_SPLIT, write_parquet
from verl_personadual.utils.atomic import atomic_write, atomic_write_text, write_json
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "DOMAINS",
    "ROLES",
    "OCCUPATIONS",
    "QUALITIES",
    "VERDICTS",
    "ToyKind",
    "KINDS",
    "ToyItem",
    "ToySizes",
    "generate",
    "distinct_items",
    "better_mode",
    "kind_counts",
    "rl_row",
    "sft_row",
    "eval_row",
    "base_sft_row",
    "build_base_sft",
    "build_calibration",
    "corpus",
    "whole_words",
    "build",
]

#: Domain -> the things a question of that domain asks about.
DOMAINS: dict[str, tuple[str, ...]] = {
    "fruit": (
        "apple",
        "mango",
        "pear",
        "plum",
        "peach",
        "grape",
        "lemon",
        "cherry",
        "melon",
        "kiwi",
        "lime",
        "fig",
        "date",
        "guava",
        "papaya",
        "banana",
    ),
    "color": (
        "red",
        "blue",
        "green",
        "pink",
        "black",
        "white",
        "brown",
        "gray",
        "orange",
        "purple",
        "teal",
        "navy",
        "gold",
        "silver",
        "beige",
        "violet",
    ),
    "animal": (
        "horse",
        "sheep",
        "goat",
        "duck",
        "tiger",
        "zebra",
        "camel",
        "mouse",
        "otter",
        "eagle",
        "wolf",
        "fox",
        "bear",
        "lion",
        "seal",
        "owl",
    ),
    "tool": (
        "hammer",
        "saw",
        "drill",
        "wrench",
        "chisel",
        "pliers",
        "ruler",
        "ladder",
        "shovel",
        "rake",
        "axe",
        "clamp",
        "level",
        "file",
        "vise",
        "trowel",
    ),
}
#: An aligned persona's occupation, after the question's domain ("a fruit seller").
ROLES: tuple[str, ...] = ("seller", "teacher", "collector", "fan", "expert", "buyer", "critic", "lover")
#: An unaligned persona's occupation: unrelated to every domain, as PersonaHub personas are to a question.
OCCUPATIONS: tuple[str, ...] = ("pilot", "nurse", "driver", "clerk", "dancer", "miner", "sailor", "banker")
#: What the question asks of the thing ("Is mango a good fruit?").
QUALITIES: tuple[str, ...] = ("good", "rare", "cheap", "popular", "common", "useful", "fine", "nice")
#: The answers.
VERDICTS: tuple[str, ...] = ("true", "false")


class ToyKind(StrEnum):
    """The kind of a toy item (module docstring's table); its value is the ``task`` of the item's rows."""

    NONE = "none"
    MISLEADING = "misleading"
    HELPFUL = "helpful"
    AGREEING = "agreeing"


#: Kind -> (persona setting, share of the items); on equal shares the first listed takes a split's remainder.
KINDS: dict[ToyKind, tuple[PersonaSetting, float]] = {
    ToyKind.NONE: (PersonaSetting.NONE, 0.15),
    ToyKind.MISLEADING: (PersonaSetting.UNALIGNED, 0.35),
    ToyKind.HELPFUL: (PersonaSetting.ALIGNED, 0.35),
    ToyKind.AGREEING: (PersonaSetting.ALIGNED, 0.15),
}
FAMILY = TaskFamily.FREE_TEXT
SOURCE = DataSource.TOY


@dataclass(frozen=True)
class ToyItem:
    """One toy question with its persona: ``says`` and ``role`` (an occupation of :data:`OCCUPATIONS` for an
    unaligned persona, of :data:`ROLES` after ``persona_domain`` for an aligned one); None for kind ``none``."""

    item_id: str
    kind: ToyKind
    domain: str
    thing: str
    quality: str
    book: str
    says: str | None
    persona_domain: str | None
    role: str | None

    @property
    def setting(self) -> PersonaSetting:
        return KINDS[self.kind][0]

    @property
    def question(self) -> str:
        return f"Is {self.thing} a {self.quality} {self.domain}? The book says {self.book}."

    @property
    def persona(self) -> str | None:
        if self.says is None:
            return None
        who = self.role if self.persona_domain is None else f"{self.persona_domain} {self.role}"
        return f"{'an' if who[0] in 'aeiou' else 'a'} {who} who says {self.says}"

    @property
    def gold(self) -> str:
        return self.says if self.kind == ToyKind.HELPFUL else self.book

    def answer(self, mode: Mode) -> str:
        """What ``mode`` answers by its rule (module docstring)."""
        if mode is Mode.PERSONALIZED and self.says is not None:
            return self.says
        return self.book


def better_mode(item: ToyItem) -> Mode | None:
    """The mode whose rule answers correctly when only one does; None when both do."""
    right = [m for m in Mode if item.answer(m) == item.gold]
    return right[0] if len(right) == 1 else None


def kind_counts(items: Sequence[ToyItem]) -> dict[str, int]:
    """Items per kind, by kind name in alphabetical order (the manifests' ``kinds``)."""
    return dict(sorted(Counter(it.kind.value for it in items).items()))


def _item(rng: random.Random, kind: ToyKind) -> ToyItem:
    domain = rng.choice(sorted(DOMAINS))
    thing = rng.choice(DOMAINS[domain])
    quality = rng.choice(QUALITIES)
    book = rng.choice(VERDICTS)
    if kind == ToyKind.NONE:
        says = persona_domain = role = None
    else:
        says = book if kind == ToyKind.AGREEING else next(v for v in VERDICTS if v != book)
        role = rng.choice(OCCUPATIONS if kind == ToyKind.MISLEADING else ROLES)
        persona_domain = None if kind == ToyKind.MISLEADING else domain
    key = stable_id("toy", domain, thing, quality, book, says or "", persona_domain or "", role or "")
    return ToyItem(key, kind, domain, thing, quality, book, says, persona_domain, role)


@dataclass(frozen=True)
class ToySizes:
    """Items per split: ``sft`` (each gives one row per mode), ``rl`` and ``rl_val`` (RL parquet), ``eval``."""

    sft: int = 1600
    rl: int = 1024
    rl_val: int = 64
    eval: int = 200


def distinct_items(kind: ToyKind) -> int:
    """How many distinct items (prompts) of ``kind`` the generator can make: every thing x quality x book verdict,
    times the persona's occupations (none for kind ``none``)."""
    questions = sum(len(things) for things in DOMAINS.values()) * len(QUALITIES) * len(VERDICTS)
    personas = {ToyKind.NONE: 1, ToyKind.MISLEADING: len(OCCUPATIONS)}.get(kind, len(ROLES))
    return questions * personas


def _split_counts(n: int) -> dict[ToyKind, int]:
    """Items per kind of a split of ``n`` items: the shares of :data:`KINDS`, remainder to the largest share."""
    counts = {k: int(share * n) for k, (_, share) in KINDS.items()}
    counts[max(KINDS, key=lambda k: KINDS[k][1])] += n - sum(counts.values())
    return counts


def generate(sizes: ToySizes, seed: int = 0) -> dict[str, list[ToyItem]]:
    """Items of every split, disjoint by prompt (item id), kinds in the shares of :data:`KINDS` (rounded per
    split, remainder to the largest share). ValueError, before any item is made, when the sizes ask for more
    items of a kind than :func:`distinct_items` (or for a negative size)."""
    order = (("eval", sizes.eval), ("rl_val", sizes.rl_val), ("rl", sizes.rl), ("sft", sizes.sft))
    if any(n < 0 for _, n in order):
        raise ValueError(f"negative toy sizes: {sizes}")
    for kind in KINDS:
        asked = sum(_split_counts(n)[kind] for _, n in order)
        if asked > distinct_items(kind):
            raise ValueError(
                f"the sizes (sft {sizes.sft}, rl {sizes.rl}, rl_val {sizes.rl_val}, eval {sizes.eval} items) ask "
                f"for {asked} distinct {kind.value!r} items; the toy generator has {distinct_items(kind)}: ask for "
                "fewer items"
            )
    rng = random.Random(f"toy:{seed}")
    seen: set[str] = set()
    splits: dict[str, list[ToyItem]] = {}
    for split, n in order:
        items: list[ToyItem] = []
        for kind, count in _split_counts(n).items():
            made = tries = 0
            while made < count:
                item = _item(rng, kind)
                tries += 1
                if tries > 50 * count + 1000:
                    raise ValueError(f"too few distinct {kind!r} items for the sizes asked for; ask for fewer items")
                if item.item_id in seen:
                    continue
                seen.add(item.item_id)
                items.append(item)
                made += 1
        rng.shuffle(items)
        splits[split] = items
    return splits


def _extra_info(item: ToyItem, index: int, split: str) -> dict[str, Any]:
    return {
        "index": index,
        "split": split,
        "source_id": item.item_id,
        "task": item.kind.value,
        "task_family": FAMILY.value,
        "persona_setting": item.setting.value,
        "persona_id": None if item.persona is None else f"toy:{item.persona_domain}:{item.role}:{item.says}",
        "persona": item.persona,
        "question": item.question,
        "choices": [],
    }


def rl_row(item: ToyItem, index: int, split: str) -> dict[str, Any]:
    """An RL row in ``verl_personadual.data.rl_rows``'s schema (``split`` "train" -> forced loop, else free)."""
    return {
        "data_source": SOURCE.value,
        "prompt": build_prompt(item.question, FAMILY, item.persona),
        "reward_model": {"style": "rule", "ground_truth": item.gold},
        "extra_info": _extra_info(item, index, split),
        "agent_name": AGENT_FOR_SPLIT[split],
    }


def sft_row(item: ToyItem, mode: Mode, index: int, split: str) -> dict[str, Any]:
    """An SFT row (``messages``: the RL prompt, then ``mode``'s prefix and answer object)."""
    info = _extra_info(item, index, split)
    info.update(mode=mode.name.lower(), ground_truth=item.gold)
    answer = {"role": "assistant", "content": mode.prefix + format_answer(item.answer(mode))}
    return {
        "messages": [*build_prompt(item.question, FAMILY, item.persona), answer],
        "data_source": SOURCE.value,
        "extra_info": info,
    }


def base_sft_row(item: ToyItem, index: int, split: str) -> dict[str, Any]:
    """An SFT row of the persona-following base model (the toy's backbone for FPPS and the other untrained
    baselines): the RL prompt, then the *personalized* rule's answer object with no mode prefix. A model taught these
    answers what any persona says, a misleading one too, and the book when there is none."""
    info = _extra_info(item, index, split)
    info.update(ground_truth=item.gold)
    answer = {"role": "assistant", "content": format_answer(item.answer(Mode.PERSONALIZED))}
    return {
        "messages": [*build_prompt(item.question, FAMILY, item.persona), answer],
        "data_source": SOURCE.value,
        "extra_info": info,
    }


def eval_row(item: ToyItem) -> dict[str, Any]:
    """A row of the eval harness's ``eval_set.jsonl`` (``verl_personadual.data.eval_sets.EvalRow`` fields)."""
    return {
        "row_id": f"{item.item_id}|{item.setting.value}",
        "item_id": item.item_id,
        "benchmark": SOURCE.value,
        "task": item.kind.value,
        "family": FAMILY.value,
        "setting": item.setting.value,
        "question": item.question,
        "gold": item.gold,
        "choices": [],
        "persona": item.persona,
        "persona_id": _extra_info(item, 0, "eval")["persona_id"],
    }


def whole_words() -> list[str]:
    """The toy's content words (domains, things, roles, answers): a tokenizer for the toy keeps each one a token of its
    own (``verl_personadual.apps.tiny_model.build_tokenizer``'s ``whole_words``)."""
    return sorted(
        {w for ws in DOMAINS.values() for w in ws} | set(DOMAINS) | set(ROLES) | set(OCCUPATIONS) | set(QUALITIES)
    )


def corpus() -> list[str]:
    """Text that covers the toy's vocabulary, for training a tiny tokenizer that encodes it compactly."""
    lines = [
        ToyItem("", ToyKind.NONE, d, t, q, v, None, None, None).question
        for d, ts in DOMAINS.items()
        for t in ts
        for q in QUALITIES
        for v in VERDICTS
    ]
    lines += [
        f"I am {a} {d} {r} who says {v}. My question is:"
        for d in DOMAINS
        for r in ROLES
        for v in VERDICTS
        for a in ("a", "an")
    ]
    lines += [f"I am {a} {o} who says {v}. My question is:" for o in OCCUPATIONS for v in VERDICTS for a in ("a", "an")]
    lines += [f"{m.prefix}{format_answer(v)}" for v in VERDICTS for m in Mode]
    return lines


def _write_sft(items: Sequence[ToyItem], path: Path, split: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [sft_row(item, mode, 2 * i + j, split) for i, item in enumerate(items) for j, mode in enumerate(Mode)]
    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return len(rows)


def build_base_sft(out: Path, sizes: ToySizes = ToySizes(), seed: int = 0) -> int:
    """Write ``sft_base/train.parquet`` under ``out``: one :func:`base_sft_row` per SFT item of the split
    :func:`build` makes with the same ``sizes`` and ``seed`` (the same items as ``sft/train.parquet``, one row each
    instead of one per mode); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = generate(sizes, seed)["sft"]
    table = pa.Table.from_pylist([base_sft_row(item, i, "train") for i, item in enumerate(items)])
    atomic_write(Path(out) / "sft_base" / "train.parquet", lambda tmp: pq.write_table(table, tmp))
    return len(items)


def build_calibration(path: Path, exclude: Sequence[str], items: int = 200, seed: int = 1) -> dict[str, int]:
    """Write an eval set (``eval_set.jsonl`` rows) of about ``items`` toy items of generator seed ``seed`` that
    share no item id with ``exclude`` (the test set's): the calibration split of FPPS and of the router. Items of
    ``exclude`` are dropped, not replaced, so a kind may have a few fewer; returns the row count per kind."""
    excluded = set(exclude)
    kept = [
        it for it in generate(ToySizes(sft=0, rl=0, rl_val=0, eval=items), seed)["eval"] if it.item_id not in excluded
    ]
    atomic_write_text(Path(path), "".join(json.dumps(eval_row(it)) + "\n" for it in kept))
    return kind_counts(kept)


def build(out: Path, sizes: ToySizes = ToySizes(), seed: int = 0) -> dict[str, Any]:
    """Write ``rl/{train,validation}.parquet``, ``sft/{train,validation}.parquet`` (validation: the RL validation
    items in both modes), ``eval_set.jsonl`` and ``manifest.json`` under ``out``; returns the manifest."""
    splits = generate(sizes, seed)
    out = Path(out)
    write_parquet([rl_row(it, i, "train") for i, it in enumerate(splits["rl"])], out / "rl" / "train.parquet")
    write_parquet(
        [rl_row(it, i, "validation") for i, it in enumerate(splits["rl_val"])], out / "rl" / "validation.parquet"
    )
    sft_rows = _write_sft(splits["sft"], out / "sft" / "train.parquet", "train")
    _write_sft(splits["rl_val"], out / "sft" / "validation.parquet", "validation")
    atomic_write_text(out / "eval_set.jsonl", "".join(json.dumps(eval_row(it)) + "\n" for it in splits["eval"]))
    manifest = {
        "task": "toy persona task (verl_personadual.data.toy)",
        "seed": seed,
        "sizes": asdict(sizes),
        "sft_rows": sft_rows,
        "kinds": {split: kind_counts(items) for split, items in splits.items()},
        "files": {
            "rl": ["rl/train.parquet", "rl/validation.parquet"],
            "sft": ["sft/train.parquet", "sft/validation.parquet"],
            "eval_set": "eval_set.jsonl",
        },
    }
    write_json(out / "manifest.json", manifest, sort_keys=True)
    return manifest
