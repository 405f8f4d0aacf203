"""``eval fpps-fit``: fit FPPS (layer L, probe, steering vector s_f, per-variant γ / τ) on a calibration eval set and
write the artifact that ``eval run --system fpps_h | fpps_s | fpps_m --fpps DIR`` runs (``fpps.artifact``).

Calibration set: an ``eval_set.jsonl`` (``data.eval_sets``) whose items are DISJOINT from the ones FPPS is then
evaluated on. The probe, s_f and γ / τ are fit on the model's answers to it, so evaluating on the same items leaks
them. Split a pool into two eval sets (e.g. two halves of one file) and pass the other half to ``eval run``; give it
as ``--test-eval-set`` too and the split is checked here (shared item ids: one ``error:`` line). ``eval run
--fpps`` also refuses rows whose item is in the artifact's calibration set.

Steps (every open choice is stated; the defaults are module constants):

1. Baseline answers. Every row that carries a persona (rows of setting ``none`` have no contrast and are skipped) is
   answered greedily by the base model twice, with its persona prompt and without it (``artifact.prompt_pair``:
   exactly the prompts of ``eval run --prompt-style persona`` / ``no_persona``, the ``persona`` style being the one
   the FPPS systems run), on the harness's transformers generator (``generate.HFGenerator``), read and scored as
   ``eval run`` does (``run.read_mode``, ``run.score_response``). Cached in ``generations.jsonl``
   (``store.PredictionStore``, key ``(row_id, persona | no_persona)``): a rerun generates only what is missing.
2. Contrastive groups, by family (``families.family_of`` with ``--personalized FIELD=V,...``; default: the
   personalized benchmarks; the toy task: ``task=helpful``): *factual-degraded* = general-family rows answered
   correctly without the persona and wrongly with it (probe label 1); *personalized-beneficial* =
   personalized-family rows answered correctly with the persona only (label 0). ``correct`` is the harness's 0 / 1.
3. Split by item: the sorted item ids shuffled with ``random.Random(f"fpps:{seed}")``; the first
   ``round(calib_fraction · n)`` (at least 1, at most n − 1) items form the fitting part, the rest the held-out part.
   All settings of one item fall in the same part.
4. Layer (fitting part): ``layers.select_layer`` with :data:`RRF_K`, factual ``"up"``, personalized ``"down"``,
   mean per-example Δ. The teacher-forced gold answer is ``prompts.format_answer(row.gold)`` (the JSON answer line
   every prompt asks for, e.g. ``{"answer": "B"}``) encoded without special tokens and without eos, right after the
   generation prompt: the part every correct response of a direct answerer shares (a model that reasons first writes
   other tokens before it). ``--layer`` overrides the choice; the Δ tables are computed and plotted either way.
5. Probe: ``probe.fit_probe`` (C = 1, standardised, no class weights, ``random_state = seed``) on the fitting
   part's last-persona-prompt-token states at L. Per-layer probe accuracy: one such probe per layer, fit on the
   fitting part, accuracy (p̂ ≥ 0.5 ⇒ factual-degraded) on the held-out part's group rows (NaN when it has none).
6. s_f = ``probe.steering_vector`` (not normalised) of the fitting part's response-token mean states at L, m_fact
   − m_pers. m_fact (``--fact-mean``, :data:`FACT_MEANS`): by default (``correct_without_persona``, the paper's)
   over every objective-family row answered correctly WITHOUT the persona, degraded or not, one per distinct
   persona-free prompt (an item's rows share it): its persona-free prompt + its correct persona-free response;
   ``factual_degraded`` (a deviation, kept for comparison with artifacts fit before) over the factual-degraded rows
   only. m_pers: personalized-beneficial rows' persona prompt + their correct persona response.
7. γ / τ per variant, grid search over the γ grid × the τ grid (``--grid``, :data:`GRIDS`: default ``paper``, the
   paper's γ ∈ {0, 0.2, …, 3} × τ ∈ {0.05, 0.06, …, 1} (fpps-notes.md, App. G); ``coarse`` a 4 × 20 subset for
   quick fits; ``--gammas`` / ``--taus`` replace either) on every held-out row with a persona; objective =
   mean of objective accuracy (general-family rows) and personalized accuracy (personalized-family rows), in %.
   Evaluated exactly with few generations: p̂ is read before any edit, so a row's FPPS-H response is either its
   gated one (the branch at τ = 0) or its plain persona one, a soft response depends on γ only, and FPPS-M gives
   the gated response where p̂ ≥ τ and the soft one (same γ) elsewhere; so the grid needs 2 + |γ| generations of the
   held-out rows (``steer.fpps_generate``, greedy), cached in ``grid_<digest>.jsonl`` (digest of L, probe, s_f and
   max new tokens). Ties go to the smaller γ, then the larger τ (the lesser intervention). The whole accuracy
   surface is kept: ``grid_*`` arrays of the artifact (``artifact.ARRAY_KEYS``), ``tables/grid``, ``plots/grid.png``;
   the manifest's ``variants`` holds each variant's chosen γ / τ and its held-out accuracies.
8. Writes under ``--out``: ``arrays.npz`` + ``manifest.json`` (the artifact, ``artifact.write_artifact``),
   ``tables/{delta_by_layer,probe_accuracy,grid}.{csv,md}``, ``plots/{delta_by_layer,probe_accuracy,grid}.png``.

Resuming: ``fit_config.json`` pins what the cached generations depend on (the checkpoint by
``fingerprint.model_identity``, the calibration file's SHA-256, prompt style, chat template kwargs, max new tokens,
dtype); a rerun that differs is refused (another checkpoint: one line naming both). The fitting options (``--layer``,
``--grid``, ``--gammas``, ``--taus``, ``--fact-mean``, ``--seed``, ``--calib-fraction``, ``--personalized``,
``--test-eval-set``) may change between reruns; each rerun rewrites the artifact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verl_personadual.core.modes import ModePrefixes, resolve_prefixes
from verl_personadual.core.prompts import format_answer
from verl_personadual.data.eval_sets import EvalRow, read_eval_set
from verl_personadual.data.families import GENERAL, PERSONALIZED, Selector, family_of
from verl_personadual.eval.baselines import PromptStyle
from verl_personadual.eval.fpps.artifact import (
    FppsError,
    check_checkpoint,
    check_disjoint,
    hf_generator,
    prompt_pair,
    write_artifact,
)
from verl_personadual.eval.fpps.layers import ContrastExample, LayerSelection, layer_scores, ppl_tables, select_layer
from verl_personadual.eval.fpps.probe import (
    Probe,
    fit_probe,
    last_prompt_states_by_layer,
    response_mean_states,
    steering_vector,
)
from verl_personadual.eval.fpps.steer import FppsConfig, fpps_generate
from verl_personadual.eval.generate import DecodingParams, HFGenerator
from verl_personadual.eval.plots import no_data, pyplot, save_figure, write_table
from verl_personadual.eval.run import read_mode, score_response
from verl_personadual.eval.store import PredictionStore, read_predictions
from verl_personadual.utils.atomic import output_dir, write_json
from verl_personadual.utils.fingerprint import model_identity

__all__ = [
    "DEFAULT_GRID",
    "FACT_MEANS",
    "FIT_CONFIG",
    "GRIDS",
    "GENERATIONS",
    "RRF_K",
    "FitConfig",
    "GridPoint",
    "Member",
    "best_points",
    "contrast_groups",
    "fit",
    "grid_points",
    "grid_surface",
]

logger = logging.getLogger(__name__)

FIT_CONFIG = "fit_config.json"
GENERATIONS = "generations.jsonl"
#: Named (γ grid, τ grid) pairs of ``--grid``: ``paper`` is the paper's search (fpps-notes.md, App. G: γ ∈ [0, 3]
#: step 0.2, τ ∈ [0.05, 1] step 0.01); ``coarse`` a subset of it for quick fits (γ step 1, τ step 0.05).
GRIDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "paper": (tuple(round(0.2 * i, 1) for i in range(16)), tuple(round(0.05 + 0.01 * i, 2) for i in range(96))),
    "coarse": ((0.0, 1.0, 2.0, 3.0), tuple(round(0.05 * i, 2) for i in range(1, 21))),
}
DEFAULT_GRID = "paper"
#: ``--fact-mean``: which objective rows m_fact of s_f averages (module docstring, step 6); the first is the default.
FACT_MEANS = ("correct_without_persona", "factual_degraded")
#: Reciprocal-rank-fusion constant of the layer selection (Cormack et al.).
RRF_K = 60.0
#: The prompt style FPPS is fit and run with (the plain persona prompt, no mode prefixes; the FPPS systems' too).
STYLE = PromptStyle.PERSONA
WITH, WITHOUT = "persona", "no_persona"  # the baseline generations' ``decoding`` keys
PLAIN, GATED = "plain", "gated"  # grid branches: the persona prompt unsteered, every row hard-gated


@dataclass(frozen=True)
class FitConfig:
    """Everything ``fpps-fit`` needs; see ``python -m verl_personadual.eval fpps-fit --help`` for each field."""

    model: str
    eval_set: Path
    out_dir: Path
    test_eval_set: Path | None = None
    personalized: Selector | None = None
    seed: int = 0
    max_new_tokens: int = DecodingParams.max_new_tokens
    layer: int | None = None
    gammas: tuple[float, ...] = GRIDS[DEFAULT_GRID][0]
    taus: tuple[float, ...] = GRIDS[DEFAULT_GRID][1]
    fact_mean: str = FACT_MEANS[0]
    calib_fraction: float = 0.5
    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 16
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridPoint:
    """One grid setting's held-out accuracies (%): the variant, its γ / τ (None where the variant has none)."""

    variant: str
    gamma: float | None
    tau: float | None
    objective: float
    personalized: float

    @property
    def score(self) -> float:
        """The grid's objective: mean of the objective and the personalized accuracy."""
        return (self.objective + self.personalized) / 2

    def summary(self) -> dict[str, Any]:
        """The manifest's record of the point (accuracies in %)."""
        return {
            "gamma": self.gamma,
            "tau": self.tau,
            "objective_%": self.objective,
            "personalized_%": self.personalized,
            "score_%": self.score,
        }


