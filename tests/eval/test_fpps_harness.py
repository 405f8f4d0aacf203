"""FPPS in the eval harness: ``eval fpps-fit`` and ``eval run --system fpps_h|fpps_s|fpps_m --fpps DIR`` on the
suite's tiny Qwen3 and a toy eval set split into a calibration and a test half.

The tiny model is first taught (80 CPU steps, a few seconds) to answer ``{"answer": "true"}`` whenever the prompt
carries a persona and ``{"answer": "false"}`` when it does not. That makes every expectation hand-checkable: with
the persona the answer is right iff gold is "true", without it iff gold is "false", so the factual-degraded rows are
the non-``helpful`` rows with gold "false" and the personalized-beneficial rows (``--personalized task=helpful``) the
``helpful`` rows with gold "true". With ``--layer 1`` (the last of its 2 blocks) FPPS-H at τ = 0 replaces the
final state by the persona-free stream's, so its run is exactly the ``no_persona`` run; at τ > 1 it never gates, so
its run is exactly the plain persona run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from commands import teach

from verl_personadual.apps.eval_cli import main
from verl_personadual.core.prompts import format_answer
from verl_personadual.data import toy
from verl_personadual.data.eval_sets import EvalRow, read_eval_set
from verl_personadual.data.families import Selector
from verl_personadual.eval.baselines import PromptStyle
from verl_personadual.eval.fpps import fit as fit_module
from verl_personadual.eval.fpps.artifact import ARRAYS, FppsError, load_artifact, prompt_pair
from verl_personadual.eval.fpps.fit import GENERATIONS, GridPoint, best_points, grid_points
from verl_personadual.eval.fpps.probe import last_prompt_states
from verl_personadual.eval.generate import HFGenerator
from verl_personadual.eval.store import read_predictions
from verl_personadual.eval.systems import SECTIONS, systems
from verl_personadual.utils.fingerprint import checkpoint_fingerprint

MAX_NEW = 12  # the taught answer is 8 tokens
#: Fields of a prediction that come from the generated response (the rest names the row and the prompt style).
RESPONSE_FIELDS = ("response", "response_tokens", "truncated", "pred", "correct", "format_ok", "mode")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny model's ops gain nothing from more, and the suite's 2 cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(calibration, test): the two halves by item of a 24-item toy eval set."""
    out = tmp_path_factory.mktemp("toy")
    toy.build(out, toy.ToySizes(sft=2, rl=2, rl_val=2, eval=24))
    lines = (out / "eval_set.jsonl").read_text().splitlines()
    items = sorted({json.loads(line)["item_id"] for line in lines})
    cal, test = out / "cal.jsonl", out / "test.jsonl"
    cal.write_text("".join(line + "\n" for line in lines if json.loads(line)["item_id"] in items[:12]))
    test.write_text("".join(line + "\n" for line in lines if json.loads(line)["item_id"] not in items[:12]))
    return cal, test


def _persona_answers(row: EvalRow, with_persona: bool) -> str:
    """What the taught model answers (module docstring)."""
    return "true" if with_persona and row.persona is not None else "false"


