"""Mode metrics for the training and validation logs: pure functions over per-row arrays (no verl types).

Naming scheme (every value a float)::

    personadual/<split>/<data_source>/<persona_setting>/<metric>

``<split>`` is ``train`` or ``val``; ``<data_source>`` is a row's ``data_source`` or ``all`` (every source);
``<persona_setting>`` is ``none`` / ``unaligned`` / ``aligned`` (``prompts.PersonaSetting``), ``unknown`` (rows
whose data does not say) or ``all``. Every
(source, setting) pair present in the batch is reported, plus the ``all`` aggregates over either or both.
``<metric>``:

- ``count``: number of rows in the group.
- ``personalized_rate``: fraction of the group's rows in personalized mode.
- ``unknown_rate``: fraction of rows whose response starts with no valid prefix (free rollouts only).
- ``reward_general`` / ``reward_personalized``: mean reward of the group's rows in that mode; omitted when
  the group has no row in that mode.
- ``reward_gap`` (``train`` only): ``reward_personalized - reward_general``; omitted unless both are present.
  With forced rollouts every prompt contributes n/2 rows to each mode, so this is also the mean over prompts
  of the per-prompt gap.

Length metrics (:func:`length_metrics`), over every source and setting (``all/all``), per mode ``<m>`` =
``general`` / ``personalized``, omitted for a mode without rows: ``length_<m>_mean`` (response tokens, mode prefix
included), ``length_<m>_p95`` (numpy's linearly interpolated 95th percentile) and ``length_<m>_clip_rate``
(fraction of the mode's rows that reached the response-length limit, i.e. were cut off).

Mode collapse (:func:`collapsed_mode`): validation picks the same mode on at least :data:`COLLAPSE_SHARE` of the
rows of every persona setting; ``all/all/mode_collapse`` is 1.0 then, else 0.0 (``val`` only).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from verl_personadual.core.modes import MODE_NAMES, UNKNOWN_MODE, Mode, mode_code
from verl_personadual.core.prompts import PersonaSetting

__all__ = [
    "ALL",
    "COLLAPSE_SHARE",
    "METRIC_ROOT",
    "MODE_COLLAPSE_METRIC",
    "MODE_MASS_METRIC",
    "SPLITS",
    "UNKNOWN_SETTING",
    "collapsed_mode",
    "length_metrics",
    "mode_codes",
    "metric_name",
    "mode_metrics",
    "metric_safe_source",
]

#: First component of every metric name.
METRIC_ROOT = "personadual"

#: The splits a metric name can carry; ``reward_gap`` is reported for the first only.
SPLITS = ("train", "val")

#: Aggregate over every data source and/or persona setting.
ALL = "all"

#: Mode name of a row whose response starts with no valid prefix (``Mode`` names lower-cased otherwise).

#: Persona setting of a row that does not say which it is (data not built by data_preprocess).
UNKNOWN_SETTING = "unknown"

_SETTINGS = tuple(s.value for s in PersonaSetting) + (UNKNOWN_SETTING,)


def mode_codes(names: Sequence[str]) -> np.ndarray:
    """Mode codes (int8: 0 / 1 / -1) of mode names ``"general"`` / ``"personalized"`` / ``"unknown"``."""
    bad = sorted({str(n) for n in names if n not in MODE_NAMES})
    if bad:
        raise ValueError(f"unknown mode name(s) {bad}; expected one of {sorted(MODE_NAMES)}")
    return np.array([mode_code(n) for n in names], dtype=np.int8)


def metric_safe_source(data_source: str) -> str:
    """A ``data_source`` usable as one metric-name component ("/" -> "_"; empty or ``all`` -> ``<name>_``)."""
    name = str(data_source).replace("/", "_")
    return name + "_" if name in ("", ALL) else name


def _group_metrics(modes: np.ndarray, rewards: np.ndarray, with_gap: bool) -> dict[str, float]:
    out = {
        "count": float(len(modes)),
        "personalized_rate": float(np.mean(modes == Mode.PERSONALIZED)),
        "unknown_rate": float(np.mean(modes == UNKNOWN_MODE)),
    }
    for mode in Mode:
        sel = modes == mode
        if sel.any():
            out[f"reward_{mode.name.lower()}"] = float(np.mean(rewards[sel]))
    if with_gap and "reward_general" in out and "reward_personalized" in out:
        out["reward_gap"] = out["reward_personalized"] - out["reward_general"]
    return out


def mode_metrics(
    modes: np.ndarray,
    rewards: np.ndarray,
    data_sources: Sequence[str],
    persona_settings: Sequence[str],
    split: str,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Mode metrics of one batch, named as in the module docstring.

    Args:
        modes: (B,) int mode codes, 0 general / 1 personalized / -1 unknown (``ModePrefixes.modes_of``).
        rewards: (B,) float sequence-level reward of each row (e.g. ``token_level_scores.sum(-1)``).
        data_sources: B ``data_source`` strings (non-empty, without ``/``, not ``"all"``).
        persona_settings: B persona settings: ``"none"`` / ``"unaligned"`` / ``"aligned"`` / ``"unknown"``.
        split: ``"train"`` or ``"val"``.
        valid: optional (B,) bool; rows where it is False (e.g. verl's balance-padding rows) are ignored.
    Returns:
        ``{name: value}``, sorted by name; empty when no row is valid.
    Raises:
        ValueError: mismatched lengths, a mode code outside {-1, 0, 1}, a non-finite reward, an unknown
            persona setting or split, or a data source that would break the naming scheme.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    modes = np.asarray(modes)
    rewards = np.asarray(rewards, dtype=np.float64)
    keep = np.ones(len(modes), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    sizes = {len(modes), len(rewards), len(data_sources), len(persona_settings), len(keep)}
    if modes.ndim != 1 or rewards.ndim != 1 or len(sizes) != 1:
        raise ValueError(
            f"expected equal-length 1-D inputs, got modes {modes.shape}, rewards {rewards.shape}, "
            f"{len(data_sources)} data sources, {len(persona_settings)} persona settings, valid {keep.shape}"
        )
    modes, rewards = modes[keep], rewards[keep]
    sources = [str(s) for s, k in zip(data_sources, keep) if k]
    settings = [str(s) for s, k in zip(persona_settings, keep) if k]
    bad_modes = sorted(set(np.unique(modes).tolist()) - {UNKNOWN_MODE, *map(int, Mode)})
    if bad_modes:
        raise ValueError(f"mode codes must be -1, 0 or 1; got {bad_modes}")
    if not np.isfinite(rewards).all():
        raise ValueError(f"rewards must be finite; rows {np.flatnonzero(~np.isfinite(rewards)).tolist()} are not")
    bad_settings = sorted(set(settings) - set(_SETTINGS))
    if bad_settings:
        raise ValueError(f"unknown persona setting(s) {bad_settings}; expected one of {list(_SETTINGS)}")
    bad_sources = sorted({s for s in sources if not s or "/" in s or s == ALL})
    if bad_sources:
        raise ValueError(f"data source(s) {bad_sources} would break the metric names (empty, '/' or {ALL!r})")

    src = np.array(sources, dtype=object)
    sett = np.array(settings, dtype=object)
    groups = {(ALL, ALL): np.ones(len(modes), dtype=bool)}
    for s in dict.fromkeys(sources):
        groups[(s, ALL)] = src == s
        for p in dict.fromkeys(settings):
            sel = (src == s) & (sett == p)
            if sel.any():
                groups[(s, p)] = sel
    for p in dict.fromkeys(settings):
        groups[(ALL, p)] = sett == p

    out: dict[str, float] = {}
    for (s, p), sel in groups.items():
        if not sel.any():
            continue
        for name, value in _group_metrics(modes[sel], rewards[sel], with_gap=split == "train").items():
            out[f"{METRIC_ROOT}/{split}/{s}/{p}/{name}"] = value
    return dict(sorted(out.items()))


def length_metrics(
    modes: np.ndarray, lengths: np.ndarray, max_length: int, split: str, valid: np.ndarray | None = None
) -> dict[str, float]:
    """Per-mode response-length metrics of one batch (module docstring), named
    ``personadual/<split>/all/all/length_<mode>_{mean,p95,clip_rate}``.

    Args:
        modes: (B,) mode codes 0 / 1 / -1; rows without a mode (-1) are left out.
        lengths: (B,) response tokens of each row.
        max_length: the response-length limit (``data.max_response_length``); a row at it was clipped.
        split: ``"train"`` or ``"val"``.
        valid: optional (B,) bool; rows where it is False (verl's balance padding) are left out.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    modes = np.asarray(modes)
    lengths = np.asarray(lengths, dtype=np.float64)
    keep = np.ones(len(modes), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if modes.shape != lengths.shape or modes.shape != keep.shape or modes.ndim != 1:
        raise ValueError(f"expected equal-length 1-D inputs, got modes {modes.shape}, lengths {lengths.shape}")
    if not max_length > 0:
        raise ValueError(f"max_length must be > 0, got {max_length!r}")
    out: dict[str, float] = {}
    for mode in Mode:
        sel = keep & (modes == mode)
        if not sel.any():
            continue
        name = f"{METRIC_ROOT}/{split}/{ALL}/{ALL}/length_{mode.name.lower()}"
        out[f"{name}_mean"] = float(lengths[sel].mean())
        out[f"{name}_p95"] = float(np.percentile(lengths[sel], 95))
        out[f"{name}_clip_rate"] = float(np.mean(lengths[sel] >= max_length))
    return dict(sorted(out.items()))


#: Share of a persona setting's validation rows in one mode from which that setting counts as collapsed.
COLLAPSE_SHARE = 0.95
#: Metric: 1.0 when validation collapsed onto one mode (:func:`collapsed_mode`), else 0.0.
MODE_COLLAPSE_METRIC = f"{METRIC_ROOT}/val/{ALL}/{ALL}/mode_collapse"

#: Metric: mean over prompt groups of pi(general prefix) + pi(personalized prefix) at the first response
#: position, from the actor's old log-probs of the forced prefixes (single-token prefixes only). verl computes them
#: at the rollout temperature, so this reads higher than the mass at temperature 1 (greedy eval's mode_mass).
MODE_MASS_METRIC = f"{METRIC_ROOT}/train/mode_token_mass"


def metric_name(split: str, data_source: str, persona_setting: str, metric: str) -> str:
    """``personadual/<split>/<data_source>/<persona_setting>/<metric>`` (module docstring's naming scheme)."""
    return f"{METRIC_ROOT}/{split}/{data_source}/{persona_setting}/{metric}"


def collapsed_mode(modes: np.ndarray, persona_settings: Sequence[str], share: float = COLLAPSE_SHARE) -> Mode | None:
    """The mode that the rows of every persona setting present pick on at least ``share`` of their rows (rows
    without a mode count against both), or None (no rows, or some setting below ``share`` for either mode).

    Picking different modes in different settings (general without a persona, personalized with an aligned one)
    is what PersonaDual is for; the same mode everywhere means the model no longer chooses.
    """
    modes = np.asarray(modes)
    if len(modes) != len(persona_settings):
        raise ValueError(f"{len(modes)} modes but {len(persona_settings)} persona settings")
    settings = np.array([str(s) for s in persona_settings], dtype=object)
    for mode in Mode:
        if len(modes) and all(np.mean(modes[settings == s] == mode) >= share for s in dict.fromkeys(settings.tolist())):
            return mode
    return None
