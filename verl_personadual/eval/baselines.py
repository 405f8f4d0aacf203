"""Baselines run through the same harness: prompt styles and the PersonaDual-Router classifier.

Prompt styles (``--prompt-style``; every text lives in ``verl_personadual.core.prompts``):

- ``persona`` (default): ``prompts.build_prompt`` with the row's persona (none for setting ``none``): PersonaDual
  itself, and a plain model *with* persona in the prompt.
- ``no_persona``: the same rows with the persona left out: a plain model *without* persona.
- ``mode_choice``: PersonaDual-Prompt, ``prompts.build_mode_choice_prompt``: an instruction asks the model to
  open its answer with one of the two prefixes. A plain model writes them as text, so the chosen mode is read
  from the response ids first and, failing that, from the head of the decoded text (:func:`mode_from_text`).
- ``cot``: CoT, ``prompts.build_cot_prompt``: the persona prompt plus an explicit step-by-step instruction.
- ``personal``: Personal-Prompt, ``prompts.build_personal_prompt``: the persona prompt plus an instruction to use
  the persona throughout the reasoning.
- ``alignxpert_ica`` / ``alignxpert_pba``: the prompt formats AlignXpert-ICA / -PBA checkpoints were trained with
  (``prompts.build_alignxpert_prompt``), for any checkpoint trained that way.

The paper's Table 1 systems (``eval run --system`` / ``eval compare --system``) are records of
``verl_personadual.eval.systems``: each a prompt style of this module, the decoding its row is read from and the
checkpoint it needs (the FPPS baselines: ``verl_personadual.eval.fpps.system``).

PersonaDual-Router (decoding ``router``): an external classifier picks the mode, then the response is generated
after that mode's prefix, as in forced decoding. The classifier (:class:`Router`) is a logistic regression in
numpy on hashed features of the persona and the question text (word unigrams and bigrams, separate hash spaces
for persona and question, plus a has-persona feature), trained with full-batch gradient descent and L2.
Labels (:func:`router_labels`) come from a forced-decoding run's predictions: for each row evaluated in both
modes, ``personalized`` when only the personalized response was correct, ``general`` when only the general one
was; ties carry no signal and are left out. Train it on a run over items disjoint from the ones you evaluate
(e.g. another ``--seed`` on a larger pool) so the router never sees test answers.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from verl_personadual.core.modes import PREFIX_TEXT, UNKNOWN_MODE, Mode
from verl_personadual.core.prompts import (
    build_alignxpert_prompt,
    build_cot_prompt,
    build_mode_choice_prompt,
    build_personal_prompt,
    build_prompt,
)
from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.eval.generate import Decoding
from verl_personadual.utils.atomic import atomic_write_text
from verl_personadual.utils.errors import UserError
from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "PromptStyle",
    "build_messages",
    "mode_from_text",
    "Router",
    "router_labels",
    "RouterError",
]


class PromptStyle(StrEnum):
    PERSONA = "persona"
    NO_PERSONA = "no_persona"
    MODE_CHOICE = "mode_choice"
    COT = "cot"
    PERSONAL = "personal"
    ALIGNXPERT_ICA = "alignxpert_ica"
    ALIGNXPERT_PBA = "alignxpert_pba"


def build_messages(row: EvalRow, style: PromptStyle) -> list[dict[str, str]]:
    """The chat prompt of ``row`` under ``style`` (module docstring)."""
    if style is PromptStyle.NO_PERSONA:
        return build_prompt(row.question, row.family, None)
    if style is PromptStyle.MODE_CHOICE:
        return build_mode_choice_prompt(row.question, row.family, row.persona)
    if style is PromptStyle.COT:
        return build_cot_prompt(row.question, row.family, row.persona)
    if style is PromptStyle.PERSONAL:
        return build_personal_prompt(row.question, row.family, row.persona)
    if style in (PromptStyle.ALIGNXPERT_ICA, PromptStyle.ALIGNXPERT_PBA):
        return build_alignxpert_prompt(row.question, row.family, row.persona, style.value.rsplit("_", 1)[1])
    return build_prompt(row.question, row.family, row.persona)


def mode_from_text(text: str) -> int:
    """Mode code of a response whose decoded text starts (after whitespace) with a prefix, else -1."""
    head = text.lstrip()
    for mode, prefix in PREFIX_TEXT.items():
        if head.startswith(prefix):
            return int(mode)
    return UNKNOWN_MODE


class RouterError(UserError, ValueError):
    """The router cannot be trained or loaded (the message says why)."""


_WORD = re.compile(r"\w+")


def _grams(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


@dataclass
class Router:
    """Logistic regression over hashed text features; ``predict`` gives a :class:`Mode` per row."""

    weights: np.ndarray  # (2 * buckets + 2,): question space, persona space, has-persona, bias
    buckets: int = 4096

    @staticmethod
    def features(rows: Sequence[EvalRow], buckets: int) -> np.ndarray:
        x = np.zeros((len(rows), 2 * buckets + 2), dtype=np.float64)
        for i, row in enumerate(rows):
            for offset, text in ((0, row.question), (buckets, row.persona or "")):
                grams = _grams(text)
                for g in grams:
                    x[i, offset + zlib.crc32(g.encode("utf-8")) % buckets] += 1.0 / np.sqrt(len(grams))
            x[i, -2] = 1.0 if row.persona else 0.0
            x[i, -1] = 1.0
        return x

    @classmethod
    def train(
        cls,
        rows: Sequence[EvalRow],
        labels: Sequence[Mode],
        buckets: int = 4096,
        l2: float = 1e-3,
        lr: float = 0.5,
        steps: int = 500,
    ) -> "Router":
        """Fit on ``rows`` with ``labels`` (both modes must occur)."""
        y = np.array([int(m) for m in labels], dtype=np.float64)
        if len(rows) != len(y) or len(set(y.tolist())) < 2:
            raise RouterError(f"router training needs examples of both modes; got {len(y)} labels {sorted(set(y))}")
        x = cls.features(rows, buckets)
        w = np.zeros(x.shape[1])
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
            w -= lr * (x.T @ (p - y) / len(y) + l2 * w)
        return cls(w, buckets)

    def prob_personalized(self, rows: Sequence[EvalRow]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.features(rows, self.buckets) @ self.weights)))

    def predict(self, rows: Sequence[EvalRow]) -> list[Mode]:
        return [Mode.PERSONALIZED if p >= 0.5 else Mode.GENERAL for p in self.prob_personalized(rows)]

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"buckets": self.buckets, "weights": self.weights.tolist()}))

    @classmethod
    def load(cls, path: Path) -> "Router":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            buckets = int(data["buckets"])
            weights = np.asarray(data["weights"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RouterError(f"{path}: not a router file ({err})") from None
        if weights.shape != (2 * buckets + 2,):
            raise RouterError(f"{path}: {weights.shape[0]} weights for {buckets} buckets")
        return cls(weights, buckets)


def router_labels(
    rows: Iterable[EvalRow], predictions: Iterable[Mapping[str, Any]]
) -> tuple[list[EvalRow], list[Mode]]:
    """Training pairs from a forced run (module docstring): rows evaluated in both modes where exactly one was
    correct, labelled with that mode."""
    correct: dict[tuple[str, str], float] = {
        (str(p["row_id"]), str(p["decoding"])): float(p["correct"]) for p in predictions
    }
    out_rows: list[EvalRow] = []
    labels: list[Mode] = []
    for row in rows:
        g = correct.get((row.row_id, Decoding.GENERAL.value))
        p = correct.get((row.row_id, Decoding.PERSONALIZED.value))
        if g is None or p is None or g == p:
            continue
        out_rows.append(row)
        labels.append(Mode.PERSONALIZED if p > g else Mode.GENERAL)
    return out_rows, labels
