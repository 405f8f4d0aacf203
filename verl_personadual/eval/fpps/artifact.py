"""The FPPS artifact (written by ``eval fpps-fit``, read by ``eval run --system fpps_h|fpps_s|fpps_m --fpps DIR``)
and what the fit and the harness generator share: a row's prompt pair, the checkpoint and disjointness checks, the
error type.

Artifact directory (the ``--out`` of ``fpps-fit``):

- ``arrays.npz``: ``probe_weight`` [d] and ``probe_bias`` [] (p̂ = σ(W·h_L + b) on raw layer-L states),
  ``steering_vector`` [d] (s_f), and the fit's per-layer tables (:data:`ARRAY_KEYS`);
- ``manifest.json``: what the artifact was fit on and with (:func:`write_artifact`'s ``manifest``; keys read back:
  ``format``, ``model`` / ``model_revision`` / ``model_fingerprint`` (``fingerprint.model_identity``),
  ``prompt_style``, ``chat_template_kwargs``, ``layer``, ``variants`` (per variant its ``gamma`` and ``tau``),
  ``calibration.items``, ``arrays.sha256``).

Atomicity: both files are written atomically (``utils.atomic``), the arrays first, the manifest last. The manifest
holds the arrays file's SHA-256, so it is the commit point: :func:`load_artifact` accepts a directory only when its
manifest exists and names the digest of the arrays file next to it. A fit interrupted between the two writes leaves
the previous manifest, whose digest no longer matches: refused with "rerun fpps-fit", never silently mixed.

Prompt pair (:func:`prompt_pair`): the persona prompt is ``baselines.build_messages(row, style)``, the prompt
``eval run`` builds; the persona-free prompt is the same row with its persona left out
(``build_messages(replace(row, persona=None), style)``; for the ``persona`` style this is the ``no_persona``
prompt); both rendered by ``generate.prompt_ids`` with the chat template kwargs. The model is loaded by the harness's
transformers generator (:func:`hf_generator`), so FPPS sees the weights, dtype, pad and eos ids of an ``eval run``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.eval.baselines import PromptStyle, build_messages
from verl_personadual.eval.fpps.probe import Probe
from verl_personadual.eval.fpps.steer import VARIANTS, FppsConfig, Variant
from verl_personadual.eval.generate import DecodingParams, HFGenerator, make_generator, prompt_ids
from verl_personadual.utils.atomic import atomic_write_bytes, write_json
from verl_personadual.utils.errors import UserError

__all__ = [
    "ARRAYS",
    "ARRAY_KEYS",
    "FORMAT",
    "MANIFEST",
    "FppsArtifact",
    "FppsError",
    "check_checkpoint",
    "check_disjoint",
    "hf_generator",
    "load_artifact",
    "prompt_pair",
    "write_artifact",
]

FORMAT = "verl_personadual.fpps/1"
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
#: Arrays every artifact holds: the probe and s_f (used by the generator), then the fit's per-layer tables
#: ([num_layers] each: mean Δ of each group, their ranks, the fused RRF, held-out probe accuracy (NaN: no
#: held-out group rows)), the per-example logit-lens perplexities of the fitting part's groups ([n, num_layers]) and
#: the γ / τ grid's held-out accuracy surface (``fit.grid_surface``).
ARRAY_KEYS = (
    "probe_weight",
    "probe_bias",
    "steering_vector",
    "fact_delta",
    "pers_delta",
    "fact_ranks",
    "pers_ranks",
    "rrf",
    "probe_accuracy",
    "fact_ppl_with",
    "fact_ppl_without",
    "pers_ppl_with",
    "pers_ppl_without",
    "grid_gammas",
    "grid_taus",
    "grid_hard",
    "grid_soft",
    "grid_mixed",
)


class FppsError(UserError, ValueError):
    """FPPS cannot be fit or run as asked (the message says what to change)."""


def prompt_pair(
    tokenizer: Any, row: EvalRow, style: PromptStyle, chat_template_kwargs: Mapping[str, Any]
) -> tuple[list[int], list[int]]:
    """(persona prompt ids, persona-free prompt ids) of ``row`` (module docstring); equal for a row without persona."""
    with_persona = prompt_ids(tokenizer, build_messages(row, style), chat_template_kwargs)
    without = prompt_ids(tokenizer, build_messages(replace(row, persona=None), style), chat_template_kwargs)
    return with_persona, without


def hf_generator(model: str, params: DecodingParams, device: str | None, dtype: str) -> HFGenerator:
    """The harness's transformers generator of ``model`` (``generate.make_generator`` with backend ``hf``: device
    cuda when available, else cpu, unless given); FPPS uses its model, tokenizer, pad and eos ids."""
    gen = make_generator("hf", model, params, device, dtype)
    assert isinstance(gen, HFGenerator)
    return gen


def check_checkpoint(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    """FppsError naming both checkpoints when ``current`` (``model_identity`` of ``--model``) is not the
    checkpoint ``saved`` pins (same keys), compared by fingerprint and resolved path / hub id."""
    keys = ("model", "model_fingerprint")
    if any(saved.get(k) != current.get(k) for k in keys):
        raise FppsError(
            f"{where} was fit on {saved.get('model')} ({saved.get('model_fingerprint')}), but --model is "
            f"{current.get('model')} ({current.get('model_fingerprint')}); use the checkpoint it was fit on, or "
            "fit another artifact (another --out)"
        )


def check_disjoint(calibration_items: Collection[str], rows: Iterable[EvalRow], what: str) -> None:
    """FppsError when some of ``rows`` are items of the calibration set: FPPS is fit on the calibration set's answers,
    so it must be evaluated on other items."""
    shared = sorted({r.item_id for r in rows} & set(calibration_items))
    if shared:
        raise FppsError(
            f"{what} shares {len(shared)} item(s) with the FPPS calibration set (e.g. {shared[:3]}); fit FPPS on items "
            "disjoint from the ones it is evaluated on (split the pool into a calibration and a test eval set)"
        )


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_artifact(out_dir: Path, manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` (exactly :data:`ARRAY_KEYS`) as ``arrays.npz``, then ``manifest`` plus ``format`` and the
    arrays' digest as ``manifest.json`` (module docstring: the manifest is the commit point); returns its path."""
    if set(arrays) != set(ARRAY_KEYS):
        raise ValueError(f"artifact arrays must be {sorted(ARRAY_KEYS)}, got {sorted(arrays)}")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(arrays[k]) for k in ARRAY_KEYS})
    data = buf.getvalue()
    atomic_write_bytes(Path(out_dir) / ARRAYS, data)
    return write_json(
        Path(out_dir) / MANIFEST, {"format": FORMAT, **manifest, "arrays": {"file": ARRAYS, "sha256": _digest(data)}}
    )


