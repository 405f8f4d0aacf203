"""The mode-choice probability σ(m | q, p): how sure the model is of its mode, and whether that confidence is right.

    python -m verl_personadual.eval mode-probs --run sft=runs/sft --run rl=runs/rl --out runs/mode_probs

What is measured. For each eval row, one forward pass over its prompt (the run's prompt style and chat template,
exactly as ``eval run`` builds it), no sampling: ``σ(m) = P(prefix of m | prompt)``, the probability of mode m's
prefix at the first response position (softmax of the logits there); for a plain-text prefix of several tokens,
the product over its tokens (teacher-forced). The two prefixes are disjoint events (neither starts with the
other, ``modes.ModePrefixes``), so ``σ(general) + σ(personalized) <= 1``; the rest (``1 - mode_mass``) goes to
tokens that open no mode. ``sigma`` = ``σ(personalized) / (σ(general) + σ(personalized))`` is the choice
probability renormalised over the two modes, what the analyses below use. Backends: transformers (left-padded
batches, explicit position ids, only the last logits kept) and vLLM (prompt log-probs of prompt + prefix).

Outputs under ``--out`` (one label per ``--run LABEL=DIR`` or ``--model LABEL=PATH``):

- ``mode_probs_<label>.jsonl``: per row ``row_id``, ``benchmark``, ``task``, ``setting``, ``logp_general``,
  ``logp_personalized``, ``p_general``, ``p_personalized``, ``mode_mass``, ``sigma``. Appended per batch; a killed
  command resumes where it stopped (``mode_probs_<label>.config.json`` pins the checkpoint and prompt settings).
- ``tables/sigma.{md,csv}``: per label x benchmark x setting: items, mean and median sigma, % of rows whose
  argmax is personalized, mean mode mass. ``tables/sigma_shift.{md,csv}`` (two labels or more): per cell, mean
  sigma of the first and the last label on their common rows, and the difference (e.g. SFT -> RL).
- ``tables/calibration.{md,csv}`` (labels with a run holding both forced decodings): ``--bins`` equal-width sigma
  bins; per bin the mean sigma and the empirical rate of "personalized was the better mode" over the *decisive*
  rows of the bin (exactly one forced mode correct: label 1 when it is the personalized one); rows where both or
  neither forced mode is correct carry no preference and are left out (counted in ``summary.json``). Expected
  calibration error ``ECE = sum_b (n_b / N) * |rate_b - mean sigma_b|`` over non-empty bins.
- ``tables/oracle_gap.{md,csv}`` (labels with free and both forced decodings): per cell, free accuracy, the upper
  bound (correct in either forced mode), and the free-wrong rows split into exactly one of: ``lost_in_both``
  (both forced modes wrong), ``lost_to_unknown_mode`` (free response opens no mode, a forced mode is right),
  ``lost_to_mode_choice`` (free chose mode m, forced m wrong, the other right), ``lost_other`` (forced m right
  yet the free response wrong: sampling noise); ``free + the four = 100``. With sigma: ``argmax_sigma`` = accuracy
  of the forced response of sigma's argmax mode (the constrained greedy choice), ``expected_sigma`` = accuracy
  expected when the mode is drawn from sigma. All in % of the cell's rows.
- ``tables/constrained.{md,csv}`` (runs with ``--decoding free_constrained``): free vs constrained accuracy, the
  free unknown-mode rate, and how often the two chose different modes.
- ``plots/calibration.png`` (reliability diagram, ECE in the legend), ``plots/sigma_distribution.png`` (box plot of
  sigma per cell and label), ``plots/oracle_gap.png`` (stacked bars, % of rows); ``summary.json``.

Decoding ``free_constrained`` (``eval run --decoding free_constrained``) samples the first token only among the
mode prefixes: greedy takes sigma's argmax; with ``--temperature T > 0`` personalized is drawn with probability
``sigmoid((log σ(p) - log σ(g)) / T)`` (σ renormalised over the two, tempered) from the request's seed; the
response is then generated after that prefix, as in forced decoding (:func:`choose_modes`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.data.eval_sets import EvalRow, read_eval_set
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.baselines import PromptStyle, build_messages
from verl_personadual.eval.generate import (
    BACKENDS,
    Decoding,
    DecodingParams,
    Generator,
    make_generator,
    prompt_ids,
)
from verl_personadual.eval.mode_choice import mode_logprobs
from verl_personadual.eval.plots import (
    PCT,
    BarSeries,
    hbar_figure,
    no_data,
    pyplot,
    save_figure,
    write_table,
)
from verl_personadual.eval.pools import (
    FinishedRun,
    cell_sort_key,
    outcomes,
    parse_labelled,
    pin_config,
    read_run,
)
from verl_personadual.eval.store import PredictionStore, read_predictions
from verl_personadual.utils.atomic import write_json
from verl_personadual.utils.cli import count, existing_file, torch_device, torch_dtype
from verl_personadual.utils.fingerprint import model_identity

__all__ = [
    "ModeProb",
    "Calibration",
    "compute",
    "score_rows",
    "mode_logprobs",
    "calibration",
    "oracle_gap",
    "summary",
    "add_parser",
    "command",
]

logger = logging.getLogger(__name__)

#: ``decoding`` field of the records in ``mode_probs_<label>.jsonl`` (their store key is (row_id, this)).
RECORD_KIND = "mode_probs"
ALL = "all"


@dataclass(frozen=True)
class ModeProb:
    """σ of both modes for one row (module docstring); log-probabilities are natural logs."""

    row_id: str
    logp_general: float
    logp_personalized: float

    @property
    def p_general(self) -> float:
        return math.exp(self.logp_general)

    @property
    def p_personalized(self) -> float:
        return math.exp(self.logp_personalized)

    @property
    def mode_mass(self) -> float:
        """σ(general) + σ(personalized) (<= 1)."""
        return self.p_general + self.p_personalized

    @property
    def sigma(self) -> float:
        """σ(personalized) renormalised over the two modes, computed stably from the log-probabilities."""
        return 1.0 / (1.0 + math.exp(self.logp_general - self.logp_personalized))

    @property
    def argmax(self) -> Mode:
        return Mode.PERSONALIZED if self.logp_personalized > self.logp_general else Mode.GENERAL

    def record(self, row: EvalRow) -> dict[str, Any]:
        return {
            "row_id": self.row_id,
            "decoding": RECORD_KIND,
            "benchmark": row.benchmark,
            "task": row.task,
            "setting": row.setting,
            "logp_general": self.logp_general,
            "logp_personalized": self.logp_personalized,
            "p_general": self.p_general,
            "p_personalized": self.p_personalized,
            "mode_mass": self.mode_mass,
            "sigma": self.sigma,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "ModeProb":
        return cls(str(rec["row_id"]), float(rec["logp_general"]), float(rec["logp_personalized"]))


# --- log-probabilities of the two prefixes ---------------------------------------------------------------------


def score_rows(
    gen: Generator,
    rows: Sequence[EvalRow],
    prompt_style: PromptStyle = PromptStyle.PERSONA,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    store: PredictionStore | None = None,
    progress: bool = False,
) -> list[ModeProb]:
    """σ of every row, in row order. With ``store`` (a ``mode_probs_<label>.jsonl``), rows already in it are read
    back instead of computed and new ones are appended per batch (so a killed computation resumes)."""
    prefixes = resolve_prefixes(gen.tokenizer)
    kwargs = dict(chat_template_kwargs or {})
    done: dict[str, ModeProb] = {}
    if store is not None:
        done = {r["row_id"]: ModeProb.from_record(r) for r in read_predictions(store.path)}
    todo = [r for r in rows if r.row_id not in done]
    with tqdm(total=len(todo), desc="mode probs", unit="row", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [prompt_ids(gen.tokenizer, build_messages(r, prompt_style), kwargs) for r in batch]
            probs = [
                ModeProb(r.row_id, lg, lp)
                for r, (lg, lp) in zip(batch, mode_logprobs(gen, prompts, prefixes, batch_size))
            ]
            if store is not None:
                store.append(p.record(r) for p, r in zip(probs, batch))
            done.update((p.row_id, p) for p in probs)
            bar.update(len(batch))
    return [done[r.row_id] for r in rows]


def compute(
    model_path: str | Path,
    rows: Sequence[EvalRow],
    *,
    prompt_style: PromptStyle | str = PromptStyle.PERSONA,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    backend: str = "hf",
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int = 16,
    engine_kwargs: Mapping[str, Any] | None = None,
    out_file: Path | None = None,
    progress: bool = False,
) -> list[ModeProb]:
    """σ of every row for the checkpoint at ``model_path`` (the entry point for scripts such as the quickstart).

    Args:
        rows: eval rows (``personas.read_eval_set``); prompts are built as ``eval run`` builds them.
        backend: ``hf`` (default; ``device`` default cuda if available, else cpu), ``vllm`` or ``auto``.
        out_file: optional ``mode_probs_<label>.jsonl`` to append to and resume from.
    Returns:
        One :class:`ModeProb` per row, in row order.
    """
    gen = make_generator(backend, str(model_path), DecodingParams(), device, dtype, engine_kwargs)
    store = PredictionStore(out_file) if out_file is not None else None
    return score_rows(gen, rows, PromptStyle(prompt_style), chat_template_kwargs, batch_size, store, progress)


# --- analyses ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Reliability of sigma against "personalized was the better mode" (module docstring).

    ``bins``: per bin ``(lo, hi, items, mean sigma, empirical rate)``; empty bins have items 0 and None values."""

    bins: list[tuple[float, float, int, float | None, float | None]]
    ece: float | None
    decisive: int
    ties: int


