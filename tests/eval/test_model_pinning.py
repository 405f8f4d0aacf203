"""A resumed run never mixes two models: ``run_config.json`` pins the resolved model and a fingerprint of its files,
not the spelling of ``--model`` (issue 22, item 1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import TEST_SPEC

from verl_personadual.apps.tiny_model import build_model
from verl_personadual.core.prompts import DataSource, PersonaSetting
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval.generate import Decoding, DecodingParams
from verl_personadual.eval.run import RunConfig, RunError, run
from verl_personadual.eval.store import read_predictions
from verl_personadual.utils import fingerprint


def _cfg(model: str, out: Path, decodings: list[Decoding]) -> RunConfig:
    return RunConfig(
        model=model,
        out_dir=out,
        benchmarks=[DataSource.MMLU_PRO],
        settings=[PersonaSetting.NONE],
        decodings=decodings,
        paths=eval_sample_paths(),
        sizes={DataSource.MMLU_PRO: 2},
        backend="hf",
        device="cpu",
        dtype="float32",
        decoding=DecodingParams(max_new_tokens=3),
        progress=False,
    )


def test_same_relative_path_to_another_checkpoint_is_refused(tmp_path: Path, tokenizer_dir: Path, monkeypatch) -> None:
    a, b = tmp_path / "a" / "ckpt", tmp_path / "b" / "ckpt"
    build_model(a, tokenizer_dir, TEST_SPEC)
    build_model(b, tokenizer_dir, dataclasses.replace(TEST_SPEC, seed=7))
    out = tmp_path / "run"

    monkeypatch.chdir(tmp_path / "a")
    run(_cfg("ckpt", out, [Decoding.GENERAL]))

    # The same spelling from another directory is another checkpoint: refused before anything is generated.
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(RunError, match=r"differs from this run in \['model', 'model_fingerprint'\]"):
        run(_cfg("ckpt", out, [Decoding.GENERAL, Decoding.PERSONALIZED]))
    assert len(read_predictions(out / "predictions.jsonl")) == 2
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["model"] == str(a.resolve()) and saved["model_revision"] is None
    assert saved["model_fingerprint"] == fingerprint.checkpoint_fingerprint(a) != fingerprint.checkpoint_fingerprint(b)

    # The same checkpoint spelled differently resumes (here: adds a decoding).
    monkeypatch.chdir(tmp_path / "a")
    run(_cfg("ckpt/", out, [Decoding.GENERAL, Decoding.PERSONALIZED]))
    run(_cfg(str(a), out, [Decoding.GENERAL, Decoding.PERSONALIZED]))
    assert len(read_predictions(out / "predictions.jsonl")) == 4

    # Other weights at the same path: only the fingerprint differs, and it is named.
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    with pytest.raises(RunError, match=r"differs from this run in \['model_fingerprint'\]"):
        run(_cfg(str(a), out, [Decoding.GENERAL, Decoding.PERSONALIZED, Decoding.FREE]))


def test_fingerprint_reads_small_files_whole_and_large_ones_at_their_edges(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fingerprint, "FULL_HASH_BYTES", 16)
    monkeypatch.setattr(fingerprint, "EDGE_BYTES", 4)
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_bytes(b"{}")
    (d / "model.safetensors").write_bytes(b"HEAD" + b"m" * 20 + b"TAIL")
    (d / ".cache").write_bytes(b"ignored")
    (d / "sub").mkdir()
    (d / "sub" / "x").write_bytes(b"ignored")
    expected = hashlib.sha256(b"config.json\x002\x00{}\x00" + b"model.safetensors\x0028\x00HEADTAIL\x00").hexdigest()
    assert fingerprint.checkpoint_fingerprint(d) == f"sha256:{expected}"

    (d / "model.safetensors").write_bytes(b"HEAD" + b"x" * 20 + b"TAIL")  # the middle of a large file: not read
    assert fingerprint.checkpoint_fingerprint(d) == f"sha256:{expected}"
    (d / "model.safetensors").write_bytes(b"HEAD" + b"m" * 20 + b"TAIX")
    assert fingerprint.checkpoint_fingerprint(d) != f"sha256:{expected}"
    (d / "model.safetensors").write_bytes(b"HEAD" + b"m" * 20 + b"TAIL")
    (d / "config.json").write_bytes(b"[]")  # a small file: read whole
    assert fingerprint.checkpoint_fingerprint(d) != f"sha256:{expected}"


def test_identity_of_a_hub_id_not_in_the_cache_has_no_revision() -> None:
    assert fingerprint.model_identity("no-such-org/no-such-model") == {
        "model": "no-such-org/no-such-model",
        "model_revision": None,
        "model_fingerprint": None,
    }