@dataclass(frozen=True)
class Member:
    """A group row: its prompt pair and the correct response the group is defined by (module docstring, step 6)."""

    row: EvalRow
    persona_ids: list[int]
    plain_ids: list[int]
    response_ids: list[int]


def _check_options(cfg: FitConfig) -> None:
    if not 0 < cfg.calib_fraction < 1:
        raise FppsError(f"--calib-fraction must be in (0, 1), got {cfg.calib_fraction}")
    if not cfg.gammas or any(g < 0 or not math.isfinite(g) for g in cfg.gammas):
        raise FppsError(f"--gammas must list finite values >= 0, got {list(cfg.gammas)}")
    if not cfg.taus or any(math.isnan(t) for t in cfg.taus):
        raise FppsError(f"--taus must list numbers, got {list(cfg.taus)}")
    if cfg.fact_mean not in FACT_MEANS:
        raise FppsError(f"--fact-mean must be one of {list(FACT_MEANS)}, got {cfg.fact_mean!r}")
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise FppsError("--max-new-tokens and --batch-size must be >= 1")


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _pin(cfg: FitConfig, identity: Mapping[str, Any]) -> None:
    """Write ``fit_config.json``, or check a rerun against it (module docstring, Resuming)."""
    current = {
        **identity,
        "eval_set_sha256": _sha256(cfg.eval_set),
        "prompt_style": STYLE.value,
        "chat_template_kwargs": cfg.chat_template_kwargs,
        "max_new_tokens": cfg.max_new_tokens,
        "dtype": cfg.dtype,
    }
    path = cfg.out_dir / FIT_CONFIG
    if not path.exists():
        write_json(path, current, sort_keys=True)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    check_checkpoint(saved, current, str(cfg.out_dir))
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        raise FppsError(
            f"{path} differs from this fit in {diff} (its cached generations depend on them); rerun with "
            "the same calibration set and generation settings, use another --out, or --overwrite to replace it"
        )


