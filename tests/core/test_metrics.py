"""Mode metrics on a small batch with known modes, sources and persona settings (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest

from verl_personadual.core.metrics import mode_codes, mode_metrics

# (data_source, persona_setting, mode, reward); the last row is a balance-padding row (valid=False)
ROWS = [
    ("flan", "none", 0, 1.0),
    ("flan", "none", 1, 0.0),
    ("flan", "unaligned", 0, 0.5),
    ("flan", "unaligned", 0, 0.25),
    ("alignx", "aligned", 1, 1.0),
    ("alignx", "aligned", 1, 0.5),
    ("alignx", "aligned", 0, 0.0),
    ("alignx", "aligned", -1, 0.25),
    ("flan", "none", -1, 9.0),
]
VALID = np.array([True] * 8 + [False])

FLAN_NONE = {
    "count": 2,
    "personalized_rate": 0.5,
    "unknown_rate": 0.0,
    "reward_general": 1.0,
    "reward_personalized": 0.0,
    "reward_gap": -1.0,
}
FLAN_UNALIGNED = {"count": 2, "personalized_rate": 0.0, "unknown_rate": 0.0, "reward_general": 0.375}
FLAN_ALL = {
    "count": 4,
    "personalized_rate": 0.25,
    "unknown_rate": 0.0,
    "reward_general": 1.75 / 3,
    "reward_personalized": 0.0,
    "reward_gap": -1.75 / 3,
}
ALIGNX = {
    "count": 4,
    "personalized_rate": 0.5,
    "unknown_rate": 0.25,
    "reward_general": 0.0,
    "reward_personalized": 0.75,
    "reward_gap": 0.75,
}
ALL_ALL = {
    "count": 8,
    "personalized_rate": 3 / 8,
    "unknown_rate": 1 / 8,
    "reward_general": 1.75 / 4,
    "reward_personalized": 0.5,
    "reward_gap": 0.5 - 1.75 / 4,
}
GROUPS = {
    "flan/none": FLAN_NONE,
    "flan/unaligned": FLAN_UNALIGNED,
    "flan/all": FLAN_ALL,
    "alignx/aligned": ALIGNX,
    "alignx/all": ALIGNX,
    "all/none": FLAN_NONE,
    "all/unaligned": FLAN_UNALIGNED,
    "all/aligned": ALIGNX,
    "all/all": ALL_ALL,
}


def columns(rows=ROWS):
    sources, settings, modes, rewards = zip(*rows)
    return np.array(modes, dtype=np.int8), np.array(rewards), list(sources), list(settings)


def expected(split: str) -> dict[str, float]:
    return {
        f"personadual/{split}/{group}/{name}": float(value)
        for group, values in GROUPS.items()
        for name, value in values.items()
        if split == "train" or name != "reward_gap"
    }


@pytest.mark.parametrize("split", ["train", "val"])
def test_values(split: str) -> None:
    modes, rewards, sources, settings = columns()
    got = mode_metrics(modes, rewards, sources, settings, split=split, valid=VALID)
    want = expected(split)
    assert sorted(got) == sorted(want)
    assert got == pytest.approx(want, abs=1e-12)
    assert all(type(v) is float for v in got.values())
    assert list(got) == sorted(got)


def test_without_valid_mask_counts_every_row() -> None:
    modes, rewards, sources, settings = columns(ROWS[:8])
    assert mode_metrics(modes, rewards, sources, settings, split="val") == expected("val")


def test_empty_after_mask() -> None:
    modes, rewards, sources, settings = columns(ROWS[-1:])
    assert mode_metrics(modes, rewards, sources, settings, "train", valid=np.array([False])) == {}


def test_mode_codes() -> None:
    assert mode_codes(["general", "personalized", "unknown"]).tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match=r"unknown mode name\(s\) \['General'\]"):
        mode_codes(["General"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: (c[0][:3], *c[1:]), "equal-length"),
        (lambda c: (np.where(c[0] == 1, 2, c[0]), *c[1:]), r"mode codes must be -1, 0 or 1; got \[2\]"),
        (lambda c: (c[0], np.where(c[1] == 1.0, np.nan, c[1]), *c[2:]), r"rewards must be finite; rows \[0, 4\]"),
        (lambda c: (*c[:3], ["aligned"] * 8 + ["Aligned"]), r"unknown persona setting\(s\) \['Aligned'\]"),
        (lambda c: (c[0], c[1], ["all"] + c[2][1:], c[3]), r"data source\(s\) \['all'\]"),
        (lambda c: (c[0], c[1], ["a/b"] + c[2][1:], c[3]), r"data source\(s\) \['a/b'\]"),
    ],
)
def test_bad_input(change, message: str) -> None:
    modes, rewards, sources, settings = change(columns())
    with pytest.raises(ValueError, match=message):
        mode_metrics(modes, rewards, sources, settings, split="train")


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        mode_metrics(*columns(), split="validation")


def test_length_metrics_per_mode_without_unknown_and_padding_rows() -> None:
    from verl_personadual.core.metrics import length_metrics

    modes = np.array([0, 0, 0, 1, 1, -1, 0])
    lengths = np.array([4, 8, 16, 2, 16, 16, 100])
    valid = np.array([True] * 6 + [False])  # the last row is balance padding
    got = length_metrics(modes, lengths, 16, "train", valid=valid)
    m = "personadual/train/all/all/length_"
    assert got == pytest.approx(
        {
            m + "general_mean": 28 / 3,  # 4, 8, 16
            m + "general_p95": 15.2,  # 8 + 0.9 * (16 - 8): position 0.95 * 2 = 1.9
            m + "general_clip_rate": 1 / 3,  # 16 reached the limit
            m + "personalized_mean": 9.0,  # 2, 16
            m + "personalized_p95": 15.3,  # 2 + 0.95 * (16 - 2)
            m + "personalized_clip_rate": 0.5,
        }
    )
    assert set(length_metrics(np.array([1]), np.array([3]), 16, "val")) == {
        "personadual/val/all/all/length_personalized_mean",
        "personadual/val/all/all/length_personalized_p95",
        "personadual/val/all/all/length_personalized_clip_rate",
    }


@pytest.mark.parametrize(
    ("modes", "settings", "expected"),
    [
        ([0] * 19 + [1] + [0] * 20, ["none"] * 20 + ["aligned"] * 20, 0),  # 95 % and 100 % general
        ([1] * 20 + [1] * 19 + [-1], ["none"] * 20 + ["aligned"] * 20, 1),  # a row without a mode counts against
        ([0] * 18 + [1] * 2 + [0] * 20, ["none"] * 20 + ["aligned"] * 20, None),  # 90 % in one setting
        ([0] * 20 + [1] * 20, ["none"] * 20 + ["aligned"] * 20, None),  # the mode follows the persona
        ([0] * 18 + [-1] * 2, ["unknown"] * 20, None),  # 90 % general, 10 % without a mode
        ([], [], None),
    ],
)
def test_collapsed_mode(modes, settings, expected) -> None:
    from verl_personadual.core.metrics import collapsed_mode

    assert collapsed_mode(np.array(modes, dtype=np.int8), settings) == expected