def calibration(probs: Sequence[ModeProb], records: Sequence[Mapping[str, Any]], bins: int = 10) -> Calibration:
    """Calibration of ``probs`` against the forced-decoding ``records`` of the same rows (module docstring)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    forced = outcomes(records)
    pairs: list[tuple[float, float]] = []
    ties = 0
    for p in probs:
        if p.row_id not in forced:
            continue
        g, q = forced[p.row_id]
        if g == q:
            ties += 1
        else:
            pairs.append((p.sigma, 1.0 if q > g else 0.0))
    groups: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for s, y in pairs:
        groups[min(int(s * bins), bins - 1)].append((s, y))
    table = []
    ece = 0.0
    for b, group in enumerate(groups):
        lo, hi = b / bins, (b + 1) / bins
        if not group:
            table.append((lo, hi, 0, None, None))
            continue
        conf = statistics.fmean(s for s, _ in group)
        rate = statistics.fmean(y for _, y in group)
        ece += len(group) / len(pairs) * abs(rate - conf)
        table.append((lo, hi, len(group), conf, rate))
    return Calibration(table, ece if pairs else None, len(pairs), ties)


GAP_COLUMNS = ("free", "upper_bound", "lost_to_mode_choice", "lost_to_unknown_mode", "lost_in_both", "lost_other")
SIGMA_COLUMNS = ("argmax_sigma", "expected_sigma")


def oracle_gap(
    records: Sequence[Mapping[str, Any]], probs: Sequence[ModeProb] | None = None, free: str = Decoding.FREE.value
) -> dict[tuple[str, str], dict[str, float]]:
    """Oracle-gap accounting (module docstring) per (benchmark, setting) and overall (``("all", "all")``): items
    and every column of :data:`GAP_COLUMNS` (plus :data:`SIGMA_COLUMNS` with ``probs``) in % of rows. Rows need a
    ``free`` record and both forced ones (others are left out)."""
    forced = outcomes(records)
    sig = {p.row_id: p for p in probs or ()}
    groups: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for r in records:
        if r["decoding"] != free or r["row_id"] not in forced:
            continue
        if probs is not None and r["row_id"] not in sig:
            continue
        g, q = forced[r["row_id"]]
        right = float(r["correct"]) > 0
        both_wrong = g == 0 and q == 0
        chosen = {"general": g, "personalized": q}.get(r["mode"])
        row = {
            "free": float(right),
            "upper_bound": float(max(g, q)),
            "lost_in_both": float(not right and both_wrong),
            "lost_to_unknown_mode": float(not right and not both_wrong and chosen is None),
            "lost_to_mode_choice": float(not right and not both_wrong and chosen == 0),
            "lost_other": float(not right and not both_wrong and chosen is not None and chosen > 0),
        }
        if probs is not None:
            s = sig[r["row_id"]]
            row["argmax_sigma"] = q if s.argmax is Mode.PERSONALIZED else g
            row["expected_sigma"] = s.sigma * q + (1 - s.sigma) * g
        groups[(r["benchmark"], r["setting"])].append(row)
        groups[(ALL, ALL)].append(row)
    return {
        cell: {"items": float(len(rows)), **{k: 100.0 * statistics.fmean(x[k] for x in rows) for k in rows[0]}}
        for cell, rows in groups.items()
    }


def _cells(rows: Sequence[EvalRow]) -> list[tuple[str, str]]:
    return sorted({(r.benchmark, r.setting) for r in rows}, key=lambda c: cell_sort_key(*c))


def sigma_table(
    results: Mapping[str, tuple[Sequence[EvalRow], Sequence[ModeProb]]],
) -> tuple[list[str], list[list[Any]]]:
    header = [
        "label",
        "benchmark",
        "setting",
        "items",
        "sigma_mean",
        "sigma_median",
        f"argmax_personalized{PCT}",
        "mode_mass_mean",
    ]
    lines = []
    for label, (rows, probs) in results.items():
        by_cell: dict[tuple[str, str], list[ModeProb]] = defaultdict(list)
        for r, p in zip(rows, probs):
            by_cell[(r.benchmark, r.setting)].append(p)
            by_cell[(ALL, ALL)].append(p)
        for cell in _cells(rows) + [(ALL, ALL)]:
            ps = by_cell[cell]
            lines.append(
                [
                    label,
                    *cell,
                    len(ps),
                    statistics.fmean(p.sigma for p in ps),
                    statistics.median(p.sigma for p in ps),
                    100.0 * statistics.fmean(float(p.argmax is Mode.PERSONALIZED) for p in ps),
                    statistics.fmean(p.mode_mass for p in ps),
                ]
            )
    return header, lines


def sigma_shift(
    results: Mapping[str, tuple[Sequence[EvalRow], Sequence[ModeProb]]],
) -> tuple[list[str], list[list[Any]]]:
    """Mean sigma of the first and the last label per cell on their common rows, and last - first."""
    (first, (rows_a, probs_a)), (last, (_, probs_b)) = list(results.items())[0], list(results.items())[-1]
    b = {p.row_id: p for p in probs_b}
    by_cell: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r, p in zip(rows_a, probs_a):
        if r.row_id in b:
            by_cell[(r.benchmark, r.setting)].append((p.sigma, b[r.row_id].sigma))
            by_cell[(ALL, ALL)].append((p.sigma, b[r.row_id].sigma))
    header = ["benchmark", "setting", "items", f"sigma_{first}", f"sigma_{last}", "delta"]
    lines = []
    for cell in sorted((c for c in by_cell if c != (ALL, ALL)), key=lambda c: cell_sort_key(*c)) + [(ALL, ALL)]:
        pairs = by_cell.get(cell)
        if pairs:
            ma, mb = statistics.fmean(x for x, _ in pairs), statistics.fmean(y for _, y in pairs)
            lines.append([*cell, len(pairs), ma, mb, mb - ma])
    return header, lines


def constrained_table(run: FinishedRun) -> tuple[list[str], list[list[Any]]]:
    """Free vs ``free_constrained`` per cell of one run (rows evaluated in both)."""
    free, cons = run.by_decoding(Decoding.FREE.value), run.by_decoding(Decoding.FREE_CONSTRAINED.value)
    by_cell: dict[tuple[str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = defaultdict(list)
    for row_id in free.keys() & cons.keys():
        f = free[row_id]
        by_cell[(f["benchmark"], f["setting"])].append((f, cons[row_id]))
        by_cell[(ALL, ALL)].append((f, cons[row_id]))
    header = [
        "benchmark",
        "setting",
        "items",
        f"free{PCT}",
        f"free_constrained{PCT}",
        f"free_unknown_mode{PCT}",
        f"mode_differs{PCT}",
    ]
    lines = []
    for cell in sorted((c for c in by_cell if c != (ALL, ALL)), key=lambda c: cell_sort_key(*c)) + [(ALL, ALL)]:
        pairs = by_cell.get(cell)
        if pairs:
            lines.append(
                [*cell, len(pairs)]
                + [
                    100.0 * statistics.fmean(v)
                    for v in (
                        [float(f["correct"]) for f, _ in pairs],
                        [float(c["correct"]) for _, c in pairs],
                        [float(f["mode"] == "unknown") for f, _ in pairs],
                        [float(f["mode"] != c["mode"]) for f, c in pairs],
                    )
                ]
            )
    return header, lines


def summary(probs: Sequence[ModeProb], records: Sequence[Mapping[str, Any]], bins: int = 10) -> dict[str, Any]:
    """Headline numbers of one model (for logs and the quickstart): rows, mean sigma and mode mass, ECE with its
    decisive / tie counts, and the overall oracle-gap line (% of rows; empty without free + forced records)."""
    cal = calibration(probs, records, bins)
    gap = oracle_gap(records, probs).get((ALL, ALL), {})
    return {
        "rows": len(probs),
        "sigma_mean": statistics.fmean(p.sigma for p in probs) if probs else None,
        "mode_mass_mean": statistics.fmean(p.mode_mass for p in probs) if probs else None,
        "ece": cal.ece,
        "decisive_rows": cal.decisive,
        "tie_rows": cal.ties,
        "oracle_gap": gap,
    }


# --- plots ------------------------------------------------------------------------------------------------------

_LABEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def calibration_figure(cals: Mapping[str, Calibration]) -> Any:
    """Reliability diagram: mean sigma per bin (x, 0-1) vs empirical "personalized better" rate (y, 0-1)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="tab:gray", linestyle="--", linewidth=1, label="perfect calibration")
    drawn = False
    for k, (label, cal) in enumerate(cals.items()):
        pts = [(conf, rate, n) for _, _, n, conf, rate in cal.bins if n]
        if not pts:
            continue
        drawn = True
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            color=_LABEL_COLORS[k % len(_LABEL_COLORS)],
            label=f"{label} (ECE {cal.ece:.3f}, {cal.decisive} decisive rows)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("σ(personalized), renormalised over the two modes (bin mean)")
    ax.set_ylabel("rate: personalized mode was the better one")
    ax.set_title("Mode-choice calibration")
    if drawn:
        ax.legend(fontsize=7, loc="upper left")
    else:
        no_data(ax, "no row where exactly one forced mode is correct")
    return fig