def _scored(
    row: EvalRow, branch: str, ids: list[int], gen: HFGenerator, prefixes: ModePrefixes, **extra: Any
) -> dict[str, Any]:
    """A cached generation: the response (ids and text) to ``row`` under ``branch``, read and scored as
    ``eval run`` does."""
    text = gen.tokenizer.decode(ids, skip_special_tokens=True)
    mode = read_mode(ids, gen, prefixes, STYLE)
    res = score_response(row, text, mode)
    return {
        "row_id": row.row_id,
        "decoding": branch,
        "item_id": row.item_id,
        "correct": res["correct"],
        "pred": res["pred"],
        "response_ids": ids,
        "response": text,
        **extra,
    }


def _cached(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["row_id"], r["decoding"]): r for r in read_predictions(path)}


def _baseline(
    gen: HFGenerator,
    rows: Sequence[EvalRow],
    pairs: Mapping[str, tuple[list[int], list[int]]],
    cfg: FitConfig,
    prefixes: ModePrefixes,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Step 1: the cached persona / no-persona answers of every row, generating the missing ones."""
    store = PredictionStore(cfg.out_dir / GENERATIONS)
    todo = [(r, c) for r in rows for c in (WITH, WITHOUT) if (r.row_id, c) not in store]
    logger.info("baseline answers: %d of %d to generate", len(todo), 2 * len(rows))
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        prompts = [pairs[r.row_id][0 if c == WITH else 1] for r, c in batch]
        outs = gen.generate(prompts, [cfg.max_new_tokens] * len(batch), [0] * len(batch))
        store.append(_scored(r, c, ids, gen, prefixes) for (r, c), ids in zip(batch, outs))
    return _cached(store.path)


def contrast_groups(
    rows: Sequence[EvalRow],
    done: Mapping[tuple[str, str], Mapping[str, Any]],
    pairs: Mapping[str, tuple[list[int], list[int]]],
    selector: Selector | None,
) -> tuple[list[Member], list[Member], list[Member]]:
    """Step 2 and m_fact's rows of step 6: (factual-degraded, personalized-beneficial, objective rows answered
    correctly without the persona, one per distinct persona-free prompt) members, in row order."""
    fact, pers, correct_without = [], [], []
    plain_seen: set[tuple[int, ...]] = set()
    for row in rows:
        with_p, without = done[(row.row_id, WITH)], done[(row.row_id, WITHOUT)]
        family = family_of(row, selector)
        if family == GENERAL and without["correct"]:
            member = Member(row, *pairs[row.row_id], list(without["response_ids"]))
            if not with_p["correct"]:
                fact.append(member)
            if tuple(member.plain_ids) not in plain_seen:
                plain_seen.add(tuple(member.plain_ids))
                correct_without.append(member)
        elif family == PERSONALIZED and with_p["correct"] and not without["correct"]:
            pers.append(Member(row, *pairs[row.row_id], list(with_p["response_ids"])))
    return fact, pers, correct_without


def _split(items: Iterable[str], fraction: float, seed: int) -> set[str]:
    """Step 3: the fitting part's item ids."""
    order = sorted(set(items))
    if len(order) < 2:
        raise FppsError(
            f"the calibration set has {len(order)} item(s) with a persona; FPPS needs at least 2 (a "
            "fitting and a held-out part)"
        )
    random.Random(f"fpps:{seed}").shuffle(order)
    k = min(max(round(fraction * len(order)), 1), len(order) - 1)
    return set(order[:k])


