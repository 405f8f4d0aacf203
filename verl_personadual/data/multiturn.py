"""Two-turn RL rows (the paper's stated future work): a finished exchange from the other family, then the row.

    python -m verl_personadual.apps.build_rl --samples --out data/rl --multi-turn-ratio 0.3     # while building
    python -m verl_personadual.apps.build_multiturn --in data/toy/rl/train.parquet --out data/toy_mt/rl/train.parquet \\
        --ratio 0.5 --personalized task=helpful                                        # any RL parquet (toy)

Which rows. Per split, ``floor(ratio * n + 0.5)`` rows drawn with ``random.Random(f"{seed}:multiturn:{split}")``
get a first turn; the others stay single-turn. Families as in ``verl_personadual.eval.pools`` (personalized
sources, or ``--personalized FIELD=V,...``; the toy's personalized questions are ``task=helpful``). A two-turn
row's first turn is a row of the *other* family of the same split (same generator), as a finished exchange: that
row's own single-turn prompt, then an assistant turn opening with its family's mode prefix (personalized for a
personalized question, general otherwise) followed by its gold answer object (``prompts.format_answer``; an
``open_qa`` gold, a JSON list of aliases, gives its first alias). No reasoning is written: the turn shows a mode
choice and an answer, not a trajectory.

The row itself is unchanged but for ``prompt`` (``prompts.build_dialogue``: first prompt, first answer, the
row's prompt) and two ``extra_info`` fields every row of the file gets (:data:`MULTI_TURN_EXTRA_INFO_TYPE`):
``turns`` (1 or 2) and ``first_turn_source_id`` (None for single-turn rows). Reward, ground truth and agent loop
are the second turn's: verl's agent loops template the whole ``raw_prompt`` with the chat template and generate
the last assistant turn.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import TaskFamily, build_dialogue, format_answer
from verl_personadual.data.common import BuildError
from verl_personadual.data.families import PERSONALIZED, Selector, family_of
from verl_personadual.data.schema import EXTRA_INFO_TYPE, ROW_SCHEMA
from verl_personadual.utils.atomic import atomic_write

__all__ = [
    "MULTI_TURN_EXTRA_INFO_TYPE",
    "MULTI_TURN_ROW_SCHEMA",
    "finished_turn",
    "add_first_turns",
    "write_rows",
]

MULTI_TURN_EXTRA_INFO_TYPE = pa.struct(
    list(EXTRA_INFO_TYPE) + [pa.field("turns", pa.int64()), pa.field("first_turn_source_id", pa.string())]
)
MULTI_TURN_ROW_SCHEMA = pa.schema(
    [f if f.name != "extra_info" else pa.field("extra_info", MULTI_TURN_EXTRA_INFO_TYPE) for f in ROW_SCHEMA]
)


def _answer(row: dict[str, Any]) -> str:
    gold = row["reward_model"]["ground_truth"]
    if row["extra_info"].get("task_family") == TaskFamily.OPEN_QA.value:
        return str(json.loads(gold)[0])
    return str(gold)


def finished_turn(row: dict[str, Any], selector: Selector | None = None) -> str:
    """The assistant turn that finishes ``row`` as a first turn: its family's mode prefix + its gold answer."""
    mode = Mode.PERSONALIZED if family_of(row, selector) == PERSONALIZED else Mode.GENERAL
    return mode.prefix + format_answer(_answer(row))


def add_first_turns(
    rows: Sequence[dict[str, Any]], ratio: float, seed: int, split: str, selector: Selector | None = None
) -> list[dict[str, Any]]:
    """The rows of one split, some as two-turn rows (module docstring), in their order.

    Raises BuildError for a ratio outside [0, 1] or when a row needs a first turn from an empty family."""
    if not 0 <= ratio <= 1:
        raise BuildError(f"multi-turn ratio {ratio} is not in [0, 1]")
    rng = random.Random(f"{seed}:multiturn:{split}")
    chosen = set(rng.sample(range(len(rows)), math.floor(ratio * len(rows) + 0.5)))
    families = [family_of(r, selector) for r in rows]
    out = []
    for i, row in enumerate(rows):
        new = dict(row)
        new["extra_info"] = {**row["extra_info"], "turns": 1, "first_turn_source_id": None}
        if i in chosen:
            others = [j for j, fam in enumerate(families) if fam != families[i]]
            if not others:
                raise BuildError(
                    f"{split}: row {row['extra_info']['source_id']} needs a first turn from the other "
                    f"family, but every row is {families[i]} (check --personalized)"
                )
            first = rows[rng.choice(others)]
            new["prompt"] = build_dialogue(first["prompt"], finished_turn(first, selector), row["prompt"])
            new["extra_info"].update(turns=2, first_turn_source_id=first["extra_info"]["source_id"])
        out.append(new)
    return out


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows from :func:`add_first_turns` as parquet (:data:`MULTI_TURN_ROW_SCHEMA`), atomically."""
    table = pa.Table.from_pylist(rows, schema=MULTI_TURN_ROW_SCHEMA)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