@dataclass(frozen=True)
class FppsArtifact:
    """A loaded artifact: its directory, manifest (and the manifest file's digest, which pins it in a run's
    ``run_config.json``), the probe and the steering vector."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    probe: Probe
    steering_vector: np.ndarray

    @property
    def layer(self) -> int:
        return int(self.manifest["layer"])

    @property
    def prompt_style(self) -> PromptStyle:
        return PromptStyle(self.manifest["prompt_style"])

    @property
    def calibration_items(self) -> list[str]:
        return list(self.manifest["calibration"]["items"])

    def config(self, variant: Variant) -> FppsConfig:
        """The :class:`~verl_personadual.eval.fpps.steer.FppsConfig` of ``variant`` with its fitted γ / τ."""
        chosen = self.manifest["variants"][variant]
        fitted = {k: float(chosen[k]) for k in ("gamma", "tau") if chosen.get(k) is not None}  # None: unused
        return FppsConfig(
            variant=variant, layer=self.layer, probe=self.probe, steering_vector=self.steering_vector, **fitted
        )

    def identity(self) -> dict[str, str]:
        """What a run pins about the artifact: its resolved directory and its manifest's digest."""
        return {"artifact": str(self.path), "manifest_sha256": self.manifest_sha256}


def load_artifact(path: Path) -> FppsArtifact:
    """The artifact in directory ``path``; FppsError when it is not one, is of another format, or its arrays file is
    missing or not the one its manifest names (an interrupted or modified fit)."""
    path = Path(path).expanduser().resolve()
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FppsError(f"--fpps {path}: no {MANIFEST} (not an FPPS artifact; write one with `eval fpps-fit`)")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise FppsError(f"{manifest_path}: not JSON ({err}); rerun `eval fpps-fit`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise FppsError(f"{manifest_path}: format {got!r}, expected {FORMAT!r}; rerun `eval fpps-fit`")
    arrays_path = path / ARRAYS
    data = arrays_path.read_bytes() if arrays_path.is_file() else None
    if data is None or _digest(data) != manifest.get("arrays", {}).get("sha256"):
        raise FppsError(
            f"{path}: {ARRAYS} is missing or is not the one {MANIFEST} names (an interrupted or modified "
            "fit); rerun `eval fpps-fit` with the same --out"
        )
    with np.load(io.BytesIO(data)) as arrays:
        probe = Probe(weight=np.asarray(arrays["probe_weight"], dtype=np.float64), bias=float(arrays["probe_bias"]))
        vector = np.asarray(arrays["steering_vector"], dtype=np.float64)
    missing = [v for v in VARIANTS if v not in manifest.get("variants", {})]
    if missing:
        raise FppsError(f"{manifest_path}: no fitted settings for variant(s) {missing}; rerun `eval fpps-fit`")
    return FppsArtifact(path=path, manifest=manifest, manifest_sha256=_digest(raw), probe=probe, steering_vector=vector)
