"""Persona assignment for objective items.

- **Unaligned**: drawn from the PersonaHub pool with a seeded ``random.Random``: the pool is shuffled and consumed
  in order, reshuffled when exhausted, so personas repeat only after the whole pool was used.
- **Aligned**, two explicit modes (:class:`AlignedMode`):

  - ``llm``: one request per item through ``verl_personadual.utils.llm.LLMClient`` with the prompt of
    ``prompts.build_aligned_persona_request``; the reply must be a JSON object ``{"persona": "<text>"}``
    (:func:`parse_persona_reply` is the validation hook, so a garbage reply is rejected, reported and never
    cached). ``persona_id`` = ``aligned:<hash of the text>``.
  - ``offline-template``: no endpoint needed; a fixed, clearly labelled placeholder persona per source / task
    family (:data:`OFFLINE_TEMPLATES`), ``persona_id`` = ``offline-template:<key>``. For demos and the shipped
    samples only: these personas are not question-specific, so they are not aligned in the paper's sense.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Sequence

from verl_personadual.core.prompts import (
    PERSONA_KEY,
    DataSource,
    TaskFamily,
    build_aligned_persona_request,
)
from verl_personadual.data.common import BuildError, Item, has_content, stable_id
from verl_personadual.data.personahub import Persona
from verl_personadual.utils.llm import LLMClient
from verl_personadual.utils.strenum import StrEnum

#: Longest accepted generated persona (characters).
MAX_GENERATED_PERSONA_CHARS = 400
#: Sampling parameters of aligned-persona requests (part of the cache key).
ALIGNED_SAMPLING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 160}

OFFLINE_TEMPLATES: dict[str, str] = {
    "ultramedical": "A medical student preparing for a licensing exam.",
    "flan/math": "A student practising arithmetic and algebra for an exam.",
    "flan": "A curious reader who likes quizzes and reading comprehension puzzles.",
}


class AlignedMode(StrEnum):
    LLM = "llm"
    OFFLINE_TEMPLATE = "offline-template"


def unaligned_personas(pool: Sequence[Persona], k: int, seed: int) -> list[Persona]:
    """``k`` personas drawn from ``pool`` (see module docstring); raises BuildError on an empty pool."""
    if k and not pool:
        raise BuildError("the PersonaHub pool is empty but unaligned personas are needed")
    rng = random.Random(f"{seed}:unaligned")
    out: list[Persona] = []
    while len(out) < k:
        order = list(pool)
        rng.shuffle(order)
        out.extend(order[: k - len(out)])
    return out


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_persona_reply(reply: str) -> str:
    """The persona text of an aligned-persona reply; ValueError with the reason when the reply is garbage."""
    match = _JSON_OBJECT.search(reply)
    if match is None:
        raise ValueError(f'no JSON object {{"{PERSONA_KEY}": ...}} in the reply')
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"the JSON object does not parse ({err.msg})") from None
    text = obj.get(PERSONA_KEY) if isinstance(obj, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'the JSON object has no non-empty string "{PERSONA_KEY}"')
    text = " ".join(text.split())
    if not has_content(text):
        raise ValueError("the persona has no content")
    if len(text) > MAX_GENERATED_PERSONA_CHARS:
        raise ValueError(f"the persona has {len(text)} characters (max {MAX_GENERATED_PERSONA_CHARS})")
    return text


def _validate(reply: str) -> None:
    parse_persona_reply(reply)


def aligned_personas_llm(items: Sequence[Item], client: LLMClient) -> list[Persona]:
    """One generated persona per item, in order (raises ``llm.LLMBatchError`` when replies fail or are garbage;
    the others are cached, so a re-run asks only for the failed ones)."""
    requests = [build_aligned_persona_request(item.question) for item in items]
    replies = client.complete_many(requests, validate=_validate, desc="aligned personas", **ALIGNED_SAMPLING)
    texts = [parse_persona_reply(r) for r in replies]
    return [Persona(stable_id("aligned", t), t) for t in texts]


def _template_key(item: Item) -> str:
    if item.source == DataSource.FLAN:
        return "flan/math" if item.family == TaskFamily.MATH else "flan"
    return str(item.source)


def aligned_personas_offline(items: Sequence[Item]) -> list[Persona]:
    """The labelled placeholder persona of each item's source / family."""
    out = []
    for item in items:
        key = _template_key(item)
        if key not in OFFLINE_TEMPLATES:
            raise ValueError(f"no offline persona template for source {str(item.source)!r}")
        out.append(Persona(f"offline-template:{key}", OFFLINE_TEMPLATES[key]))
    return out
