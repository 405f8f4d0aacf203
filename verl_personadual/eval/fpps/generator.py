"""The FPPS generator of the eval harness: ``eval run --system fpps_h | fpps_s | fpps_m --fpps DIR`` (registered in
``eval.fpps.system``).

:class:`FppsGenerator` is a row-aware harness generator (``generate.RowGenerator``). For each batch the run gives
it the eval rows and the prompts it built; the generator checks that each prompt is the persona prompt the artifact
was fit with (``artifact.prompt_pair``: free decoding without a mode prefix, the artifact's prompt style and chat
template kwargs), builds the row's persona-free prompt the way ``fpps-fit`` does, and generates with
``steer.fpps_generate`` under the artifact's layer, probe and s_f and the variant's fitted γ / τ: greedy, one
``max_new_tokens`` per batch (the longest budget; each response is cut to its own). Per response it adds the
predictions field ``fpps`` = ``{"variant", "layer", "p_hat", "hard", "soft_coef"}``: p̂ as read at the last
persona-prompt token before any edit, whether the row was gated to the persona-free stream, and the soft
coefficient γ·(p̂ − 0.5) it received (0.0 when none).

:func:`fpps_generator` makes one variant's for a run after refusing (FppsError: one ``error:`` line, exit 2) what FPPS
cannot do: an FPPS ``--system`` without ``--fpps`` (``--fpps`` without one is refused by the CLI), the vLLM backend
(vLLM cannot hook hidden states; ``--backend auto`` means transformers here), sampling (temperature > 0, which
``--seeds`` implies: FPPS is fit on greedy answers), decodings other than ``free``, a checkpoint other than the
artifact's (by fingerprint), other chat template kwargs or prompt style, and an ``--eval-set`` sharing items with the
calibration set. Rows of a hub-built eval set are checked the same way when their batch comes up. The model is loaded as
``eval run --backend hf`` loads it (``artifact.hf_generator``: ``--device``, ``--dtype``); ``--max-new-tokens`` and
``--batch-size`` are the run's own (the manifest records the length cap the γ / τ grid was scored with).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verl_personadual.data.eval_sets import EvalRow, read_eval_set
from verl_personadual.eval.fpps.artifact import (
    FppsArtifact,
    FppsError,
    check_checkpoint,
    check_disjoint,
    hf_generator,
    load_artifact,
    prompt_pair,
)
from verl_personadual.eval.fpps.steer import Variant, fpps_generate
from verl_personadual.eval.generate import Decoding, HFGenerator
from verl_personadual.eval.run import RunConfig
from verl_personadual.eval.systems import BuiltGenerator
from verl_personadual.utils.fingerprint import model_identity

__all__ = ["FppsGenerator", "fpps_generator"]


class FppsGenerator:
    """One FPPS variant of an artifact on the harness's transformers model (module docstring)."""

    def __init__(self, gen: HFGenerator, artifact: FppsArtifact, variant: Variant) -> None:
        self.tokenizer = gen.tokenizer
        self.artifact = artifact
        self.config = artifact.config(variant)
        self._gen = gen
        self._calibration = frozenset(artifact.calibration_items)

    def generate_rows(
        self,
        rows: Sequence[EvalRow],
        prompts: Sequence[list[int]],
        max_new_tokens: Sequence[int],
        seeds: Sequence[int],
    ) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """``generate.RowGenerator.generate_rows`` under FPPS (greedy: ``seeds`` are not used)."""
        if not prompts:
            return [], []
        check_disjoint(self._calibration, rows, "the eval set")
        style, kwargs = self.artifact.prompt_style, self.artifact.manifest["chat_template_kwargs"]
        pairs = []
        for row, prompt in zip(rows, prompts):
            persona, plain = prompt_pair(self.tokenizer, row, style, kwargs)
            if list(prompt) != persona:
                raise FppsError(
                    f"row {row.row_id}: the run's prompt is not the {style.value} prompt the FPPS artifact "
                    "was fit with; FPPS decodes free from that prompt only"
                )
            pairs.append((persona, plain))
        gens = fpps_generate(
            self._gen.model,
            pairs,
            self.config,
            max_new_tokens=max(max_new_tokens),
            eos_ids=self._gen.eos,
            pad_id=self._gen.pad_id,
        )
        fields = [
            {
                "fpps": {
                    "variant": self.config.variant,
                    "layer": self.config.layer,
                    "p_hat": g.p_hat,
                    "hard": g.hard,
                    "soft_coef": g.soft_coef,
                }
            }
            for g in gens
        ]
        return [g.token_ids[:budget] for g, budget in zip(gens, max_new_tokens)], fields


def fpps_generator(variant: Variant, cfg: RunConfig, artifact_path: Path | None) -> BuiltGenerator:
    """The generator of FPPS ``variant`` for the run ``cfg`` (of an FPPS system) with the artifact in
    ``artifact_path``, after the checks of the module docstring (FppsError naming what to change); its pins are the
    artifact's identity (``{"fpps": ...}``)."""
    assert cfg.system is not None
    flag = f"--system {cfg.system.name}"
    if artifact_path is None:
        raise FppsError(f"{flag} needs --fpps DIR (an artifact written by `eval fpps-fit`)")
    if cfg.backend == "vllm":
        raise FppsError(f"{flag}: vLLM cannot hook hidden states; use --backend hf")
    if cfg.seeds is not None or cfg.decoding.temperature > 0:
        raise FppsError(f"{flag} decodes greedily only (FPPS is fit on greedy answers); drop --seeds and --temperature")
    if cfg.decodings != [Decoding.FREE]:
        given = " ".join(d.value for d in cfg.decodings)
        raise FppsError(f"{flag} is read from decoding free only; got --decoding {given}")
    artifact = load_artifact(artifact_path)
    check_checkpoint(artifact.manifest, model_identity(cfg.model), f"--fpps {artifact.path}")
    if artifact.prompt_style is not cfg.prompt_style:
        raise FppsError(
            f"--fpps {artifact.path} was fit with prompt style {artifact.prompt_style.value}, this run "
            f"uses {cfg.prompt_style.value}"
        )
    if artifact.manifest["chat_template_kwargs"] != cfg.chat_template_kwargs:
        raise FppsError(
            f"--fpps {artifact.path} was fit with --chat-template-kwargs "
            f"{artifact.manifest['chat_template_kwargs']}, this run uses {cfg.chat_template_kwargs}"
        )
    if cfg.eval_set is not None:
        check_disjoint(artifact.calibration_items, read_eval_set(cfg.eval_set), f"--eval-set {cfg.eval_set}")
    gen = hf_generator(cfg.model, cfg.decoding, cfg.device, cfg.dtype)
    return BuiltGenerator(FppsGenerator(gen, artifact, variant), {"fpps": artifact.identity()})