def _probe_by_layer(
    states: np.ndarray, labels: np.ndarray, fitting: np.ndarray, seed: int
) -> tuple[list[Probe], np.ndarray]:
    """Step 5: one probe per layer on the fitting rows of ``states`` [n, L, d] and its held-out accuracy in % [L]."""
    probes, accuracy = [], np.full(states.shape[1], np.nan)
    held = ~fitting
    for layer in range(states.shape[1]):
        x = states[:, layer]
        probe = fit_probe(x[fitting & (labels == 1)], x[fitting & (labels == 0)], seed=seed)
        probes.append(probe)
        if held.any():
            accuracy[layer] = 100.0 * float(np.mean((probe.predict(x[held]) >= 0.5) == (labels[held] == 1)))
    return probes, accuracy


def _grid_digest(config: FppsConfig, max_new_tokens: int) -> str:
    digest = hashlib.sha256(
        json.dumps([config.layer, config.probe.bias, max_new_tokens, config.steer_first_token]).encode()
    )
    for array in (config.probe.weight, config.steering_vector):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:12]


def _soft_branch(gamma: float) -> str:
    return PLAIN if gamma == 0 else f"soft:{gamma!r}"


def _grid_outcomes(
    gen: HFGenerator,
    rows: Sequence[EvalRow],
    pairs: Mapping[str, tuple[list[int], list[int]]],
    base: FppsConfig,
    cfg: FitConfig,
    prefixes: ModePrefixes,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Step 7's generations of the held-out rows: the plain and gated branches and one soft branch per γ (cached)."""
    configs = {
        PLAIN: FppsConfig("hard", base.layer, base.probe, tau=math.inf),
        GATED: FppsConfig("hard", base.layer, base.probe, tau=0.0),
    }
    for gamma in cfg.gammas:
        configs.setdefault(
            _soft_branch(gamma),
            FppsConfig("soft", base.layer, base.probe, gamma=gamma, steering_vector=base.steering_vector),
        )
    store = PredictionStore(cfg.out_dir / f"grid_{_grid_digest(base, cfg.max_new_tokens)}.jsonl")
    for branch, config in configs.items():
        todo = [r for r in rows if (r.row_id, branch) not in store]
        logger.info("grid branch %s: %d of %d held-out rows to generate", branch, len(todo), len(rows))
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            gens = fpps_generate(
                gen.model,
                [pairs[r.row_id] for r in batch],
                config,
                max_new_tokens=cfg.max_new_tokens,
                eos_ids=gen.eos,
                pad_id=gen.pad_id,
            )
            store.append(_scored(r, branch, g.token_ids, gen, prefixes, p_hat=g.p_hat) for r, g in zip(batch, gens))
    return _cached(store.path)


def _accuracies(correct: np.ndarray, objective: np.ndarray) -> tuple[float, float]:
    return 100.0 * float(correct[objective].mean()), 100.0 * float(correct[~objective].mean())


def grid_points(
    p_hat: np.ndarray,
    plain: np.ndarray,
    gated: np.ndarray,
    soft: Mapping[float, np.ndarray],
    objective: np.ndarray,
    taus: Sequence[float],
) -> list[GridPoint]:
    """Every grid setting's held-out accuracies (module docstring, step 7) from per-row outcomes ([n] arrays of 0 / 1
    correctness: unsteered, gated, soft per γ), p̂ [n] and the objective-family mask [n] (the rest personalized)."""
    points = [GridPoint("hard", None, t, *_accuracies(np.where(p_hat >= t, gated, plain), objective)) for t in taus]
    points += [GridPoint("soft", g, None, *_accuracies(c, objective)) for g, c in soft.items()]
    points += [
        GridPoint("mixed", g, t, *_accuracies(np.where(p_hat >= t, gated, c), objective))
        for g, c in soft.items()
        for t in taus
    ]
    return points


def best_points(points: Sequence[GridPoint]) -> dict[str, GridPoint]:
    """Per variant the highest-scoring point; ties: the smaller γ, then the larger τ."""
    best: dict[str, GridPoint] = {}
    for point in points:
        key = (point.score, -(point.gamma or 0.0), point.tau if point.tau is not None else 0.0)
        old = best.get(point.variant)
        if old is None or key > (old.score, -(old.gamma or 0.0), old.tau if old.tau is not None else 0.0):
            best[point.variant] = point
    return best


def grid_surface(points: Sequence[GridPoint], gammas: Sequence[float], taus: Sequence[float]) -> dict[str, np.ndarray]:
    """The grid's accuracy surface as the artifact's ``grid_*`` arrays: the γ and τ axes, then (objective %,
    personalized %) of FPPS-H per τ [T, 2], FPPS-S per γ [G, 2] and FPPS-M per (γ, τ) [G, T, 2]; ``points`` from
    :func:`grid_points` over exactly these axes."""
    g_at, t_at = {g: i for i, g in enumerate(gammas)}, {t: i for i, t in enumerate(taus)}
    hard, soft = np.full((len(taus), 2), np.nan), np.full((len(gammas), 2), np.nan)
    mixed = np.full((len(gammas), len(taus), 2), np.nan)
    for pt in points:
        value = (pt.objective, pt.personalized)
        if pt.variant == "hard":
            hard[t_at[pt.tau]] = value
        elif pt.variant == "soft":
            soft[g_at[pt.gamma]] = value
        else:
            mixed[g_at[pt.gamma], t_at[pt.tau]] = value
    return {
        "grid_gammas": np.asarray(gammas, dtype=np.float64),
        "grid_taus": np.asarray(taus, dtype=np.float64),
        "grid_hard": hard,
        "grid_soft": soft,
        "grid_mixed": mixed,
    }


def _grid_figure(surface: Mapping[str, np.ndarray], best: Mapping[str, GridPoint]) -> Any:
    """Held-out score (mean of objective and personalized %) over the grid: FPPS-H by τ, FPPS-S by γ, FPPS-M over
    γ × τ; each variant's chosen point marked."""
    plt = pyplot()
    gammas, taus = surface["grid_gammas"], surface["grid_taus"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(taus, surface["grid_hard"].mean(axis=1), marker=".")
    axes[0].axvline(best["hard"].tau, color="tab:red", linestyle="--", label=f"chosen τ {best['hard'].tau}")
    axes[0].set_xlabel("τ")
    axes[0].set_title("FPPS-H")
    axes[1].plot(gammas, surface["grid_soft"].mean(axis=1), marker=".")
    axes[1].axvline(best["soft"].gamma, color="tab:red", linestyle="--", label=f"chosen γ {best['soft'].gamma}")
    axes[1].set_xlabel("γ")
    axes[1].set_title("FPPS-S")
    for ax in axes[:2]:
        ax.set_ylabel("held-out score %")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    mixed = surface["grid_mixed"].mean(axis=2)
    image = axes[2].imshow(mixed, origin="lower", aspect="auto", vmin=0, vmax=100)
    t_ticks = np.unique(np.linspace(0, len(taus) - 1, min(len(taus), 6)).round().astype(int))
    axes[2].set_xticks(t_ticks, [f"{taus[i]:g}" for i in t_ticks])
    axes[2].set_yticks(np.arange(len(gammas)), [f"{g:g}" for g in gammas])
    chosen = (list(taus).index(best["mixed"].tau), list(gammas).index(best["mixed"].gamma))
    axes[2].plot(*chosen, marker="x", color="tab:red", markersize=10)
    axes[2].set_xlabel("τ")
    axes[2].set_ylabel("γ")
    axes[2].set_title(f"FPPS-M (chosen γ {best['mixed'].gamma}, τ {best['mixed'].tau})")
    fig.colorbar(image, ax=axes[2], label="held-out score %")
    fig.suptitle("γ / τ grid: mean of objective and personalized accuracy on the held-out calibration rows")
    return fig


def _delta_table(
    selection: LayerSelection, fact_delta: np.ndarray, pers_delta: np.ndarray, layer: int
) -> tuple[list[str], list[list[Any]]]:
    header = [
        "layer",
        "factual_degraded_delta",
        "personalized_beneficial_delta",
        "factual_rank",
        "personalized_rank",
        "rrf",
        "chosen",
    ]
    lines = [
        [
            i,
            float(fact_delta[i]),
            float(pers_delta[i]),
            int(selection.fact_ranks[i]),
            int(selection.pers_ranks[i]),
            float(selection.fused[i]),
            i == layer,
        ]
        for i in range(len(fact_delta))
    ]
    return header, lines


def _delta_figure(fact_delta: np.ndarray, pers_delta: np.ndarray, layer: int) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    layers = np.arange(len(fact_delta))
    ax.plot(layers, fact_delta, marker="o", label="factual-degraded")
    ax.plot(layers, pers_delta, marker="s", label="personalized-beneficial")
    ax.axhline(0.0, color="tab:gray", linewidth=0.8)
    ax.axvline(layer, color="tab:red", linestyle="--", linewidth=1, label=f"chosen layer {layer}")
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("mean Δ = (PPL with − PPL without) / PPL with")
    ax.set_title("Persona-induced shift of the gold answer's logit-lens perplexity")
    ax.legend(fontsize=8)
    return fig


def _probe_figure(accuracy: np.ndarray, layer: int) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if np.isnan(accuracy).all():
        no_data(ax, "the held-out part has no group rows")
    else:
        ax.plot(np.arange(len(accuracy)), accuracy, marker="o", label="held-out accuracy")
        ax.axvline(layer, color="tab:red", linestyle="--", linewidth=1, label=f"chosen layer {layer}")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("probe accuracy (% of held-out group rows)")
    ax.set_title("Per-layer probe: factual-degraded vs personalized-beneficial")
    return fig


def _write_report(
    out: Path,
    selection: LayerSelection,
    deltas: tuple[np.ndarray, np.ndarray],
    layer: int,
    accuracy: np.ndarray,
    counts: tuple[int, int],
    points: Sequence[GridPoint],
    best: Mapping[str, GridPoint],
    references: Mapping[str, tuple[float, float]],
    surface: Mapping[str, np.ndarray],
) -> None:
    """Step 8's tables and plots."""
    tables, plots = out / "tables", out / "plots"
    write_table(tables, "delta_by_layer", _delta_table(selection, *deltas, layer))
    probe_lines = [[i, counts[0], counts[1], None if np.isnan(a) else float(a)] for i, a in enumerate(accuracy)]
    write_table(tables, "probe_accuracy", (["layer", "fit_rows", "held_out_rows", "accuracy_%"], probe_lines))
    grid_lines: list[list[Any]] = [[name, None, None, o, p, (o + p) / 2, False] for name, (o, p) in references.items()]
    grid_lines += [
        [pt.variant, pt.gamma, pt.tau, pt.objective, pt.personalized, pt.score, best[pt.variant] == pt] for pt in points
    ]
    header = ["variant", "gamma", "tau", "objective_%", "personalized_%", "score_%", "chosen"]
    write_table(tables, "grid", (header, grid_lines))
    plt = pyplot()
    for name, fig in (
        ("delta_by_layer", _delta_figure(*deltas, layer)),
        ("probe_accuracy", _probe_figure(accuracy, layer)),
        ("grid", _grid_figure(surface, best)),
    ):
        save_figure(fig, plots / f"{name}.png")
        plt.close(fig)


def fit(cfg: FitConfig) -> Path:
    """Fit FPPS on ``cfg.eval_set`` and write the artifact and its report under ``cfg.out_dir`` (module docstring);
    returns the manifest's path. FppsError (a user error) when the inputs cannot give an artifact; a fit that fails
    before writing anything leaves no empty ``out_dir`` behind."""
    _check_options(cfg)
    all_rows = read_eval_set(cfg.eval_set)
    calibration_items = sorted({r.item_id for r in all_rows})
    if cfg.test_eval_set is not None:
        check_disjoint(calibration_items, read_eval_set(cfg.test_eval_set), f"--test-eval-set {cfg.test_eval_set}")
    rows = [r for r in all_rows if r.persona is not None]
    fitting_items = _split((r.item_id for r in rows), cfg.calib_fraction, cfg.seed)
    with output_dir(cfg.out_dir):
        identity = model_identity(cfg.model)
        _pin(cfg, identity)
        gen = hf_generator(cfg.model, DecodingParams(max_new_tokens=cfg.max_new_tokens), cfg.device, cfg.dtype)
        prefixes = resolve_prefixes(gen.tokenizer)
        pairs = {r.row_id: prompt_pair(gen.tokenizer, r, STYLE, cfg.chat_template_kwargs) for r in rows}
        done = _baseline(gen, rows, pairs, cfg, prefixes)
        fact, pers, correct_without = contrast_groups(rows, done, pairs, cfg.personalized)
        parts = {
            name: [m for m in group if (m.row.item_id in fitting_items) == fitting]
            for name, group, fitting in (
                ("fit_fact", fact, True),
                ("fit_pers", pers, True),
                ("held_fact", fact, False),
                ("held_pers", pers, False),
            )
        }
        sizes = {k: len(v) for k, v in parts.items()}
        logger.info("groups: %s", sizes)
        if not parts["fit_fact"] or not parts["fit_pers"]:
            raise FppsError(
                f"{cfg.eval_set}: the fitting part has {sizes['fit_fact']} factual-degraded and {sizes['fit_pers']} "
                "personalized-beneficial rows (of "
                f"{len(fact)} and {len(pers)}); FPPS needs at least one of each: use a larger calibration set, a "
                "larger --calib-fraction, or --personalized FIELD=V to say which rows are personalized (toy: "
                "task=helpful)"
            )
        model, tok, pad = gen.model, gen.tokenizer, gen.pad_id

        def examples(members: Sequence[Member]) -> list[ContrastExample]:
            return [
                ContrastExample(
                    m.persona_ids, m.plain_ids, tok.encode(format_answer(m.row.gold), add_special_tokens=False)
                )
                for m in members
            ]

        fact_ppl = ppl_tables(model, examples(parts["fit_fact"]), batch_size=cfg.batch_size, pad_id=pad)
        pers_ppl = ppl_tables(model, examples(parts["fit_pers"]), batch_size=cfg.batch_size, pad_id=pad)
        selection = select_layer(fact_ppl, pers_ppl, k=RRF_K)
        num_layers = len(selection.fused)
        if cfg.layer is not None and not 0 <= cfg.layer < num_layers:
            raise FppsError(f"--layer {cfg.layer}: the model's layers are 0..{num_layers - 1}")
        layer = selection.layer if cfg.layer is None else cfg.layer
        deltas = (layer_scores(*fact_ppl, orientation="up"), layer_scores(*pers_ppl, orientation="up"))
        logger.info("layer %d (RRF choice %d of 0..%d)", layer, selection.layer, num_layers - 1)

        members = [*parts["fit_fact"], *parts["fit_pers"], *parts["held_fact"], *parts["held_pers"]]
        labels = np.array(
            [1] * sizes["fit_fact"] + [0] * sizes["fit_pers"] + [1] * sizes["held_fact"] + [0] * sizes["held_pers"]
        )
        fitting = np.arange(len(members)) < sizes["fit_fact"] + sizes["fit_pers"]
        states = last_prompt_states_by_layer(
            model, [m.persona_ids for m in members], batch_size=cfg.batch_size, pad_id=pad
        )
        probes, accuracy = _probe_by_layer(states, labels, fitting, cfg.seed)
        fact_mean_rows = (
            [m for m in correct_without if m.row.item_id in fitting_items]
            if cfg.fact_mean == "correct_without_persona"
            else parts["fit_fact"]
        )
        vector = steering_vector(
            response_mean_states(
                model,
                [m.plain_ids for m in fact_mean_rows],
                [m.response_ids for m in fact_mean_rows],
                layer,
                batch_size=cfg.batch_size,
                pad_id=pad,
            ),
            response_mean_states(
                model,
                [m.persona_ids for m in parts["fit_pers"]],
                [m.response_ids for m in parts["fit_pers"]],
                layer,
                batch_size=cfg.batch_size,
                pad_id=pad,
            ),
        )
        base = FppsConfig("soft", layer, probes[layer], steering_vector=vector)

        held = [r for r in rows if r.item_id not in fitting_items]
        objective = np.array([family_of(r, cfg.personalized) == GENERAL for r in held])
        if objective.all() or not objective.any():
            missing = "personalized" if objective.all() else "objective"
            raise FppsError(
                f"{cfg.eval_set}: the held-out part has no {missing}-family row with a persona, so the "
                "γ / τ grid cannot be scored; use a larger calibration set or another --calib-fraction"
            )
        outcomes = _grid_outcomes(gen, held, pairs, base, cfg, prefixes)

        def correct(branch: str, source: Mapping[tuple[str, str], Mapping[str, Any]] = outcomes) -> np.ndarray:
            return np.array([float(source[(r.row_id, branch)]["correct"]) for r in held])

        p_hat = np.array([float(outcomes[(r.row_id, PLAIN)]["p_hat"]) for r in held])
        soft = {g: correct(_soft_branch(g)) for g in dict.fromkeys(cfg.gammas)}
        taus = list(dict.fromkeys(cfg.taus))
        points = grid_points(p_hat, correct(PLAIN), correct(GATED), soft, objective, taus)
        best = best_points(points)
        surface = grid_surface(points, list(soft), taus)
        references = {
            "persona (no FPPS)": _accuracies(correct(PLAIN), objective),
            "no_persona (no FPPS)": _accuracies(correct(WITHOUT, done), objective),
        }
        for variant, point in best.items():
            logger.info("FPPS-%s: γ %s, τ %s, score %.2f%%", variant[0].upper(), point.gamma, point.tau, point.score)
        _write_report(
            cfg.out_dir,
            selection,
            deltas,
            layer,
            accuracy,
            (int(fitting.sum()), int((~fitting).sum())),
            points,
            best,
            references,
            surface,
        )
        manifest = {
            **identity,
            "prompt_style": STYLE.value,
            "chat_template_kwargs": cfg.chat_template_kwargs,
            "max_new_tokens": cfg.max_new_tokens,
            "dtype": cfg.dtype,
            "seed": cfg.seed,
            "calibration": {
                "eval_set": str(Path(cfg.eval_set).resolve()),
                "sha256": _sha256(cfg.eval_set),
                "rows": len(all_rows),
                "rows_with_persona": len(rows),
                "items": calibration_items,
                "test_eval_set": None if cfg.test_eval_set is None else str(Path(cfg.test_eval_set).resolve()),
                "personalized": None if cfg.personalized is None else str(cfg.personalized),
                "calib_fraction": cfg.calib_fraction,
                "fit_items": len(fitting_items),
                "held_out_items": len({r.item_id for r in held}),
                "held_out_item_ids": sorted({r.item_id for r in held}),
            },
            "groups": {
                "fit": {"factual_degraded": sizes["fit_fact"], "personalized_beneficial": sizes["fit_pers"]},
                "held_out": {"factual_degraded": sizes["held_fact"], "personalized_beneficial": sizes["held_pers"]},
            },
            "layer": layer,
            "layer_source": "rrf" if cfg.layer is None else "--layer",
            "rrf_layer": selection.layer,
            "num_layers": num_layers,
            "layer_selection": {
                "k": RRF_K,
                "fact_orientation": "up",
                "pers_orientation": "down",
                "aggregate": "mean",
                "gold_answer": "prompts.format_answer(gold), no special tokens, no eos",
            },
            "probe": {
                "C": 1.0,
                "standardize": True,
                "class_weight": None,
                "held_out_accuracy_%": None if np.isnan(accuracy[layer]) else float(accuracy[layer]),
            },
            "steering_vector": {
                "l2_norm": float(np.linalg.norm(vector)),
                "normalized": False,
                "fact_mean": cfg.fact_mean,
                "fact_rows": len(fact_mean_rows),
                "pers_rows": sizes["fit_pers"],
            },
            "steer_first_token": base.steer_first_token,
            "grid": {
                "gammas": list(soft),
                "taus": taus,
                "surface": "arrays grid_gammas, grid_taus, grid_hard [tau, 2], grid_soft [gamma, 2], grid_mixed "
                "[gamma, tau, 2] (objective_%, personalized_%); tables/grid.csv; plots/grid.png",
                "held_out_rows": {"objective": int(objective.sum()), "personalized": int((~objective).sum())},
                "objective": "mean of objective_% and personalized_% on the held-out rows",
            },
            "variants": {v: p.summary() for v, p in best.items()},
            "held_out_reference": {k: {"objective_%": o, "personalized_%": p} for k, (o, p) in references.items()},
        }
        arrays = {
            "probe_weight": probes[layer].weight,
            "probe_bias": np.float64(probes[layer].bias),
            "steering_vector": vector,
            "fact_delta": deltas[0],
            "pers_delta": deltas[1],
            "fact_ranks": selection.fact_ranks,
            "pers_ranks": selection.pers_ranks,
            "rrf": selection.fused,
            "probe_accuracy": accuracy,
            "fact_ppl_with": fact_ppl[0],
            "fact_ppl_without": fact_ppl[1],
            "pers_ppl_with": pers_ppl[0],
            "pers_ppl_without": pers_ppl[1],
            **surface,
        }
        path = write_artifact(cfg.out_dir, manifest, arrays)
    logger.info("FPPS artifact: %s", path)
    return path
