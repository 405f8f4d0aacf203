"""A toy persona task on which a tiny model learns *when* to use the persona, in minutes on a CPU.

    python -m verl_personadual.apps.build_toy --out data/toy          # RL + SFT parquet, eval set, manifest (seed 0)
    python -m verl_personadual.apps.build_toy --out data/toy_rel --variant relational --personalized-share 0.2

Built with the project's real data path: the user turn is ``prompts.build_prompt`` (persona sentence, question,
answer-format instruction), answers are the JSON answer object, items are graded by the project reward
(family ``free_text``), RL rows have the schema of ``verl_personadual.data.rl_rows`` (training rows use the forced
agent loop, validation rows the free one), SFT rows the schema of ``verl_personadual.data.sft_rows`` and the eval set
that of ``verl_personadual.eval`` (benchmark ``toy``).

The task. A true/false question about a thing of some domain (fruit, color, animal, tool, ...) quotes what "the
book" says; the persona, when there is one, is a person who says true or false:

    I am a fruit seller who says false. My question is:
    Is mango a good fruit? The book says true.

The two modes answer by fixed rules: general mode answers what the book says; personalized mode answers what the
persona says (the book's answer when there is no persona). Which answer is right depends on whether the persona is
aligned with the question (:class:`ToyKind`, :data:`KINDS`):

=============  ===========  ==========================================  =======  =====  ============
kind           setting      persona                                     gold     right  better mode
=============  ===========  ==========================================  =======  =====  ============
``none``       none         (none)                                      book     both   either
``misleading`` unaligned    not of the question's domain, disagrees     book     G      general
``helpful``    aligned      of the question's domain, disagrees         persona  P      personalized
``agreeing``   aligned      of the question's domain, agrees with book  book     both   either
=============  ===========  ==========================================  =======  =====  ============

``misleading`` and ``helpful`` prompts have the same form (a persona who disagrees with the book); only whether
the persona is aligned says which mode is right. Two variants (:class:`ToyVariant`) differ in what "aligned" is:

- ``occupations`` (the quickstart's): an aligned persona is a role of the question's domain (:data:`ROLES`, "a
  fruit seller"), an unaligned one an unrelated occupation (:data:`OCCUPATIONS`, "a pilot"), over the four
  :data:`DOMAINS`. The persona's words alone give the better mode away: a classifier of the persona is exact.
- ``relational`` (the toy table's): every persona is a role of some domain of :data:`RELATIONAL_DOMAINS` (eight),
  aligned for questions of its own domain and unaligned for the seven others (a fruit seller helps on a fruit
  question and misleads on a tool question). In every split the misleading items are the helpful items' questions
  and personas paired anew (a random derangement of the personas within each book verdict, so no question keeps a
  persona of its own domain): each persona word and each question word occurs exactly as often in helpful as in
  misleading rows, and only the relation between the two, "is the persona's domain word the question's?", tells
  them apart. Helpful and misleading items are equally many (the remainder of the shares goes to ``none``).

The SFT data's mode mix (``personalized_share``): None (the default) gives one trajectory per mode for *every*
item, so SFT gives no preference between the modes; a share per kind gives one trajectory per item, personalized
for the first share x n (rounded half up) items of that kind in the split's (shuffled) order and general for the
others, so the SFT policy opens the personalized mode on about that share of prompts. The SFT validation file keeps
both modes of every item either way.

Splits are disjoint by prompt; the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import (
    DataSource,
    PersonaSetting,
    TaskFamily,
    build_prompt,
    format_answer,
)
from verl_personadual.data.common import BuildError, stable_id
from verl_personadual.data.rl_rows import AGENT_FOR_SPLIT, write_parquet
from verl_personadual.utils.atomic import atomic_write, atomic_write_text, write_json
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "DOMAINS",
    "RELATIONAL_DOMAINS",
    "ToyVariant",
    "domains",
    "ROLES",
    "OCCUPATIONS",
    "QUALITIES",
    "VERDICTS",
    "ToyKind",
    "KINDS",
    "ToyItem",
    "ToySizes",
    "ToyTask",
    "generate",
    "check_personalized_share",
    "sft_modes",
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
#: The relational variant's domains: :data:`DOMAINS` and four more, so that a persona of any domain meets questions of
#: seven others (56 misleading pairs of persona domain and question domain, 8 aligned ones). No thing is in two.
RELATIONAL_DOMAINS: dict[str, tuple[str, ...]] = {
    **DOMAINS,
    "sport": (
        "soccer",
        "tennis",
        "golf",
        "rugby",
        "hockey",
        "boxing",
        "cricket",
        "polo",
        "rowing",
        "skiing",
        "judo",
        "karate",
        "fencing",
        "archery",
        "surfing",
        "cycling",
    ),
    "drink": (
        "tea",
        "coffee",
        "milk",
        "juice",
        "soda",
        "cocoa",
        "water",
        "cider",
        "lemonade",
        "smoothie",
        "kefir",
        "punch",
        "tonic",
        "latte",
        "mocha",
        "espresso",
    ),
    "flower": (
        "rose",
        "tulip",
        "lily",
        "daisy",
        "orchid",
        "iris",
        "poppy",
        "lotus",
        "jasmine",
        "peony",
        "aster",
        "dahlia",
        "lilac",
        "clover",
        "magnolia",
        "sunflower",
    ),
    "metal": (
        "iron",
        "copper",
        "zinc",
        "tin",
        "lead",
        "nickel",
        "cobalt",
        "steel",
        "bronze",
        "brass",
        "chrome",
        "platinum",
        "titanium",
        "aluminum",
        "mercury",
        "tungsten",
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


class ToyVariant(StrEnum):
    """What makes a persona aligned (module docstring): its kind of word, or its relation to the question."""

    OCCUPATIONS = "occupations"
    RELATIONAL = "relational"


def domains(variant: ToyVariant = ToyVariant.OCCUPATIONS) -> dict[str, tuple[str, ...]]:
    """The domains (domain -> things) of ``variant``."""
    return DOMAINS if variant == ToyVariant.OCCUPATIONS else RELATIONAL_DOMAINS


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
    """One toy question with its persona: ``says`` and ``role`` (a role of :data:`ROLES` after ``persona_domain``,
    the question's ``domain`` for an aligned persona and another one for an unaligned persona of the relational
    variant; an occupation of :data:`OCCUPATIONS` with no ``persona_domain`` for an unaligned persona of the
    occupations variant); None for kind ``none``."""

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


def _key(
    domain: str, thing: str, quality: str, book: str, says: str | None, persona_domain: str | None, role: str | None
):
    return stable_id("toy", domain, thing, quality, book, says or "", persona_domain or "", role or "")


def _item(rng: random.Random, kind: ToyKind, variant: ToyVariant = ToyVariant.OCCUPATIONS) -> ToyItem:
    """A random item of ``kind``: of any kind for ``occupations``, of kind none or agreeing for ``relational``."""
    pool = domains(variant)
    domain = rng.choice(sorted(pool))
    thing = rng.choice(pool[domain])
    quality = rng.choice(QUALITIES)
    book = rng.choice(VERDICTS)
    if kind == ToyKind.NONE:
        says = persona_domain = role = None
    else:
        says = book if kind == ToyKind.AGREEING else next(v for v in VERDICTS if v != book)
        role = rng.choice(OCCUPATIONS if kind == ToyKind.MISLEADING else ROLES)
        persona_domain = None if kind == ToyKind.MISLEADING else domain
    key = _key(domain, thing, quality, book, says, persona_domain, role)
    return ToyItem(key, kind, domain, thing, quality, book, says, persona_domain, role)


def _draw(rng: random.Random, kind: ToyKind, count: int, seen: set[str], variant: ToyVariant) -> list[ToyItem]:
    """``count`` random items of ``kind`` whose ids are not in ``seen`` (added to it)."""
    items: list[ToyItem] = []
    tries = 0
    while len(items) < count:
        item = _item(rng, kind, variant)
        tries += 1
        if tries > 50 * count + 1000:
            raise ValueError(f"too few distinct {kind!r} items for the sizes asked for; ask for fewer items")
        if item.item_id in seen:
            continue
        seen.add(item.item_id)
        items.append(item)
    return items


def _misleading(q: ToyItem, p: ToyItem) -> ToyItem:
    """Question item ``q`` asked with the persona of item ``p`` (another domain's): a misleading item."""
    key = _key(q.domain, q.thing, q.quality, q.book, q.says, p.persona_domain, p.role)
    return ToyItem(key, ToyKind.MISLEADING, q.domain, q.thing, q.quality, q.book, q.says, p.persona_domain, p.role)


def _repaired(rng: random.Random, group: Sequence[ToyItem], taken: set[str]) -> list[ToyItem]:
    """The misleading items of ``group`` (helpful items of one book verdict): each one's question with the persona of
    another item of ``group`` (a permutation). A random permutation, in which each position whose persona is of its
    question's own domain, or whose misleading id is in ``taken`` or repeated, is swapped with a random position
    where the swap leaves neither so (positions already passed stay valid)."""
    order = list(group)
    rng.shuffle(order)
    keys = Counter(_misleading(q, p).item_id for q, p in zip(group, order))
    for i, q in enumerate(group):
        k = _misleading(q, order[i]).item_id
        if order[i].persona_domain != q.domain and k not in taken and keys[k] == 1:
            continue
        fits = []
        for j, other in enumerate(group):
            kj = _misleading(other, order[j]).item_id
            a, b = _misleading(q, order[j]).item_id, _misleading(other, order[i]).item_id
            if (
                j != i
                and order[j].persona_domain != q.domain
                and order[i].persona_domain != other.domain
                and a != b
                and not ({a, b} & taken)
                and keys[a] - (a == k) - (a == kj) == 0
                and keys[b] - (b == k) - (b == kj) == 0
            ):
                fits.append(j)
        if not fits:
            raise ValueError("too few helpful items to pair every question with a persona of another domain")
        j = rng.choice(fits)
        kj = _misleading(group[j], order[j]).item_id
        keys -= Counter([k, kj])
        order[i], order[j] = order[j], order[i]
        keys += Counter([_misleading(q, order[i]).item_id, _misleading(group[j], order[j]).item_id])
    return [_misleading(q, p) for q, p in zip(group, order)]


def _relational_pairs(rng: random.Random, count: int, seen: set[str]) -> list[ToyItem]:
    """``count`` misleading items, then ``count`` helpful ones (module docstring), their ids added to ``seen``:
    helpful item j is of the (j//2)-th domain (cyclically) and book verdict j%2, with a random thing, quality and
    role; the misleading items ask the same questions, each with the persona of another helpful item of the same
    book verdict and another domain (:func:`_repaired`)."""
    names = sorted(RELATIONAL_DOMAINS)
    helpful: list[ToyItem] = []
    for j in range(count):
        domain, book = names[(j // 2) % len(names)], VERDICTS[j % 2]
        says = next(v for v in VERDICTS if v != book)
        for _ in range(1000):
            thing, quality, role = rng.choice(RELATIONAL_DOMAINS[domain]), rng.choice(QUALITIES), rng.choice(ROLES)
            key = _key(domain, thing, quality, book, says, domain, role)
            if key not in seen:
                break
        else:
            raise ValueError("too few distinct 'helpful' items for the sizes asked for; ask for fewer items")
        seen.add(key)
        helpful.append(ToyItem(key, ToyKind.HELPFUL, domain, thing, quality, book, says, domain, role))
    misleading = [it for book in VERDICTS for it in _repaired(rng, [h for h in helpful if h.book == book], seen)]
    seen.update(it.item_id for it in misleading)
    return misleading + helpful


def _kind_counts(n: int, variant: ToyVariant) -> dict[ToyKind, int]:
    """Items per kind of a split of ``n`` items: the shares of :data:`KINDS` rounded down, the remainder to the
    largest share (``occupations``; on equal shares the first listed) or to ``none`` (``relational``, which needs as
    many helpful as misleading items)."""
    counts = {k: int(share * n) for k, (_, share) in KINDS.items()}
    if variant == ToyVariant.OCCUPATIONS:
        counts[max(KINDS, key=lambda k: KINDS[k][1])] += n - sum(counts.values())
    else:
        counts[ToyKind.MISLEADING] = counts[ToyKind.HELPFUL]
        counts[ToyKind.NONE] += n - sum(counts.values())
    return counts


@dataclass(frozen=True)
class ToySizes:
    """Items per split: ``sft`` (SFT rows: one per mode each, or one each under a ``personalized_share``), ``rl``
    and ``rl_val`` (RL parquet), ``eval``."""

    sft: int = 1600
    rl: int = 1024
    rl_val: int = 64
    eval: int = 200


def distinct_items(kind: ToyKind, variant: ToyVariant = ToyVariant.OCCUPATIONS) -> int:
    """How many distinct items (prompts) of ``kind`` the generator of ``variant`` can make: every thing x quality x
    book verdict, times the personas a ``kind`` item can have (none for kind ``none``; for ``relational``
    misleading items a role of any other domain)."""
    pool = domains(variant)
    questions = sum(len(things) for things in pool.values()) * len(QUALITIES) * len(VERDICTS)
    if kind == ToyKind.NONE:
        return questions
    if kind == ToyKind.MISLEADING:
        return questions * (len(OCCUPATIONS) if variant == ToyVariant.OCCUPATIONS else (len(pool) - 1) * len(ROLES))
    return questions * len(ROLES)


def generate(sizes: ToySizes, seed: int = 0, variant: ToyVariant = ToyVariant.OCCUPATIONS) -> dict[str, list[ToyItem]]:
    """Items of every split of ``variant``, disjoint by prompt (item id), kinds in the shares of :data:`KINDS`
    (rounded per split: :func:`_kind_counts`). BuildError, before any item is made, when the sizes ask for more
    items of a kind than :func:`distinct_items` (or for a negative size)."""
    order = (("eval", sizes.eval), ("rl_val", sizes.rl_val), ("rl", sizes.rl), ("sft", sizes.sft))
    if any(n < 0 for _, n in order):
        raise BuildError(f"negative toy sizes: {sizes}")
    for kind in KINDS:
        asked = sum(_kind_counts(n, variant)[kind] for _, n in order)
        if asked > distinct_items(kind, variant):
            raise BuildError(
                f"the sizes (sft {sizes.sft}, rl {sizes.rl}, rl_val {sizes.rl_val}, eval {sizes.eval} items) ask "
                f"for {asked} distinct {kind.value!r} items; the {variant.value} toy generator has "
                f"{distinct_items(kind, variant)}: ask for fewer items"
            )
    rng = random.Random(f"toy:{seed}")
    seen: set[str] = set()
    splits: dict[str, list[ToyItem]] = {}
    for split, n in order:
        items: list[ToyItem] = []
        counts = _kind_counts(n, variant)
        if variant == ToyVariant.RELATIONAL and 0 < counts[ToyKind.HELPFUL] < 4:
            least = next(m for m in range(n, 100) if _kind_counts(m, variant)[ToyKind.HELPFUL] >= 4)
            raise BuildError(
                f"the relational toy pairs 0 or at least 4 helpful items per split: {split} of {n} items has "
                f"{counts[ToyKind.HELPFUL]}; ask for 0 or at least {least} {split} items"
            )
        for kind, count in counts.items():
            if variant == ToyVariant.OCCUPATIONS or kind in (ToyKind.NONE, ToyKind.AGREEING):
                items += _draw(rng, kind, count, seen, variant)
            elif kind == ToyKind.MISLEADING:
                items += _relational_pairs(rng, count, seen)
        rng.shuffle(items)
        splits[split] = items
    return splits


def check_personalized_share(share: Mapping[str, float] | None) -> dict[ToyKind, float] | None:
    """``share`` as kind -> share of personalized SFT trajectories (None stays None); a BuildError naming the
    problem unless it gives every kind of :data:`KINDS` a share in [0, 1] and nothing else."""
    if share is None:
        return None
    names = [k.value for k in ToyKind]
    unknown = sorted(str(k) for k in share if str(k) not in names)
    missing = [k for k in names if k not in {str(x) for x in share}]
    if unknown or missing:
        raise BuildError(
            f"personalized share: kinds {unknown or missing} {'unknown' if unknown else 'missing'}; "
            f"give each of {names} a share"
        )
    out = {ToyKind(str(k)): float(v) for k, v in share.items()}
    bad = {k.value: v for k, v in out.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise BuildError(f"personalized share {bad}: a share is a fraction in [0, 1]")
    return {k: out[k] for k in ToyKind}


def sft_modes(items: Sequence[ToyItem], personalized_share: Mapping[str, float] | None) -> list[tuple[ToyItem, Mode]]:
    """The SFT rows of ``items`` as (item, mode), in order (module docstring): both modes of each item (general
    first) without a share; with one, one row per item, personalized for the first floor(share x n + 1/2) items of
    each kind (n: the kind's items) and general for the others."""
    share = check_personalized_share(personalized_share)
    if share is None:
        return [(item, mode) for item in items for mode in Mode]
    totals = Counter(ToyKind(it.kind) for it in items)
    quota = {k: math.floor(share[k] * totals[k] + 0.5) for k in totals}
    taken: Counter[ToyKind] = Counter()
    rows = []
    for item in items:
        kind = ToyKind(item.kind)
        personalized = taken[kind] < quota[kind]
        taken[kind] += personalized
        rows.append((item, Mode.PERSONALIZED if personalized else Mode.GENERAL))
    return rows


@dataclass(frozen=True)
class ToyTask:
    """A toy task as the quickstart and the toy table build it (generator seed 0): its variant, sizes and SFT mode
    mix (``personalized_share``: kind -> share, :func:`sft_modes`; None: both modes of every item)."""

    variant: ToyVariant = ToyVariant.OCCUPATIONS
    sizes: ToySizes = ToySizes()
    personalized_share: Mapping[str, float] | None = None

    def record(self) -> dict[str, Any]:
        """The task as JSON (variant, sizes, share per kind or None): what an output directory records of it."""
        share = check_personalized_share(self.personalized_share)
        return {
            "variant": ToyVariant(self.variant).value,
            "sizes": asdict(self.sizes),
            "personalized_share": None if share is None else {k.value: v for k, v in share.items()},
        }

    def build(self, out: Path, seed: int = 0) -> dict[str, Any]:
        """:func:`build` of this task under ``out``; returns the manifest."""
        return build(out, self.sizes, seed, self.variant, self.personalized_share)


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


def whole_words(variant: ToyVariant = ToyVariant.OCCUPATIONS) -> list[str]:
    """The content words of ``variant`` (domains, things, roles, answers): a tokenizer for the toy keeps each one a
    token of its own (``verl_personadual.apps.tiny_model.build_tokenizer``'s ``whole_words``)."""
    pool = domains(variant)
    occupations = set(OCCUPATIONS) if variant == ToyVariant.OCCUPATIONS else set()
    return sorted({w for ws in pool.values() for w in ws} | set(pool) | set(ROLES) | occupations | set(QUALITIES))


def corpus(variant: ToyVariant = ToyVariant.OCCUPATIONS) -> list[str]:
    """Text that covers the vocabulary of ``variant``, for training a tiny tokenizer that encodes it compactly."""
    pool = domains(variant)
    lines = [
        ToyItem("", ToyKind.NONE, d, t, q, v, None, None, None).question
        for d, ts in pool.items()
        for t in ts
        for q in QUALITIES
        for v in VERDICTS
    ]
    lines += [
        f"I am {a} {d} {r} who says {v}. My question is:"
        for d in pool
        for r in ROLES
        for v in VERDICTS
        for a in ("a", "an")
    ]
    if variant == ToyVariant.OCCUPATIONS:
        lines += [
            f"I am {a} {o} who says {v}. My question is:" for o in OCCUPATIONS for v in VERDICTS for a in ("a", "an")
        ]
    lines += [f"{m.prefix}{format_answer(v)}" for v in VERDICTS for m in Mode]
    return lines


def _write_sft(
    items: Sequence[ToyItem], path: Path, split: str, personalized_share: Mapping[str, float] | None = None
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [sft_row(item, mode, i, split) for i, (item, mode) in enumerate(sft_modes(items, personalized_share))]
    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return len(rows)


def build_base_sft(
    out: Path, sizes: ToySizes = ToySizes(), seed: int = 0, variant: ToyVariant = ToyVariant.OCCUPATIONS
) -> int:
    """Write ``sft_base/train.parquet`` under ``out``: one :func:`base_sft_row` per SFT item of the split
    :func:`build` makes with the same ``sizes``, ``seed`` and ``variant`` (the same items as ``sft/train.parquet``,
    one row each, whatever that file's mode mix); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = generate(sizes, seed, variant)["sft"]
    table = pa.Table.from_pylist([base_sft_row(item, i, "train") for i, item in enumerate(items)])
    atomic_write(Path(out) / "sft_base" / "train.parquet", lambda tmp: pq.write_table(table, tmp))
    return len(items)


def build_calibration(
    path: Path,
    exclude: Sequence[str],
    items: int = 200,
    seed: int = 1,
    variant: ToyVariant = ToyVariant.OCCUPATIONS,
) -> dict[str, int]:
    """Write an eval set (``eval_set.jsonl`` rows) of about ``items`` toy items of ``variant`` and generator seed
    ``seed`` that share no item id with ``exclude`` (the test set's): the calibration split of FPPS and of the
    router. Items of ``exclude`` are dropped, not replaced, so a kind may have a few fewer; returns the row count per
    kind."""
    excluded = set(exclude)
    pool = generate(ToySizes(sft=0, rl=0, rl_val=0, eval=items), seed, variant)["eval"]
    kept = [it for it in pool if it.item_id not in excluded]
    atomic_write_text(Path(path), "".join(json.dumps(eval_row(it)) + "\n" for it in kept))
    return kind_counts(kept)


def build(
    out: Path,
    sizes: ToySizes = ToySizes(),
    seed: int = 0,
    variant: ToyVariant = ToyVariant.OCCUPATIONS,
    personalized_share: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``rl/{train,validation}.parquet``, ``sft/{train,validation}.parquet`` (train: the SFT items in the mode
    mix of ``personalized_share``, :func:`sft_modes`; validation: the RL validation items in both modes),
    ``eval_set.jsonl`` and ``manifest.json`` under ``out``; returns the manifest. A bad share is a ValueError before
    anything is written."""
    share = check_personalized_share(personalized_share)
    splits = generate(sizes, seed, variant)
    out = Path(out)
    write_parquet([rl_row(it, i, "train") for i, it in enumerate(splits["rl"])], out / "rl" / "train.parquet")
    write_parquet(
        [rl_row(it, i, "validation") for i, it in enumerate(splits["rl_val"])], out / "rl" / "validation.parquet"
    )
    sft_rows = _write_sft(splits["sft"], out / "sft" / "train.parquet", "train", share)
    _write_sft(splits["rl_val"], out / "sft" / "validation.parquet", "validation")
    atomic_write_text(out / "eval_set.jsonl", "".join(json.dumps(eval_row(it)) + "\n" for it in splits["eval"]))
    manifest = {
        "task": "toy persona task (verl_personadual.data.toy)",
        "variant": ToyVariant(variant).value,
        "sft_personalized_share": None if share is None else {k.value: v for k, v in share.items()},
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
