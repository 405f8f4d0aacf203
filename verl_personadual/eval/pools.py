"""Which rows are "personalized" questions and which "general" ones, for the analyses that mix the two families
(mixed sets, two-turn dialogues, two-turn training rows), and the finished runs the analyses read.

Family of a row: *personalized* when it matches the :class:`Selector` (``FIELD=V1,V2,...``: the row's ``FIELD``
is one of the values); without a selector, when its source (``benchmark`` of an eval row, ``data_source`` of an
RL row) is a personalized source (``benchmarks.is_personalized``: PersonaFeedback, FSPO, AlignX). Every other
row is *general*. The toy task has no personalized source; its personalized questions are those whose persona is
right (``--personalized task=helpful``).

Fields are looked up on the row itself, then in its ``extra_info`` (RL rows keep ``task`` there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.data.benchmarks import benchmark_names
from verl_personadual.data.eval_sets import EvalRow, read_eval_set
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils.atomic import write_json

__all__ = [
    "FinishedRun",
    "read_run",
    "outcomes",
    "parse_labelled",
    "cell_sort_key",
    "pin_config",
]


@dataclass
class FinishedRun:
    """An ``eval run`` output directory: its rows, predictions and ``run_config.json``."""

    path: Path
    rows: list[EvalRow]
    records: list[dict[str, Any]]
    config: dict[str, Any]

    def by_decoding(self, decoding: str) -> dict[str, dict[str, Any]]:
        """row_id -> record of one decoding."""
        return {r["row_id"]: r for r in self.records if r["decoding"] == decoding}

    @property
    def decodings(self) -> list[str]:
        return sorted({r["decoding"] for r in self.records})


def read_run(run_dir: Path, need: Sequence[str] = ()) -> FinishedRun:
    """Read a run directory; ``need``: decodings that must have a record for every row of its eval set.

    Raises PreflightError for a directory without ``eval_set.jsonl`` / ``predictions.jsonl`` or for a
    needed decoding that is missing or unfinished (the message names it and the command that finishes it)."""
    run_dir = Path(run_dir)
    for name in ("eval_set.jsonl", "predictions.jsonl"):
        if not (run_dir / name).is_file():
            raise PreflightError(f"{run_dir}: no {name} (not an `eval run` output directory, or never started)")
    rows = read_eval_set(run_dir / "eval_set.jsonl")
    records = read_predictions(run_dir / "predictions.jsonl")
    cfg_path = run_dir / "run_config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    run = FinishedRun(run_dir, rows, records, config)
    ids = {r.row_id for r in rows}
    for dec in need:
        done = set(run.by_decoding(dec)) & ids
        if len(done) < len(ids):
            raise PreflightError(
                f"{run_dir}: decoding {dec!r} has {len(done)} of {len(ids)} rows; run `eval run ... --decoding {dec}` "
                "with the same --out to finish it"
            )
    return run


def outcomes(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """row_id -> (correct in forced general, correct in forced personalized), for rows evaluated in both."""
    g, p = Decoding.GENERAL.value, Decoding.PERSONALIZED.value
    forced: dict[str, dict[str, float]] = {}
    for r in records:
        if r["decoding"] in (g, p):
            forced.setdefault(r["row_id"], {})[r["decoding"]] = float(r["correct"])
    return {k: (v[g], v[p]) for k, v in forced.items() if len(v) == 2}


def parse_labelled(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``["a=X", "b=Y"]`` -> ``{"a": "X", "b": "Y"}`` in order; PreflightError on a bad pair or a repeated label."""
    out: dict[str, str] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not label or not value:
            raise PreflightError(f"bad {what} {pair!r}: expected LABEL=VALUE")
        if label in out:
            raise PreflightError(f"bad {what} {pair!r}: label {label!r} given twice")
        out[label] = value
    return out


_SETTING_RANK = {s.value: i for i, s in enumerate(PersonaSetting)}


def cell_sort_key(benchmark: str, setting: str) -> tuple[int, str, int, str]:
    """Table order of a (benchmark, setting) cell: the registered benchmarks in registration order (Table 7's for
    the built-in ones), any other (the toy task) after them by name; settings none, unaligned, aligned."""
    rank = {name: i for i, name in enumerate(benchmark_names())}
    return (
        rank.get(benchmark, len(rank)),
        benchmark,
        _SETTING_RANK.get(setting, len(_SETTING_RANK)),
        setting,
    )


def pin_config(path: Path, config: Mapping[str, Any]) -> None:
    """Record what a resumable output was made with, or check a resumed one against it: PreflightError naming the keys
    that differ (the output would mix two configurations; use another --out)."""
    path = Path(path)
    current = json.loads(json.dumps(config, sort_keys=True))
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise PreflightError(
                f"{path} was made with other settings ({diff}); resume with the same ones or use another --out"
            )
    else:
        write_json(path, current, sort_keys=True)
