"""``eval calibration-set``: an eval set drawn from the items another eval set (the test set) did not draw, on the
shipped sample files (4 items per benchmark; aligned personas replayed offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verl_personadual.apps.eval_cli import main
from verl_personadual.core.prompts import DataSource, PersonaSetting
from verl_personadual.data import samples
from verl_personadual.data.eval_sets import read_eval_set
from verl_personadual.data.samples import eval_sample_paths
from verl_personadual.eval.run import RunConfig, prepare_eval_set
from verl_personadual.utils.atomic import output_dir

OBJECTIVE = [DataSource.MMLU_PRO, DataSource.TRIVIAQA, DataSource.PUBMEDQA, DataSource.MATH500]
SETTINGS = [PersonaSetting.NONE, PersonaSetting.UNALIGNED, PersonaSetting.ALIGNED]


def _build(out: Path, sizes: dict[DataSource, int]) -> Path:
    """An eval set of the sample files, built as `eval run --samples` builds one."""
    cfg = RunConfig(
        model="",
        out_dir=out,
        benchmarks=[*OBJECTIVE, DataSource.PERSONAFEEDBACK],
        settings=SETTINGS,
        decodings=[],
        paths=dict(eval_sample_paths()),
        sizes=sizes,
        llm=samples.replay_config(),
        progress=False,
    )
    with output_dir(out):
        prepare_eval_set(cfg)
    return out / "eval_set.jsonl"


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test set that draws 2 of the 4 MMLU-Pro and TriviaQA items, 1 PersonaFeedback item and ALL of PubMedQA and
    MATH-500 (as Table 7 does with the full benchmarks)."""
    sizes = {DataSource.MMLU_PRO: 2, DataSource.TRIVIAQA: 2, DataSource.PERSONAFEEDBACK: 1}
    return _build(tmp_path_factory.mktemp("test_set"), sizes)


def _items(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in read_eval_set(path):
        out.setdefault(row.benchmark, set()).add(row.item_id)
    return out


def test_calibration_set_holds_every_item_the_test_set_did_not_draw(test_set: Path, tmp_path: Path, caplog):
    everything = _items(_build(tmp_path / "all", {}))  # the sample files' usable items, all drawn
    test = _items(test_set)
    assert {b: len(v) for b, v in test.items()} == {
        "mmlu_pro": 2,
        "triviaqa": 2,
        "pubmedqa": len(everything["pubmedqa"]),
        "math500": len(everything["math500"]),
        "personafeedback": 1,
    }
    out = tmp_path / "cal"
    cmd = ["calibration-set", "--samples", "--disjoint-from", str(test_set), "--out", str(out), "--no-progress"]
    benchmarks = ["--benchmarks", *(b.value for b in OBJECTIVE), "personafeedback"]
    with caplog.at_level("WARNING"):
        assert main([*cmd, *benchmarks]) == 0
    cal = _items(out / "eval_set.jsonl")
    # the rest of each benchmark; none of PubMedQA and MATH-500, which the test set used whole
    assert cal == {b: everything[b] - test[b] for b in ("mmlu_pro", "triviaqa", "personafeedback")}
    assert len(cal["mmlu_pro"]) == len(everything["mmlu_pro"]) - 2 > 0
    manifest = json.loads((out / "eval_manifest.json").read_text())
    assert manifest["exhausted"] == ["pubmedqa", "math500"]
    assert manifest["inputs"]["mmlu_pro"]["in_disjoint_from"] == 2
    assert manifest["selection"]["disjoint_from"] == str(test_set.resolve())
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("pubmedqa: all") and "the set gets no pubmedqa item" in m for m in warned)
    assert any(m.startswith("math500: all") for m in warned)
    # objective items under every setting, personas assigned as `eval run` assigns them
    rows = read_eval_set(out / "eval_set.jsonl")
    assert sorted(r.setting for r in rows if r.benchmark == "mmlu_pro") == sorted(
        [s.value for s in SETTINGS] * len(cal["mmlu_pro"])
    )
    # no item in common with the test set (what fpps-fit --test-eval-set checks)
    assert not set().union(*cal.values()) & set().union(*test.values())


def test_nothing_left_is_one_error_line(test_set: Path, tmp_path: Path, capsys):
    out = tmp_path / "cal"
    cmd = ["calibration-set", "--samples", "--disjoint-from", str(test_set), "--out", str(out), "--no-progress"]
    assert main([*cmd, "--benchmarks", "pubmedqa", "math500"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert line == (
        f"error: every usable item of ['pubmedqa', 'math500'] is in {test_set}: no item is left for a disjoint set "
        "(give more data with --data, or evaluate on fewer items)"
    )
    assert not out.exists()
