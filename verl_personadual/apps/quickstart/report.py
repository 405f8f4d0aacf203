"""The quickstart's figures, recomputed from files alone: the eval harness's ``predictions.jsonl``, the mode
probabilities of ``eval mode-probs`` (``mode_probs.jsonl``) and verl's own metrics log (file logger JSONL).

Definitions (all on the held-out toy eval rows of one checkpoint):

- *decisive* row: exactly one forced mode is correct (forced general vs forced personalized decoding); its
  *better mode* is that one. Rows where both or neither forced mode is right carry no preference.
- ``selection_acc``: share of decisive rows whose free (greedy) response opened the better mode.
- ``p_better``: mean over decisive rows of P(better mode's token | prompt), not renormalised over the two modes
  (the stricter figure: mass lost to other tokens counts against it).
- ``free_acc``: share of rows the free response gets right; ``upper_bound``: share right in at least one forced
  mode; ``free_over_upper`` = free_acc / upper_bound.
- ``unknown_rate``: share of free responses that open no mode; ``mode_mass``: mean P(general) + P(personalized).

One target is read from verl's metrics log instead (:func:`collapse_missed`): no mode collapse after step 0.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.core.metrics import MODE_COLLAPSE_METRIC, MODE_MASS_METRIC
from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import PersonaSetting
from verl_personadual.eval.generate import Decoding
from verl_personadual.utils.atomic import atomic_write_text

__all__ = [
    "TARGETS",
    "COLLAPSE_KEY",
    "COLLAPSE_TARGET",
    "collapse_missed",
    "fmt",
    "selection_line",
    "summarize",
    "read_jsonl",
    "metric_curves",
    "CURVES",
    "targets_met",
    "write_report",
]

#: What the quickstart's default run must reach after RL (issue "the main job shows the method working").
#: P(better mode) starts at 0.497 after SFT; measured after RL: 0.710-0.759 in the runs the README quotes, the lowest
#: on a loaded 2-core CI machine, so the bound is 0.65 (still +0.15 over SFT), not 0.7, which such a run nearly missed.
TARGETS: dict[str, tuple[str, float]] = {
    "selection_acc": (">=", 0.9),
    "p_better": (">=", 0.65),
    "free_over_upper": (">=", 0.95),
    "unknown_rate": ("<=", 0.0),
}
#: Decoding (and recorded mode) name -> mode: the names of ``eval.generate.Decoding`` / ``eval.run`` records.
_MODE_OF_DECODING = {Decoding.GENERAL.value: Mode.GENERAL, Decoding.PERSONALIZED.value: Mode.PERSONALIZED}
SETTINGS: tuple[str, ...] = tuple(s.value for s in PersonaSetting)
#: Curves of the report: (title, metric key template with {setting}, y label).
CURVES: tuple[tuple[str, str, str], ...] = (
    ("free validation: personalized rate", "personadual/val/toy/{setting}/personalized_rate", "share of responses"),
    ("training reward, forced general", "personadual/train/toy/{setting}/reward_general", "mean reward"),
    ("training reward, forced personalized", "personadual/train/toy/{setting}/reward_personalized", "mean reward"),
)
MASS_KEY = MODE_MASS_METRIC
#: The RL run's validation metric of the collapse target (1.0: free validation picked one mode on >= 95 % of the rows
#: of every persona setting, ``core.metrics.collapsed_mode``). Step 0 validates the SFT checkpoint, which is allowed
#: to collapse: the quickstart's does (1.0 at step 0, 0.0 at steps 4, 8 and 12 in the fresh-clone CI runs).
COLLAPSE_KEY = MODE_COLLAPSE_METRIC
COLLAPSE_TARGET = "0 at every validation step after step 0"
SCORE_KEY = "critic/score/mean"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSONL file such as verl's metrics log (the eval files have their own reader,
    ``eval.store.read_predictions``); a malformed line is a ValueError naming the file and line."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not JSON ({err.msg})") from None
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def selection_line(run: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The quickstart's last line: mode-selection accuracy of the SFT checkpoint (``before``) and of RL run
    ``run`` (``after``), each over its own decisive held-out rows (which rows are decisive depends on the
    checkpoint's forced-mode answers)."""
    return (
        f"mode-selection accuracy: before {fmt(before['selection_acc'])} after {fmt(after['selection_acc'])} "
        f"(run {run}; decisive held-out rows: {before['decisive']} before, {after['decisive']} after)"
    )