@pytest.fixture(scope="module")
def taught_dir(tiny_model_dir: Path, toy_sets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model taught the persona -> "true", no persona -> "false" rule on the toy rows (module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seqs = []
    for row in [*read_eval_set(toy_sets[0]), *read_eval_set(toy_sets[1])]:
        for ids, with_persona in zip(prompt_pair(tok, row, PromptStyle.PERSONA, {}), (True, False)):
            answer = tok.encode(format_answer(_persona_answers(row, with_persona)), add_special_tokens=False)
            seqs.append((ids, [*answer, tok.eos_token_id]))
    return teach(model, tok, seqs, tmp_path_factory.mktemp("taught"))


def _fit_args(model: Path, cal: Path, out: Path, *extra: str) -> list[str]:
    fixed = f"--personalized task=helpful --max-new-tokens {MAX_NEW} --layer 1 --gammas 1 --device cpu --batch-size 8"
    return ["fpps-fit", "--model", str(model), "--eval-set", str(cal), "--out", str(out), *fixed.split(), *extra]


def _run_args(model: Path, test: Path, out: Path, *extra: str) -> list[str]:
    fixed = f"--benchmarks toy --max-new-tokens {MAX_NEW} --backend hf --device cpu --batch-size 8 --no-progress"
    return ["run", "--model", str(model), "--out", str(out), "--eval-set", str(test), *fixed.split(), *extra]


def errors(capsys) -> list[str]:
    return [line[len("error: ") :] for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def artifact_tau0(taught_dir: Path, toy_sets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact fit with the only τ 0 (FPPS-H then gates every row)."""
    out = tmp_path_factory.mktemp("fpps") / "tau0"
    assert main(_fit_args(taught_dir, toy_sets[0], out, "--test-eval-set", str(toy_sets[1]), "--taus", "0")) == 0
    return out


@pytest.fixture(scope="module")
def artifact_tau_high(artifact_tau0: Path, taught_dir: Path, toy_sets: tuple[Path, Path]) -> Path:
    """The same fit rerun in a copy of its directory with the only τ 1.5 (FPPS-H then never gates): every
    generation comes from the caches (generating anything here fails the fixture)."""
    out = artifact_tau0.parent / "tau_high"
    shutil.copytree(artifact_tau0, out)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a rerun with the same generation settings generated again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HFGenerator, "generate", refuse)
        mp.setattr(fit_module, "fpps_generate", refuse)
        assert main(_fit_args(taught_dir, toy_sets[0], out, "--taus", "1.5")) == 0
    return out


def test_fit_pins_its_checkpoint_and_writes_the_artifact(
    artifact_tau0: Path, artifact_tau_high: Path, taught_dir: Path, tiny_model_dir: Path, toy_sets, capsys
):
    cal, test = toy_sets
    rows = [r for r in read_eval_set(cal) if r.persona is not None]
    # the taught behaviour, as cached: right with the persona iff gold is true, without it iff gold is false
    gens = {(g["row_id"], g["decoding"]): g for g in read_predictions(artifact_tau0 / GENERATIONS)}
    assert len(gens) == 2 * len(rows)
    for row in rows:
        assert gens[(row.row_id, "persona")]["pred"] == "true" and gens[(row.row_id, "no_persona")]["pred"] == "false"
    manifest = json.loads((artifact_tau0 / "manifest.json").read_text())
    assert manifest["model"] == str(taught_dir.resolve())
    assert manifest["model_fingerprint"] == checkpoint_fingerprint(taught_dir)
    assert (manifest["layer"], manifest["layer_source"], manifest["num_layers"]) == (1, "--layer", 2)
    groups = manifest["groups"]
    fact = sum(g["factual_degraded"] for g in groups.values())
    pers = sum(g["personalized_beneficial"] for g in groups.values())
    assert fact == sum(r.task != "helpful" and r.gold == "false" for r in rows) > 0
    assert pers == sum(r.task == "helpful" and r.gold == "true" for r in rows) > 0
    assert manifest["calibration"]["items"] == sorted({r.item_id for r in read_eval_set(cal)})
    assert manifest["calibration"]["test_eval_set"] == str(test.resolve())
    assert manifest["variants"]["hard"]["tau"] == 0.0 and manifest["variants"]["soft"]["gamma"] == 1.0
    assert json.loads((artifact_tau_high / "manifest.json").read_text())["variants"]["hard"]["tau"] == 1.5
    for name in (
        "plots/delta_by_layer.png",
        "plots/probe_accuracy.png",
        "tables/delta_by_layer.csv",
        "tables/probe_accuracy.csv",
        "tables/grid.md",
    ):
        assert (artifact_tau0 / name).is_file(), name
    artifact = load_artifact(artifact_tau0)
    assert artifact.probe.weight.shape == artifact.steering_vector.shape == (64,)
    # another checkpoint is refused, naming both: a rerun of the fit, and a run
    assert main(_fit_args(tiny_model_dir, cal, artifact_tau0, "--taus", "0")) == 2
    (line,) = errors(capsys)
    assert str(taught_dir.resolve()) in line and str(tiny_model_dir.resolve()) in line
    out = artifact_tau0.parent / "run_other_model"
    assert main(_run_args(tiny_model_dir, test, out, "--system", "fpps_h", "--fpps", str(artifact_tau0))) == 2
    (line,) = errors(capsys)
    assert str(taught_dir.resolve()) in line and str(tiny_model_dir.resolve()) in line
    assert not out.exists()
    # an arrays file that is not the one the manifest names (an interrupted or edited fit) is refused
    broken = artifact_tau0.parent / "broken"
    shutil.copytree(artifact_tau0, broken)
    (broken / ARRAYS).write_bytes(b"not the arrays")
    with pytest.raises(FppsError, match="interrupted or modified"):
        load_artifact(broken)


def test_calibration_items_in_the_test_set_are_refused(artifact_tau0: Path, taught_dir: Path, toy_sets, capsys):
    cal, _ = toy_sets
    out = artifact_tau0.parent / "overlap"
    assert main(_fit_args(taught_dir, cal, out, "--test-eval-set", str(cal))) == 2
    (line,) = errors(capsys)
    assert line.startswith(f"--test-eval-set {cal} shares 12 item(s) with the FPPS calibration set")
    assert not out.exists()
    run_dir = artifact_tau0.parent / "run_on_cal"
    assert main(_run_args(taught_dir, cal, run_dir, "--system", "fpps_h", "--fpps", str(artifact_tau0))) == 2
    (line,) = errors(capsys)
    assert line.startswith(f"--eval-set {cal} shares 12 item(s) with the FPPS calibration set")
    assert not run_dir.exists()


def _by_row(run_dir: Path) -> dict[str, dict]:
    return {p["row_id"]: p for p in read_predictions(run_dir / "predictions.jsonl")}


def test_hard_gate_at_tau_zero_and_above_one_reproduce_the_plain_runs(
    artifact_tau0: Path, artifact_tau_high: Path, taught_dir: Path, toy_sets, tmp_path: Path
):
    _, test = toy_sets
    runs = {
        "no_persona": ["--prompt-style", "no_persona", "--decoding", "free"],
        "base": ["--system", "base"],
        "h0": ["--system", "fpps_h", "--fpps", str(artifact_tau0)],
        "h_high": ["--system", "fpps_h", "--fpps", str(artifact_tau_high)],
        "s": ["--system", "fpps_s", "--fpps", str(artifact_tau0)],
    }
    for name, extra in runs.items():
        assert main(_run_args(taught_dir, test, tmp_path / name, *extra)) == 0, name
    plain, persona = _by_row(tmp_path / "no_persona"), _by_row(tmp_path / "base")
    gated, ungated = _by_row(tmp_path / "h0"), _by_row(tmp_path / "h_high")
    rows = read_eval_set(test)
    assert set(plain) == set(persona) == set(gated) == set(ungated) == {r.row_id for r in rows}
    with_persona = [r.row_id for r in rows if r.persona is not None]
    assert {persona[i]["pred"] for i in with_persona} == {"true"} and {plain[i]["pred"] for i in plain} == {"false"}
    for row_id in plain:
        assert [gated[row_id][k] for k in RESPONSE_FIELDS] == [plain[row_id][k] for k in RESPONSE_FIELDS]
        assert [ungated[row_id][k] for k in RESPONSE_FIELDS] == [persona[row_id][k] for k in RESPONSE_FIELDS]
        assert gated[row_id]["fpps"]["hard"] and not ungated[row_id]["fpps"]["hard"]
        assert gated[row_id]["prompt_style"] == "persona"

    # p̂ in the predictions is σ(W·h + b) of the artifact's probe on the last persona-prompt token's layer-1 state
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(taught_dir)
    model = AutoModelForCausalLM.from_pretrained(taught_dir, dtype=torch.float32).eval()
    states = last_prompt_states(model, [prompt_pair(tok, r, PromptStyle.PERSONA, {})[0] for r in rows], 1)
    artifact = load_artifact(artifact_tau0)
    expected = 1.0 / (1.0 + np.exp(-(states @ artifact.probe.weight + artifact.probe.bias)))
    got = np.array([gated[r.row_id]["fpps"]["p_hat"] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert {gated[r.row_id]["fpps"]["variant"] for r in rows} == {"hard"}
    soft = _by_row(tmp_path / "s")  # FPPS-S with the fitted γ = 1: the coefficient γ·(p̂ − 0.5), never gated
    for r in rows:
        record = soft[r.row_id]["fpps"]
        assert record["variant"] == "soft" and not record["hard"]
        assert record["soft_coef"] == pytest.approx(record["p_hat"] - 0.5, abs=1e-12)
        assert record["p_hat"] == pytest.approx(gated[r.row_id]["fpps"]["p_hat"], rel=1e-6)
    assert json.loads((tmp_path / "h0" / "run_config.json").read_text())["generator"] == {"fpps": artifact.identity()}

    # Table 1: the FPPS systems come after the paper's rows, in their own section
    assert [s.name for s in systems()[-3:]] == ["fpps_h", "fpps_s", "fpps_m"]
    assert {s.section for s in systems()[-3:]} == {"Hidden-state steering (FPPS)"}
    assert {s.section for s in systems()[:-3]} == set(SECTIONS)
    cmp_dir = tmp_path / "cmp"
    compared = ["--system", f"fpps_h={tmp_path / 'h0'}", "--system", f"base={tmp_path / 'base'}"]
    assert main(["compare", *compared, "--out", str(cmp_dir)]) == 0
    lines = (cmp_dir / "table1.csv").read_text().splitlines()
    assert lines[1:] == ["Backbone,General purpose models", "FPPS-H,Hidden-state steering (FPPS)"]


def test_what_fpps_cannot_do_is_one_error_line(artifact_tau0: Path, taught_dir: Path, toy_sets, tmp_path, capsys):
    _, test = toy_sets
    fpps = ["--system", "fpps_h", "--fpps", str(artifact_tau0)]
    cases = [
        (["--backend", "vllm", *fpps], "--system fpps_h: vLLM cannot hook hidden states; use --backend hf"),
        (["--temperature", "0.5", *fpps], "--system fpps_h decodes greedily only"),
        (["--system", "fpps_s"], "--system fpps_s needs --fpps DIR"),
        (["--system", "base", "--fpps", str(artifact_tau0)], "--fpps needs --system fpps_h, fpps_s, fpps_m"),
    ]
    for extra, message in cases:
        out = tmp_path / "refused"
        assert main(_run_args(taught_dir, test, out, *extra)) == 2, extra  # a later --backend wins
        (line,) = errors(capsys)
        assert line.startswith(message), (extra, line)
        assert not out.exists()


def test_grid_outcomes_give_the_hand_computed_accuracies_and_choices():
    p_hat = np.array([0.2, 0.6, 0.9, 0.4])
    plain, gated = np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0])
    soft = {1.0: np.array([1.0, 1.0, 0.0, 0.0]), 2.0: np.array([1.0, 1.0, 0.0, 0.0])}
    objective = np.array([True, True, False, False])  # rows 0, 1 objective; 2, 3 personalized
    points = grid_points(p_hat, plain, gated, soft, objective, taus=[0.5, 0.95])
    got = {(p.variant, p.gamma, p.tau): (p.objective, p.personalized) for p in points}
    # hard τ 0.5: rows 1, 2 gated -> [1, 1, 1, 1]; τ 0.95: none -> plain [1, 0, 0, 1]
    assert got[("hard", None, 0.5)] == (100.0, 100.0) and got[("hard", None, 0.95)] == (50.0, 50.0)
    assert got[("soft", 1.0, None)] == got[("soft", 2.0, None)] == (100.0, 0.0)
    # mixed γ 1, τ 0.5: gated rows 1, 2, soft rows 0, 3 -> [1, 1, 1, 0]
    assert got[("mixed", 1.0, 0.5)] == (100.0, 50.0) and got[("mixed", 1.0, 0.95)] == (100.0, 0.0)
    best = best_points(points)
    assert best["hard"] == GridPoint("hard", None, 0.5, 100.0, 100.0)
    assert best["soft"].gamma == 1.0  # a tie: the smaller γ
    assert (best["mixed"].gamma, best["mixed"].tau) == (1.0, 0.5)
    tied = [GridPoint("hard", None, 0.3, 50.0, 50.0), GridPoint("hard", None, 0.7, 50.0, 50.0)]
    assert best_points(tied)["hard"].tau == 0.7  # a tie: the larger τ


# the fit with its defaults: no --layer (the RRF choice), the paper's γ / τ grid, m_fact over every objective row
# answered correctly without the persona


@pytest.fixture(scope="module")
def artifact_default(taught_dir: Path, toy_sets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fpps") / "default"
    fixed = f"--personalized task=helpful --max-new-tokens {MAX_NEW} --device cpu --batch-size 8"
    assert (
        main(
            ["fpps-fit", "--model", str(taught_dir), "--eval-set", str(toy_sets[0]), "--out", str(out)] + fixed.split()
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def artifact_gamma2(artifact_default: Path, taught_dir: Path, toy_sets: tuple[Path, Path]) -> Path:
    """The default fit rerun in a copy with γ = 2 only (on the paper's grid, so cached) and τ ∈ {0.5, 0.98}: the
    soft branch then steers (γ = 0, the default fit's choice here, leaves it unsteered)."""
    out = artifact_default.parent / "gamma2"
    shutil.copytree(artifact_default, out)
    fixed = f"--personalized task=helpful --max-new-tokens {MAX_NEW} --device cpu --batch-size 8"
    args = ["fpps-fit", "--model", str(taught_dir), "--eval-set", str(toy_sets[0]), "--out", str(out)]
    assert main([*args, *fixed.split(), "--gammas", "2", "--taus", "0.5", "0.98"]) == 0
    return out


def _fit_parts(artifact: Path, cal: Path) -> tuple[list[EvalRow], list[EvalRow], list[EvalRow]]:
    """(fitting-part factual-degraded rows, fitting-part personalized-beneficial rows, held-out rows with a persona)
    of the taught model (module docstring), from the manifest's held-out item ids."""
    held_items = set(json.loads((artifact / "manifest.json").read_text())["calibration"]["held_out_item_ids"])
    rows = [r for r in read_eval_set(cal) if r.persona is not None]
    fitting = [r for r in rows if r.item_id not in held_items]
    fact = [r for r in fitting if r.task != "helpful" and r.gold == "false"]
    pers = [r for r in fitting if r.task == "helpful" and r.gold == "true"]
    return fact, pers, [r for r in rows if r.item_id in held_items]


def test_default_fit_searches_the_papers_grid_and_keeps_its_surface(artifact_default: Path):
    manifest = json.loads((artifact_default / "manifest.json").read_text())
    gammas = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0]
    taus = [round(t / 100, 2) for t in range(5, 101)]
    assert manifest["grid"]["gammas"] == gammas and manifest["grid"]["taus"] == taus
    assert manifest["steering_vector"]["fact_mean"] == "correct_without_persona"
    with np.load(artifact_default / ARRAYS) as arrays:
        surface = {k: arrays[k] for k in ("grid_gammas", "grid_taus", "grid_hard", "grid_soft", "grid_mixed")}
    assert surface["grid_gammas"].tolist() == gammas and surface["grid_taus"].tolist() == taus
    assert surface["grid_hard"].shape == (96, 2) and surface["grid_soft"].shape == (16, 2)
    assert surface["grid_mixed"].shape == (16, 96, 2) and not np.isnan(surface["grid_mixed"]).any()
    # each variant's recorded choice is the surface's best score (ties: smaller γ, then larger τ), read off the arrays
    score = {k: surface[k].mean(axis=-1) for k in ("grid_hard", "grid_soft", "grid_mixed")}
    t = max(range(96), key=lambda i: (score["grid_hard"][i], i))
    g = max(range(16), key=lambda i: (score["grid_soft"][i], -i))
    gm, tm = max(np.ndindex(16, 96), key=lambda ij: (score["grid_mixed"][ij], -ij[0], ij[1]))
    chosen = manifest["variants"]
    assert (chosen["hard"]["tau"], chosen["soft"]["gamma"]) == (taus[t], gammas[g])
    assert (chosen["mixed"]["gamma"], chosen["mixed"]["tau"]) == (gammas[gm], taus[tm])
    assert chosen["mixed"]["objective_%"] == surface["grid_mixed"][gm, tm, 0]
    assert chosen["mixed"]["personalized_%"] == surface["grid_mixed"][gm, tm, 1]
    assert (artifact_default / "plots" / "grid.png").is_file()


def test_default_layer_is_the_hand_computed_rrf_choice(artifact_default: Path, taught_dir: Path, toy_sets):
    """Δ per layer recomputed from transformers' own hidden states (logit lens: final norm then head; the last
    layer's readout is the model's logits), ranked and fused by hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(taught_dir)
    model = AutoModelForCausalLM.from_pretrained(taught_dir, dtype=torch.float32).eval()
    fact, pers, _ = _fit_parts(artifact_default, toy_sets[0])

    def ppl(prompt: list[int], answer: list[int]) -> list[float]:
        with torch.no_grad():
            out = model(torch.tensor([prompt + answer]), output_hidden_states=True)
            readouts = [model.lm_head(model.model.norm(out.hidden_states[1]))[0], out.logits[0]]
        span = slice(len(prompt) - 1, len(prompt) + len(answer) - 1)  # the positions predicting the answer
        return [
            float(torch.exp(-torch.log_softmax(r[span], dim=-1)[torch.arange(len(answer)), answer].mean()))
            for r in readouts
        ]

    def mean_delta(rows: list[EvalRow]) -> np.ndarray:
        deltas = []
        for row in rows:
            with_p, without = prompt_pair(tok, row, PromptStyle.PERSONA, {})
            answer = tok.encode(format_answer(row.gold), add_special_tokens=False)
            a, b = np.array(ppl(with_p, answer)), np.array(ppl(without, answer))
            deltas.append((a - b) / a)
        return np.mean(deltas, axis=0)

    fact_delta, pers_delta = mean_delta(fact), mean_delta(pers)
    fact_rank = [1, 2] if fact_delta[0] >= fact_delta[1] else [2, 1]  # higher Δ first
    pers_rank = [1, 2] if pers_delta[0] <= pers_delta[1] else [2, 1]  # lower Δ first
    rrf = [1 / (60 + fact_rank[i]) + 1 / (60 + pers_rank[i]) for i in range(2)]
    expected = 0 if rrf[0] >= rrf[1] else 1
    manifest = json.loads((artifact_default / "manifest.json").read_text())
    assert (manifest["layer"], manifest["layer_source"], manifest["rrf_layer"]) == (expected, "rrf", expected)
    with np.load(artifact_default / ARRAYS) as arrays:
        np.testing.assert_allclose(arrays["fact_delta"], fact_delta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(arrays["pers_delta"], pers_delta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(arrays["rrf"], rrf, rtol=1e-12)
    assert load_artifact(artifact_default).layer == expected


def test_steering_vector_is_m_fact_minus_m_pers_of_the_fitting_rows(artifact_default: Path, taught_dir: Path, toy_sets):
    """s_f = mean over the fitting part's objective rows answered right without the persona (here the non-helpful
    gold-false rows) of the response-token mean layer-L state of (persona-free prompt + its cached response), minus
    the same over the personalized-beneficial rows with (persona prompt + its cached response)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(taught_dir)
    model = AutoModelForCausalLM.from_pretrained(taught_dir, dtype=torch.float32).eval()
    fact, pers, _ = _fit_parts(artifact_default, toy_sets[0])
    gens = {(g["row_id"], g["decoding"]): g for g in read_predictions(artifact_default / GENERATIONS)}
    layer = load_artifact(artifact_default).layer

    def mean_state(rows: list[EvalRow], with_persona: bool) -> np.ndarray:
        states = []
        for row in rows:
            prompt = prompt_pair(tok, row, PromptStyle.PERSONA, {})[0 if with_persona else 1]
            response = gens[(row.row_id, "persona" if with_persona else "no_persona")]["response_ids"]
            seen = []  # the output of block `layer` (0-based), as transformers computes it
            hook = model.model.layers[layer].register_forward_hook(
                lambda _m, _a, o: seen.append(o[0] if isinstance(o, tuple) else o)
            )
            with torch.no_grad():
                model(torch.tensor([prompt + response]))
            hook.remove()
            h = seen[0][0]
            states.append(h[len(prompt) :].double().mean(dim=0).numpy())
        return np.mean(states, axis=0)

    expected = mean_state(fact, with_persona=False) - mean_state(pers, with_persona=True)
    manifest = json.loads((artifact_default / "manifest.json").read_text())
    assert (manifest["steering_vector"]["fact_rows"], manifest["steering_vector"]["pers_rows"]) == (
        len(fact),
        len(pers),
    )
    np.testing.assert_allclose(load_artifact(artifact_default).steering_vector, expected, rtol=1e-4, atol=1e-5)


def test_contrast_groups_on_a_planted_set(toy_sets):
    """m_fact's rows: every objective row right without the persona, degraded or not, one per persona-free prompt;
    the factual-degraded group only those the persona breaks; personalized-beneficial: right with the persona only."""
    rows = [r for r in read_eval_set(toy_sets[0]) if r.persona is not None]
    objective = [r for r in rows if r.task != "helpful"][:4]
    personal = [r for r in rows if r.task == "helpful"][:2]
    # (correct with the persona, correct without); objective[3] repeats objective[2]'s persona-free prompt
    planted = {
        objective[0].row_id: (0, 1),  # degraded
        objective[1].row_id: (1, 1),  # right either way: in m_fact, not degraded
        objective[2].row_id: (1, 0),  # wrong without: neither
        objective[3].row_id: (0, 1),  # degraded, same persona-free prompt as objective[1]
        personal[0].row_id: (1, 0),  # beneficial
        personal[1].row_id: (1, 1),  # right either way: not beneficial
    }
    done, pairs = {}, {}
    for i, row in enumerate([*objective, *personal]):
        with_p, without = planted[row.row_id]
        done[(row.row_id, "persona")] = {"correct": with_p, "response_ids": [i, 1]}
        done[(row.row_id, "no_persona")] = {"correct": without, "response_ids": [i, 0]}
        pairs[row.row_id] = ([i, 1000], [i, 2000])
    pairs[objective[3].row_id] = ([3, 1000], pairs[objective[1].row_id][1])
    selector = Selector.parse("task=helpful")
    fact, pers, correct_without = fit_module.contrast_groups([*objective, *personal], done, pairs, selector)
    assert [m.row for m in fact] == [objective[0], objective[3]]
    assert [m.row for m in correct_without] == [objective[0], objective[1]]  # objective[3]: a repeated prompt
    assert [(m.plain_ids, m.response_ids) for m in correct_without] == [([0, 2000], [0, 0]), ([1, 2000], [1, 0])]
    assert [m.row for m in pers] == [personal[0]] and (pers[0].persona_ids, pers[0].response_ids) == ([4, 1000], [4, 1])


@pytest.mark.parametrize("fitted", ["artifact_default", "artifact_gamma2"])
def test_grid_prediction_equals_a_run_with_the_chosen_settings(
    fitted: str, taught_dir: Path, toy_sets, tmp_path: Path, request
):
    """Each variant's held-out accuracies in the manifest are what `eval run` with its chosen γ / τ scores on the
    held-out calibration rows (the artifact copied with those items dropped from its calibration list, so the run
    accepts them)."""
    artifact = request.getfixturevalue(fitted)
    cal, _ = toy_sets
    _, _, held = _fit_parts(artifact, cal)
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    held_items = {r.item_id for r in held}
    manifest["calibration"]["items"] = [i for i in manifest["calibration"]["items"] if i not in held_items]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    held_set = tmp_path / "held.jsonl"
    lines = [line for line in cal.read_text().splitlines() if json.loads(line)["item_id"] in held_items]
    held_set.write_text("".join(line + "\n" for line in lines if json.loads(line)["persona"] is not None))
    for variant, system in (("hard", "fpps_h"), ("soft", "fpps_s"), ("mixed", "fpps_m")):
        out = tmp_path / system
        assert main(_run_args(taught_dir, held_set, out, "--system", system, "--fpps", str(copy))) == 0
        preds = _by_row(out)
        assert set(preds) == {r.row_id for r in held}
        objective = [float(preds[r.row_id]["correct"]) for r in held if r.task != "helpful"]
        personal = [float(preds[r.row_id]["correct"]) for r in held if r.task == "helpful"]
        chosen = manifest["variants"][variant]
        assert (100 * np.mean(objective), 100 * np.mean(personal)) == pytest.approx(
            (chosen["objective_%"], chosen["personalized_%"]), abs=1e-9
        ), variant


def test_compare_marks_greedy_fpps_rows_beside_sampled_ones(artifact_tau0: Path, taught_dir: Path, toy_sets, tmp_path):
    """FPPS decodes greedily only; a `--seeds` run samples. In one comparison the greedy line is marked and the
    caption says what the mark means (toy table and Table 1's CSV); with greedy lines only, nothing is marked."""
    _, test = toy_sets
    assert main(_run_args(taught_dir, test, tmp_path / "h", "--system", "fpps_h", "--fpps", str(artifact_tau0))) == 0
    assert main(_run_args(taught_dir, test, tmp_path / "base", "--system", "base", "--seeds", "0", "1")) == 0
    assert main(_run_args(taught_dir, test, tmp_path / "base1", "--system", "base")) == 0
    runs = {"fpps_h": tmp_path / "h", "base": tmp_path / "base"}
    cmp_dir = tmp_path / "cmp"
    assert (
        main(["compare", *[a for k, v in runs.items() for a in ("--system", f"{k}={v}")], "--out", str(cmp_dir)]) == 0
    )
    toy_md = (cmp_dir / "table1_toy.md").read_text()
    names = [line.split("|")[1].strip() for line in toy_md.splitlines() if line.startswith("| ") and "*" not in line]
    assert names[1:] == ["Backbone", "FPPS-H †"]
    assert "†: greedy decoding (temperature 0)" in toy_md.splitlines()[-1]
    csv = (cmp_dir / "table1.csv").read_text().splitlines()
    assert csv[0] == "system,section,sampling" and csv[1:] == [
        "Backbone,General purpose models,sampled",
        "FPPS-H,Hidden-state steering (FPPS),greedy",
    ]
    greedy_dir = tmp_path / "cmp_greedy"
    runs = {"fpps_h": tmp_path / "h", "base": tmp_path / "base1"}
    assert (
        main(["compare", *[a for k, v in runs.items() for a in ("--system", f"{k}={v}")], "--out", str(greedy_dir)])
        == 0
    )
    assert "†" not in (greedy_dir / "table1_toy.md").read_text() + (greedy_dir / "table1.csv").read_text()
