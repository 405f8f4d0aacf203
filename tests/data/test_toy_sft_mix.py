"""The toy's SFT mode mix (``personalized_share``, ``verl_personadual.data.toy.sft_modes``): the rows written are
the mix asked for, exactly, per kind; without a share, both modes of every item (the quickstart's SFT)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from verl_personadual.apps import build_toy
from verl_personadual.data import toy


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _mix(rows: list[dict]) -> dict[tuple[str, str], int]:
    return dict(Counter((r["extra_info"]["task"], r["extra_info"]["mode"]) for r in rows))


def test_the_toy_tables_mix_one_fifth_personalized_on_every_kind(tmp_path: Path):
    sizes = toy.ToySizes(sft=3200, rl=16, rl_val=12, eval=0)
    manifest = toy.build(tmp_path, sizes, 0, toy.ToyVariant.RELATIONAL, {k.value: 0.2 for k in toy.ToyKind})
    rows = _rows(tmp_path / "sft" / "train.parquet")
    # 3,200 items: 480 none, 1,120 misleading, 1,120 helpful, 480 agreeing; a fifth of each personalized
    assert _mix(rows) == {
        ("none", "general"): 384,
        ("none", "personalized"): 96,
        ("misleading", "general"): 896,
        ("misleading", "personalized"): 224,
        ("helpful", "general"): 896,
        ("helpful", "personalized"): 224,
        ("agreeing", "general"): 384,
        ("agreeing", "personalized"): 96,
    }
    assert manifest["sft_rows"] == len(rows) == 3200
    assert len({r["extra_info"]["source_id"] for r in rows}) == 3200  # one row per item
    assert manifest["variant"] == "relational"
    assert manifest["sft_personalized_share"] == {"none": 0.2, "misleading": 0.2, "helpful": 0.2, "agreeing": 0.2}
    # the SFT validation file keeps both modes of every RL validation item (12 items: 4 helpful, 4 misleading, ...)
    val = _rows(tmp_path / "sft" / "validation.parquet")
    assert Counter(r["extra_info"]["mode"] for r in val) == {"general": 12, "personalized": 12}


def test_each_row_answers_by_its_modes_rule_and_the_first_of_each_kind_are_personalized(tmp_path: Path):
    sizes = toy.ToySizes(sft=40, rl=4, rl_val=4, eval=4)
    share = {"none": 0.5, "misleading": 0.25, "helpful": 1.0, "agreeing": 0.0}
    toy.build(tmp_path, sizes, 0, toy.ToyVariant.OCCUPATIONS, share)
    rows = _rows(tmp_path / "sft" / "train.parquet")
    # 40 items: 6 none, 14 misleading, 14 helpful, 6 agreeing; personalized: 3, floor(3.5 + 1/2) = 4, 14, 0
    assert _mix(rows) == {
        ("none", "general"): 3,
        ("none", "personalized"): 3,
        ("misleading", "general"): 10,
        ("misleading", "personalized"): 4,
        ("helpful", "personalized"): 14,
        ("agreeing", "general"): 6,
    }
    items = toy.generate(sizes, 0)["sft"]
    assert [r["extra_info"]["source_id"] for r in rows] == [it.item_id for it in items]  # split order, one each
    for kind, first in (("none", 3), ("misleading", 4)):
        modes = [r["extra_info"]["mode"] for r in rows if r["extra_info"]["task"] == kind]
        assert modes == ["personalized"] * first + ["general"] * (len(modes) - first)
    for row, item in zip(rows, items):
        prefix = "[Personalized_mode]" if row["extra_info"]["mode"] == "personalized" else "[General_mode]"
        verdict = item.says if prefix == "[Personalized_mode]" and item.says else item.book
        assert row["messages"][-1]["content"] == prefix + json.dumps({"answer": verdict})


def test_without_a_share_every_item_gives_both_modes(tmp_path: Path):
    manifest = toy.build(tmp_path, toy.ToySizes(sft=40, rl=4, rl_val=4, eval=4))
    rows = _rows(tmp_path / "sft" / "train.parquet")
    assert manifest["sft_rows"] == 80 and manifest["sft_personalized_share"] is None
    assert [r["extra_info"]["mode"] for r in rows] == ["general", "personalized"] * 40
    assert [r["extra_info"]["index"] for r in rows] == list(range(80))


@pytest.mark.parametrize(
    "share, message",
    [
        (
            {"none": 0.2, "helpful": 0.2},
            "personalized share: kinds ['misleading', 'agreeing'] missing; "
            "give each of ['none', 'misleading', 'helpful', 'agreeing'] a share",
        ),
        (
            {"none": 0.2, "misleading": 0.2, "helpful": 0.2, "agreeing": 0.2, "other": 0.1},
            "personalized share: kinds ['other'] unknown; "
            "give each of ['none', 'misleading', 'helpful', 'agreeing'] a share",
        ),
        (
            {"none": 0.2, "misleading": 1.5, "helpful": 0.2, "agreeing": 0.2},
            "personalized share {'misleading': 1.5}: a share is a fraction in [0, 1]",
        ),
    ],
)
def test_a_bad_share_is_refused_before_anything_is_written(tmp_path: Path, share, message):
    with pytest.raises(ValueError) as err:
        toy.build(tmp_path / "out", toy.ToySizes(sft=4, rl=4, rl_val=4, eval=4), 0, personalized_share=share)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_the_command_line_takes_one_share_or_one_per_kind(tmp_path: Path, capsys):
    small = ["--sft-items", "40", "--rl-items", "12", "--rl-val-items", "12", "--eval-items", "12"]
    assert build_toy.main(["--out", str(tmp_path / "a"), *small, "--personalized-share", "0.5"]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["sft_personalized_share"] == {"none": 0.5, "misleading": 0.5, "helpful": 0.5, "agreeing": 0.5}
    assert manifest["sft_rows"] == 40 and manifest["variant"] == "occupations"
    per_kind = ["none=0", "misleading=0.25", "helpful=1", "agreeing=0"]
    argv = ["--out", str(tmp_path / "b"), *small, "--variant", "relational", "--personalized-share", *per_kind]
    assert build_toy.main(argv) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["variant"] == "relational"
    assert manifest["sft_personalized_share"] == {"none": 0.0, "misleading": 0.25, "helpful": 1.0, "agreeing": 0.0}
    capsys.readouterr()
    assert build_toy.main(["--out", str(tmp_path / "c"), *small, "--personalized-share", "half"]) == 2
    assert capsys.readouterr().err == "error: --personalized-share: 'half' is not a number\n"
    assert build_toy.main(["--out", str(tmp_path / "d"), *small, "--personalized-share", "none=0.2", "0.3"]) == 2
    assert capsys.readouterr().err == (
        "error: --personalized-share '0.3': expected one SHARE for every kind, or KIND=SHARE\n"
    )
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


#: Digests of the default toy's files (the quickstart's; CI's --check-targets were measured on it) and of its
#: tokenizer text, computed with the generator of commit 4442bda, before the relational variant and the SFT mix.
DEFAULT_TOY_DIGESTS = {
    "eval_set.jsonl": "42e93194350736724fe19de01a9339733fa53cf88423d6406df157ff347655d3",
    "rl/train.parquet": "c657a24de400a958e7499b33696bec886eee1911f13d70057bce35e4d3849712",
    "rl/validation.parquet": "e592ccd6e2151a64df0249d29735719ce3f599b007e70a5333e6b5c5e1725fa2",
    "sft/train.parquet": "7c9cf232b204a07c51b6769a49aa480a733674e0c069e1015354e5a19cacbc14",
    "sft/validation.parquet": "fa026eb535b4693061ffd5545a35b4ae9c3e74d26385d8cc8d551116a054ddd7",
    "corpus+whole_words": "edbda546c17557f926ab84881c79766f158970b2edd95b8d1d8431304f266753",
}


def test_the_quickstarts_toy_is_unchanged(tmp_path: Path):
    toy.build(tmp_path)
    got = {"eval_set.jsonl": hashlib.sha256((tmp_path / "eval_set.jsonl").read_bytes()).hexdigest()}
    for name in ("rl/train.parquet", "rl/validation.parquet", "sft/train.parquet", "sft/validation.parquet"):
        rows = json.dumps(_rows(tmp_path / name), sort_keys=True)  # the rows, not parquet's bytes
        got[name] = hashlib.sha256(rows.encode()).hexdigest()
    text = json.dumps([toy.corpus(), toy.whole_words()])
    got["corpus+whole_words"] = hashlib.sha256(text.encode()).hexdigest()
    assert got == DEFAULT_TOY_DIGESTS
