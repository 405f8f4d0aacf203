"""RQ5, lexical analysis (the paper's Figure 5): which input words predict the mode the model chooses?

    python -m verl_personadual.eval lexical --run runs/rl --out runs/rl_lexical

Data: the rows of a finished run with the mode the model chose in ``--decoding`` (default ``free``; rows whose
response opens no mode are left out and counted), a seeded sample of ``--sample`` of them (paper: 2,500; all when
fewer), drawn with ``random.Random(seed).sample`` over the rows in eval-set order.

Features: the words of ``--text`` (``persona``, ``question`` or ``both``, default: persona then question; the
fixed prompt template is left out, it is the same in every row) as binary indicators (scikit-learn's
``CountVectorizer(binary=True, lowercase=True)``, words of two characters or more, kept when they occur in at least
``--min-rows`` sampled rows). Model: scikit-learn ``LogisticRegression`` (L2, ``C=--C``, lbfgs, seeded), label 1 =
personalized. A positive weight pushes towards the personalized mode.

Outputs under ``--out``: ``tables/lexical.{md,csv}`` (the ``--top`` words with the largest absolute weight:
rank, word, weight, direction, rows containing it, % of those rows where personalized was chosen),
``plots/lexical.png`` (signed bar chart) and ``lexical_summary.json`` (rows used / left out, class counts,
vocabulary size, training accuracy, 5-fold cross-validated accuracy when each class has 5 rows or more).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.data.preflight import PreflightError
from verl_personadual.eval.generate import Decoding
from verl_personadual.eval.plots import PCT, BarSeries, hbar_figure, pyplot, save_figure, write_table
from verl_personadual.eval.pools import read_run
from verl_personadual.utils.atomic import write_json
from verl_personadual.utils.cli import count, non_negative, positive

__all__ = ["TEXTS", "LexicalResult", "row_text", "fit", "add_parser", "command"]

TEXTS = ("both", "persona", "question")
#: Words of two characters or more (scikit-learn's default token pattern).
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def row_text(row: EvalRow, text: str = "both") -> str:
    """The text a row contributes (module docstring)."""
    if text not in TEXTS:
        raise ValueError(f"text must be one of {TEXTS}, got {text!r}")
    parts = ([row.persona or ""] if text in ("both", "persona") else []) + (
        [row.question] if text in ("both", "question") else []
    )
    return "\n".join(parts)


@dataclass(frozen=True)
class LexicalResult:
    """The fitted model's words with weights (vocabulary order), and its summary."""

    words: list[str]
    weights: list[float]
    rows_with: list[int]
    personalized_with: list[int]
    summary: dict[str, Any]

    def top(self, k: int) -> list[tuple[str, float, int, int]]:
        """The ``k`` words with the largest |weight| (ties by word), as (word, weight, rows with, personalized)."""
        order = sorted(range(len(self.words)), key=lambda i: (-abs(self.weights[i]), self.words[i]))[:k]
        return [(self.words[i], self.weights[i], self.rows_with[i], self.personalized_with[i]) for i in order]