def sigma_figure(results: Mapping[str, tuple[Sequence[EvalRow], Sequence[ModeProb]]]) -> Any:
    """Box plot of sigma (y, 0-1) per benchmark/setting cell (x), one box per label."""
    plt = pyplot()
    cells = sorted(
        {(r.benchmark, r.setting) for rows, _ in results.values() for r in rows}, key=lambda c: cell_sort_key(*c)
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 0.7 * len(cells) * max(len(results), 1)), 4.5))
    width = 0.8 / max(len(results), 1)
    for k, (label, (rows, probs)) in enumerate(results.items()):
        by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r, p in zip(rows, probs):
            by_cell[(r.benchmark, r.setting)].append(p.sigma)
        pos = [i + (k - (len(results) - 1) / 2) * width for i, c in enumerate(cells) if by_cell.get(c)]
        data = [by_cell[c] for c in cells if by_cell.get(c)]
        color = _LABEL_COLORS[k % len(_LABEL_COLORS)]
        if data:
            ax.boxplot(
                data,
                positions=pos,
                widths=width * 0.85,
                patch_artist=True,
                manage_ticks=False,
                boxprops={"facecolor": color, "alpha": 0.6},
                medianprops={"color": "black"},
                flierprops={"markersize": 2},
            )
            ax.plot([], [], color=color, linewidth=6, alpha=0.6, label=label)
    ax.set_xticks(range(len(cells)), [f"{b}/{s}" for b, s in cells], fontsize=8, rotation=30, ha="right")
    ax.set_xlim(-0.6, max(len(cells), 1) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("σ(personalized | q, p), renormalised", fontsize=9)
    ax.set_title("Mode-choice probability per benchmark and persona setting", fontsize=10)
    if cells:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        no_data(ax, "no rows")
    return fig


_GAP_PARTS = (
    ("free", "correct (free)", "tab:green"),
    ("lost_to_mode_choice", "lost to mode choice", "tab:orange"),
    ("lost_to_unknown_mode", "lost to unknown mode", "tab:gray"),
    ("lost_other", "lost otherwise", "tab:purple"),
    ("lost_in_both", "lost in both modes", "tab:red"),
)


def oracle_gap_figure(gaps: Mapping[str, Mapping[tuple[str, str], Mapping[str, float]]]) -> Any:
    """Stacked bars (0-100 % of rows) per label and cell: free correct + the four loss kinds."""
    lines = [
        (label, cell, vals)
        for label, g in gaps.items()
        for cell, vals in sorted(g.items(), key=lambda kv: (kv[0] == (ALL, ALL), cell_sort_key(*kv[0])))
    ]
    names = [f"{label}: {b}/{s}" for label, (b, s), _ in lines]
    series = [BarSeries(text, [v[key] for _, _, v in lines], color) for key, text, color in _GAP_PARTS]
    return hbar_figure(
        names,
        series,
        stacked=True,
        xlabel="% of rows",
        title="Oracle-gap accounting (free decoding vs both forced modes)",
        empty="needs a run with free, general and personalized decodings",
    )


# --- command ----------------------------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mode-probs",
        help="mode-choice probability σ(m | q, p): calibration, distribution, oracle gap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL=DIR",
        help="a finished `eval run` directory (its eval set, prompt style, checkpoint and forced results); "
        "repeatable, in order (e.g. sft=runs/sft rl=runs/rl: sigma_shift compares first and last)",
    )
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL=PATH",
        help="checkpoint of a label (overrides its run's model); a label with no --run needs --eval-set",
    )
    p.add_argument(
        "--eval-set", type=existing_file, help="eval_set.jsonl for --model labels without a run (no calibration)"
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (re-use it to resume)")
    p.add_argument("--bins", type=count, default=10, help="calibration bins (default 10)")
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="auto: vLLM on GPU if installed, else transformers"
    )
    p.add_argument("--device", type=torch_device, help="transformers device (default cuda if available, else cpu)")
    p.add_argument("--dtype", type=torch_dtype, default="auto", help="transformers dtype: auto, bfloat16, float32, ...")
    p.add_argument("--batch-size", type=count, default=16, help="sequences per forward pass (default 16)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON for vllm.LLM, e.g. '{\"tensor_parallel_size\": 2}'")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=command)


