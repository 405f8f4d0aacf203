"""Property: no response text makes the reward raise, and the score stays in range, for every data source.

The generated responses include deep nesting (repetition loops after ``{"answer": ``), huge inputs, every
backslash escape inside a JSON string, think tags, mode prefixes and letter / hedge fragments.
"""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_personadual.core.names import MODE_FIELD
from verl_personadual.core.prompts import DataSource
from verl_personadual.core.rewards import (
    RESULT_KEYS,
    compute_score,
    dispatch,
    extract_answer,
)
from verl_personadual.core.rewards.mathcheck import MathServerError
from verl_personadual.data import benchmarks  # noqa: F401  (registers the benchmarks' data sources)

GOLD = {
    DataSource.ULTRAMEDICAL: ("B", {}),
    DataSource.FLAN: ("no", {"choices": ["yes", "no"]}),
    DataSource.ALIGNX: ("A", {"choices": ["A walk by the river at dusk.", "Binge a new series at home."]}),
    DataSource.MMLU_PRO: ("C", {"choices": ["1", "2", "3", "N/A"]}),
    DataSource.SUPERGPQA: ("A", {"choices": ["joule", "newton"]}),
    DataSource.TRIVIAQA: (["Jupiter", "Planet Jupiter"], {}),
    DataSource.PUBMEDQA: ("maybe", {}),
    DataSource.MATH500: ("\\frac{1}{2}", {}),
    DataSource.PERSONAFEEDBACK: ("B", {}),
    DataSource.FSPO_ROLEPLAY: ("A", {}),
    DataSource.TOY: ("false", {}),
}
NON_MATH = [s for s in DataSource if s is not DataSource.MATH500]

# Every escape a JSON string may meet: "\" + any printable ASCII character, \u with 0-4 hex digits, surrogates.
ESCAPES = ["\\" + c for c in string.printable] + ["\\u", "\\u00", "\\u00e9", "\\ud83d", "\\ude00", "\\ud83d\\ude00"]
# Fragments that steer random text into the extraction paths: JSON objects, fallbacks, prefixes, fences, think
# tags, LaTeX, letters and hedges.
FRAGMENTS = [
    '{"answer": ',
    '"B"',
    '"',
    "}",
    "{",
    "'answer'",
    "\\boxed{",
    "answer is",
    "Answer:",
    "[General_mode]",
    "[Personalized_mode]",
    "```",
    "</answer>",
    "\n",
    "(",
    ")",
    "yes",
    "no",
    "maybe",
    "Jupiter",
    "\\frac{1}{2}",
    "null",
    "[",
    "]",
    ",",
    "\\",
    "ü",
    "😀",
    "\u202e",
    "\x00",
    "<think>",
    "</think>",
    "\\text{",
    "\\frac",
    "\\neq",
    " or ",
    "/",
    "A strong",
    "Response B",
    "I prefer ",
    "The answer is ",
    "either ",
    "A walk by the river",
    "[[[[[[[[",
    "{{{{{{{{",
    '{"answer": [',
    "four",
    "true",
    "-0.5e3",
] + ESCAPES
structured = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)
in_json_string = st.lists(st.one_of(st.sampled_from(ESCAPES), st.text(max_size=4)), max_size=20).map(
    lambda parts: '{"answer": "' + "".join(parts) + '"}'
)
huge = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=40), st.integers(1, 3000))
deep = st.builds(
    lambda head, opener, n, tail: head + opener * n + tail,
    st.sampled_from(['{"answer": ', "Final answer: ", '{"answer": "B"}', ""]),
    st.sampled_from(["[", "{", '{"answer": ', '["', '{"a": [', "\\boxed{", "<think>", "(("]),
    st.integers(10, 100_000),
    st.sampled_from(["", '"B"', '\n{"answer": "B"}', "]" * 50, "}"]),
)
responses = st.one_of(st.text(), structured, in_json_string, huge)
modes = st.sampled_from([None, "general", "personalized", "unknown", "", 7])
settings_ = st.sampled_from([None, "none", "unaligned", "aligned", "?"])


def _check(source: DataSource, response: str, mode, setting) -> None:
    gold, extra = GOLD[source]
    info = dict(extra, persona_setting=setting)
    if mode is not None:
        info[MODE_FIELD] = mode
    out = compute_score(source.value, response, gold, info, math_timeout_s=2.0)
    assert tuple(out) == RESULT_KEYS
    assert 0.0 <= out["score"] <= 1.0
    assert out["correct"] in (0.0, 1.0) and out["format_ok"] in (0.0, 1.0)
    assert round(out["score"], 9) in (0.0, 0.1, 0.9, 1.0)
    assert isinstance(out["pred"], str) and len(out["pred"]) <= 100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(NON_MATH), response=responses, mode=modes, setting=settings_)
def test_rule_families_never_raise(source, response, mode, setting) -> None:
    _check(source, response, mode, setting)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=st.sampled_from(list(DataSource)), response=deep)
def test_deep_nesting_never_raises(source, response) -> None:
    _check(source, response, "general", "none")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=st.one_of(responses, in_json_string))
def test_math_never_raises(response) -> None:
    _check(DataSource.MATH500, response, "general", "none")


@pytest.mark.parametrize("source", list(DataSource))
def test_megabyte_responses_never_raise(source) -> None:
    for response in ["x" * 2**20, "{" * 2**20, '{"answer": "' + "\\f" * 2**19, "A or B, " * 2**17]:
        _check(source, response, "general", "none")


@settings(max_examples=300, deadline=None)
@given(response=st.one_of(responses, in_json_string))
def test_extraction_is_total(response) -> None:
    found = extract_answer(response)
    assert found.answer is None or (0 < len(found.answer) <= 1000)
    assert not found.format_ok or found.source == "json"


def test_an_internal_error_on_model_output_scores_as_no_answer(monkeypatch, caplog) -> None:
    def broken(*_):
        raise ZeroDivisionError("scorer bug")

    monkeypatch.setattr(dispatch, "score", broken)
    with caplog.at_level(logging.ERROR, logger=dispatch.__name__):
        out = compute_score("ultramedical", '{"answer": "B"}', "B", {})
    assert (out["score"], out["correct"], out["format_ok"], out["has_answer"], out["pred"]) == (0.0, 0.0, 0.0, 0.0, "")
    assert "scorer bug" in caplog.text and "multiple_choice" in caplog.text  # the traceback and the family


def test_a_math_checker_that_cannot_start_is_not_hidden(monkeypatch) -> None:
    def no_checker(*_):
        raise MathServerError("math child did not start")

    monkeypatch.setattr(dispatch, "score", no_checker)
    with pytest.raises(MathServerError):
        compute_score("math500", '{"answer": "\\\\sqrt{2}"}', "\\sqrt{2}", {})