def summarize(predictions: Iterable[Mapping[str, Any]], mode_probs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The figures of the module docstring from prediction records (decodings free, general, personalized) and
    mode-probability records (``p_general``, ``p_personalized`` per ``row_id``). A row missing a decoding is a
    ValueError: the figures would silently cover fewer rows."""
    by_row: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for rec in predictions:
        by_row[str(rec["row_id"])][str(rec["decoding"])] = rec
    probs = {str(r["row_id"]): r for r in mode_probs}
    needed = (Decoding.FREE.value, *_MODE_OF_DECODING)
    for row_id, decs in by_row.items():
        missing = [d for d in needed if d not in decs]
        if missing:
            raise ValueError(f"row {row_id}: no {missing} prediction (an unfinished eval run)")
    if not by_row:
        raise ValueError("no predictions")
    free_ok, upper_ok, unknown, chose_better, p_better, mass = [], [], [], [], [], []
    forced_ok: dict[Mode, list[float]] = {m: [] for m in Mode}
    per_setting: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row_id, decs in by_row.items():
        free = decs[Decoding.FREE.value]
        right = {m: bool(decs[name]["correct"]) for name, m in _MODE_OF_DECODING.items()}
        setting = str(free["setting"])
        free_ok.append(float(bool(free["correct"])))
        upper_ok.append(float(any(right.values())))
        unknown.append(float(free["mode"] not in _MODE_OF_DECODING))
        for m in Mode:
            forced_ok[m].append(float(right[m]))
        per_setting[setting]["free_acc"].append(free_ok[-1])
        per_setting[setting]["personalized_rate"].append(
            float(_MODE_OF_DECODING.get(free["mode"]) is Mode.PERSONALIZED)
        )
        prob = probs.get(row_id)
        if prob is not None:
            mass.append(float(prob["p_general"]) + float(prob["p_personalized"]))
        if right[Mode.GENERAL] != right[Mode.PERSONALIZED]:
            better = Mode.GENERAL if right[Mode.GENERAL] else Mode.PERSONALIZED
            chose_better.append(float(_MODE_OF_DECODING.get(free["mode"]) is better))
            per_setting[setting]["selection_acc"].append(chose_better[-1])
            if prob is None:
                raise ValueError(f"row {row_id}: no mode probabilities (an unfinished mode-probs run)")
            p_better.append(float(prob["p_general" if better is Mode.GENERAL else "p_personalized"]))
    free_acc, upper = _mean(free_ok), _mean(upper_ok)
    return {
        "rows": len(by_row),
        "decisive": len(chose_better),
        "selection_acc": _mean(chose_better),
        "p_better": _mean(p_better),
        "free_acc": free_acc,
        "upper_bound": upper,
        "free_over_upper": free_acc / upper if upper else None,
        "forced_general_acc": _mean(forced_ok[Mode.GENERAL]),
        "forced_personalized_acc": _mean(forced_ok[Mode.PERSONALIZED]),
        "unknown_rate": _mean(unknown),
        "mode_mass": _mean(mass),
        "by_setting": {
            s: {k: _mean(v) for k, v in sorted(per_setting[s].items())} for s in SETTINGS if s in per_setting
        },
    }


def metric_curves(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``metric key -> [(step, value), ...]`` in step order from verl's file-logger records
    (``{"step": N, "data": {key: value}}``); non-numeric and NaN values are left out."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for rec in records:
        step = int(rec["step"])
        for key, value in rec.get("data", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                curves[key].append((step, float(value)))
    return {k: sorted(v) for k, v in curves.items()}


def targets_met(summary: Mapping[str, Any]) -> dict[str, bool]:
    """Whether each figure of :data:`TARGETS` is reached (a missing figure is not)."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = summary.get(key)
        out[key] = value is not None and (value >= bound if op == ">=" else value <= bound)
    return out


def collapse_missed(curves: Mapping[str, Sequence[tuple[int, float]]]) -> str | None:
    """None when :data:`COLLAPSE_KEY` is 0 at every logged step > 0 of an RL run's ``curves`` (:func:`metric_curves`);
    else why the target is missed: the metric and the steps where it is not 0, or that the metric was logged at no
    step > 0 (e.g. ``trainer.test_freq=-1``): a run whose collapse cannot be checked does not meet the target."""
    after_start = [(step, value) for step, value in curves.get(COLLAPSE_KEY, ()) if step > 0]
    if not after_start:
        return f"{COLLAPSE_KEY} not logged at any validation step after step 0 (target {COLLAPSE_TARGET})"
    collapsed = [step for step, value in after_start if value != 0]
    if collapsed:
        steps = ", ".join(map(str, collapsed))
        return f"{COLLAPSE_KEY} not 0 at step(s) {steps}: validation collapsed onto one mode (target {COLLAPSE_TARGET})"
    return None


def fmt(value: Any) -> str:
    """A figure with 3 decimals, ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.3f}"


def _table(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols = ["selection_acc", "p_better", "free_acc", "upper_bound", "free_over_upper", "unknown_rate", "mode_mass"]
    lines = [
        "| run | " + " | ".join(cols) + " | " + " | ".join(f"free_acc {s}" for s in SETTINGS) + " |",
        "|---" * (1 + len(cols) + len(SETTINGS)) + "|",
    ]
    for label, s in runs.items():
        setting = [fmt(s["by_setting"].get(x, {}).get("free_acc")) for x in SETTINGS]
        lines.append(f"| {label} | " + " | ".join(fmt(s[c]) for c in cols) + " | " + " | ".join(setting) + " |")
    return lines


def _figure(
    runs: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Mapping[str, list[tuple[int, float]]]], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    labels = list(runs)
    for i, key in enumerate(("selection_acc", "p_better", "free_over_upper")):
        vals = [runs[l][key] or 0.0 for l in labels]
        ax.bar([j + 0.27 * (i - 1) for j in range(len(labels))], vals, width=0.27, label=key)
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of held-out rows (0-1)")
    ax.set_title("held-out toy eval: mode selection")
    ax.legend(fontsize=8)
    for ax, (title, template, ylabel) in zip((axes[0][1], axes[1][0], axes[1][1]), CURVES):
        for run, c in curves.items():
            for setting in SETTINGS:
                pts = c.get(template.format(setting=setting), [])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{run}: {setting}")
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(
    out_dir: Path,
    runs: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, Mapping[str, list[tuple[int, float]]]],
    commands: Sequence[str] = (),
) -> list[Path]:
    """``report.md``, ``report.png`` and ``summary.json`` in ``out_dir`` for ``runs`` (label -> :func:`summarize`
    output, e.g. ``sft`` then one label per RL run) and ``curves`` (RL label -> :func:`metric_curves`)."""
    out_dir = Path(out_dir)
    png = _figure(runs, curves, out_dir / "report.png")
    lines = [
        "# Quickstart: the toy persona task",
        "",
        "Held-out toy eval rows; definitions in `verl_personadual/apps/quickstart/report.py`. Targets after RL: "
        + ", ".join(f"{k} {op} {b}" for k, (op, b) in TARGETS.items())
        + f", `{COLLAPSE_KEY}` {COLLAPSE_TARGET}.",
        "",
    ]
    lines += _table(runs)
    lines += [
        "",
        "## Per persona setting (free decoding)",
        "",
        "| run | setting | free_acc | personalized_rate | selection_acc (decisive rows) |",
        "|---|---|---|---|---|",
    ]
    for label, s in runs.items():
        for setting, v in s["by_setting"].items():
            lines.append(
                f"| {label} | {setting} | {fmt(v.get('free_acc'))} | {fmt(v.get('personalized_rate'))} | "
                f"{fmt(v.get('selection_acc'))} |"
            )
    lines += ["", "## Training (verl's logged metrics)", ""]
    for run, c in curves.items():
        mass = c.get(MASS_KEY, [])
        score = c.get(SCORE_KEY, [])
        lines.append(
            f"- {run}: {len(score)} steps; reward (critic/score/mean) "
            + " -> ".join(fmt(v) for _, v in score[:1] + score[-1:])
            + "; mode-token mass "
            + " -> ".join(fmt(v) for _, v in mass[:1] + mass[-1:])
        )
    lines += ["", f"![curves]({png.name})", ""]
    if commands:
        lines += ["## Commands run", "", "```", *commands, "```", ""]
    md = out_dir / "report.md"
    atomic_write_text(md, "\n".join(lines))
    summary = out_dir / "summary.json"
    atomic_write_text(
        summary,
        json.dumps({"runs": runs, "targets": {k: list(v) for k, v in TARGETS.items()}}, indent=2, sort_keys=True)
        + "\n",
    )
    return [md, png, summary]