def command(a: argparse.Namespace) -> list[Path]:
    """Run ``mode-probs`` (module docstring); returns the written paths."""
    runs = {label: read_run(Path(d)) for label, d in parse_labelled(a.run, "--run").items()}
    models = parse_labelled(a.model, "--model")
    labels = list(runs) + [m for m in models if m not in runs]
    if not labels:
        raise PreflightError("mode-probs needs at least one --run LABEL=DIR or --model LABEL=PATH")
    loose = [m for m in models if m not in runs]
    if loose and a.eval_set is None:
        raise PreflightError(f"--model {loose[0]}=... has no --run: give --eval-set for its rows")
    out = Path(a.out)
    results: dict[str, tuple[list[EvalRow], list[ModeProb]]] = {}
    for label in labels:
        run = runs.get(label)
        model = models.get(label) or (run.config.get("model") if run else None)
        if not model:
            raise PreflightError(
                f"label {label!r}: {run.path if run else ''}/run_config.json names no model; give --model {label}=PATH"
            )
        rows = run.rows if run else read_eval_set(a.eval_set)
        cfg = run.config if run else {}
        style, ctk = cfg.get("prompt_style", PromptStyle.PERSONA.value), cfg.get("chat_template_kwargs") or {}
        out.mkdir(parents=True, exist_ok=True)
        pin_config(
            out / f"mode_probs_{label}.config.json",
            {**model_identity(model), "prompt_style": style, "chat_template_kwargs": ctk},
        )
        logger.info("%s: sigma of %d rows with %s", label, len(rows), model)
        probs = compute(
            model,
            rows,
            prompt_style=style,
            chat_template_kwargs=ctk,
            backend=a.backend,
            device=a.device,
            dtype=a.dtype,
            batch_size=a.batch_size,
            engine_kwargs=json.loads(a.engine_kwargs),
            out_file=out / f"mode_probs_{label}.jsonl",
            progress=not a.no_progress,
        )
        results[label] = (rows, probs)
    return write_outputs(out, results, runs, a.bins)