def fit(
    rows: Sequence[EvalRow],
    modes: Mapping[str, str],
    sample: int = 2500,
    seed: int = 0,
    text: str = "both",
    min_rows: int = 2,
    c: float = 1.0,
) -> LexicalResult:
    """Fit the regression (module docstring) on ``rows`` whose ``modes[row_id]`` is general or personalized.

    Raises PreflightError when the sample holds only one mode (nothing to predict) or no word survives ``min_rows``."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    known = [r for r in rows if modes.get(r.row_id) in ("general", "personalized")]
    picked = (
        known
        if sample >= len(known)
        else [known[i] for i in sorted(random.Random(seed).sample(range(len(known)), sample))]
    )
    y = np.array([int(modes[r.row_id] == "personalized") for r in picked])
    if len(set(y.tolist())) < 2:
        raise PreflightError(
            f"the {len(picked)} sampled rows all chose one mode ({modes[picked[0].row_id] if picked else 'none'}): "
            "nothing to predict"
        )
    vec = CountVectorizer(binary=True, lowercase=True, token_pattern=TOKEN_PATTERN, min_df=min_rows)
    try:
        x = vec.fit_transform([row_text(r, text) for r in picked])
    except ValueError:
        raise PreflightError(
            f"no word occurs in {min_rows} or more of the {len(picked)} sampled rows; lower --min-rows"
        ) from None
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x, y)
    folds = min(5, int(y.sum()), int(len(y) - y.sum()))
    cv = None
    if folds >= 5:
        cv = float(
            cross_val_score(
                LogisticRegression(C=c, max_iter=5000, random_state=seed),
                x,
                y,
                cv=StratifiedKFold(5, shuffle=True, random_state=seed),
            ).mean()
        )
    with_word = np.asarray(x.sum(axis=0)).ravel()
    pers_with = np.asarray(x[y == 1].sum(axis=0)).ravel()
    summary = {
        "rows_with_mode": len(known),
        "rows_unknown_mode": len(rows) - len(known),
        "rows_used": len(picked),
        "personalized": int(y.sum()),
        "general": int(len(y) - y.sum()),
        "vocabulary": int(x.shape[1]),
        "train_accuracy": float(model.score(x, y)),
        "cv5_accuracy": cv,
        "text": text,
        "sample": sample,
        "seed": seed,
        "min_rows": min_rows,
        "C": c,
    }
    return LexicalResult(
        list(vec.get_feature_names_out()),
        [float(w) for w in model.coef_[0]],
        [int(v) for v in with_word],
        [int(v) for v in pers_with],
        summary,
    )


def table(result: LexicalResult, k: int) -> tuple[list[str], list[list[Any]]]:
    header = ["rank", "word", "weight", "direction", "rows_with_word", f"personalized_when_present{PCT}"]
    return header, [
        [i + 1, w, wt, "personalized" if wt > 0 else "general", n, 100.0 * p / n]
        for i, (w, wt, n, p) in enumerate(result.top(k))
    ]


def figure(result: LexicalResult, k: int) -> Any:
    """Signed horizontal bars of the top-k weights (positive: towards personalized), largest |weight| on top."""
    top = result.top(k)
    bound = max([abs(wt) for _, wt, _, _ in top] + [1e-9]) * 1.1
    series = [
        BarSeries(label, [wt if (wt > 0) == positive else None for _, wt, _, _ in top], color)
        for label, positive, color in (
            ("towards personalized", True, "tab:orange"),
            ("towards general", False, "tab:blue"),
        )
    ]
    fig = hbar_figure(
        [w for w, _, _, _ in top],
        series,
        xlim=(-bound, bound),
        width=6,
        row_height=0.25,
        legend_outside=False,
        empty="no words",
        xlabel="logistic-regression weight (log-odds of personalized; > 0: towards personalized)",
        title=f"Top {len(top)} words predicting the chosen mode ({result.summary['rows_used']} rows)",
    )
    fig.axes[0].axvline(0, color="black", linewidth=0.8)
    return fig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lexical",
        help="RQ5: logistic regression of the chosen mode on input words (Figure 5)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, type=Path, help="finished `eval run` directory")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--decoding",
        default=Decoding.FREE.value,
        choices=[Decoding.FREE.value, Decoding.FREE_CONSTRAINED.value, Decoding.ROUTER.value],
        help="whose mode choice to explain (default free)",
    )
    p.add_argument("--sample", type=count, default=2500, help="rows sampled (default 2500, the paper's; all if fewer)")
    p.add_argument("--seed", type=non_negative, default=0, help="sampling and solver seed (default 0)")
    p.add_argument(
        "--text", default="both", choices=TEXTS, help="words of the persona, the question, or both (default)"
    )
    p.add_argument("--top", type=count, default=30, help="words reported (default 30)")
    p.add_argument("--min-rows", type=count, default=2, help="keep words found in at least this many rows (default 2)")
    p.add_argument("--C", dest="c", type=positive, default=1.0, help="inverse L2 strength (default 1.0)")
    p.set_defaults(func=command)


def command(a: argparse.Namespace) -> list[Path]:
    """Run ``lexical`` (module docstring); returns the written paths."""
    run = read_run(a.run, need=[a.decoding])
    modes = {k: str(r["mode"]) for k, r in run.by_decoding(a.decoding).items()}
    result = fit(run.rows, modes, a.sample, a.seed, a.text, a.min_rows, a.c)
    out = Path(a.out)
    written = write_table(out / "tables", "lexical", table(result, a.top))
    plt = pyplot()
    fig = figure(result, a.top)
    written.append(save_figure(fig, out / "plots" / "lexical.png"))
    plt.close(fig)
    path = out / "lexical_summary.json"
    write_json(path, {**result.summary, "decoding": a.decoding, "run": str(a.run)}, sort_keys=True)
    return written + [path]