def write_outputs(
    out: Path,
    results: Mapping[str, tuple[Sequence[EvalRow], Sequence[ModeProb]]],
    runs: Mapping[str, FinishedRun],
    bins: int = 10,
) -> list[Path]:
    """Every table, plot and ``summary.json`` of the command from computed sigma (module docstring)."""
    plt = pyplot()
    tables, plots = out / "tables", out / "plots"
    written = write_table(tables, "sigma", sigma_table(results))
    if len(results) > 1:
        written += write_table(tables, "sigma_shift", sigma_shift(results))
    cals: dict[str, Calibration] = {}
    gaps: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    summaries = {}
    cons_lines: list[list[Any]] = []
    cons_header: list[str] = []
    for label, (_, probs) in results.items():
        run = runs.get(label)
        records = run.records if run else []
        summaries[label] = summary(probs, records, bins)
        if outcomes(records):
            cals[label] = calibration(probs, records, bins)
        gap = oracle_gap(records, probs)
        if gap:
            gaps[label] = gap
        if run and {Decoding.FREE.value, Decoding.FREE_CONSTRAINED.value} <= set(run.decodings):
            cons_header, lines = constrained_table(run)
            cons_lines += [[label, *line] for line in lines]
    if cals:
        header = ["label", "bin_lo", "bin_hi", "items", "sigma_mean", "personalized_better_rate"]
        lines = [[label, lo, hi, n, conf, rate] for label, cal in cals.items() for lo, hi, n, conf, rate in cal.bins]
        lines += [[label, "ECE", "", cal.decisive, None, cal.ece] for label, cal in cals.items()]
        written += write_table(tables, "calibration", (header, lines))
    if gaps:
        cols = list(GAP_COLUMNS) + list(SIGMA_COLUMNS)
        header = ["label", "benchmark", "setting", "items"] + [f"{c}{PCT}" for c in cols]
        lines = [
            [label, *cell, int(v["items"])] + [v[c] for c in cols]
            for label, g in gaps.items()
            for cell, v in sorted(g.items(), key=lambda kv: (kv[0] == (ALL, ALL), cell_sort_key(*kv[0])))
        ]
        written += write_table(tables, "oracle_gap", (header, lines))
    if cons_lines:
        written += write_table(tables, "constrained", (["label", *cons_header], cons_lines))
    for name, fig in (
        ("calibration", calibration_figure(cals)),
        ("sigma_distribution", sigma_figure(results)),
        ("oracle_gap", oracle_gap_figure(gaps)),
    ):
        written.append(save_figure(fig, plots / f"{name}.png"))
        plt.close(fig)
    written.append(write_json(out / "summary.json", summaries, sort_keys=True))
    return written
