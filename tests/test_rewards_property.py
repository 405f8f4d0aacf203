"""Property: no response text makes the reward raise, and the score stays in range, for every data source."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_personadual.names import MODE_FIELD
from verl_personadual.prompts import DataSource
from verl_personadual.rewards import RESULT_KEYS, compute_score, extract_answer

GOLD = {
    DataSource.ULTRAMEDICAL: ("B", {}),
    DataSource.FLAN: ("no", {"choices": ["yes", "no"]}),
    DataSource.ALIGNX: ("A", {}),
    DataSource.MMLU_PRO: ("C", {"choices": ["1", "2", "3", "N/A"]}),
    DataSource.SUPERGPQA: ("A", {"choices": ["joule", "newton"]}),
    DataSource.TRIVIAQA: (["Jupiter", "Planet Jupiter"], {}),
    DataSource.PUBMEDQA: ("maybe", {}),
    DataSource.MATH500: ("\\frac{1}{2}", {}),
    DataSource.PERSONAFEEDBACK: ("B", {}),
    DataSource.FSPO_ROLEPLAY: ("A", {}),
}
NON_MATH = [s for s in DataSource if s is not DataSource.MATH500]

# Fragments that steer random text into the extraction paths: JSON objects, fallbacks, prefixes, fences.
FRAGMENTS = [
    '{"answer": ', '"B"', '"', "}", "{", "'answer'", "\\boxed{", "answer is", "Answer:", "[General_mode]",
    "[Personalized_mode]", "```", "</answer>", "\n", "(", ")", "yes", "no", "maybe", "Jupiter", "\\frac{1}{2}",
    "null", "[", "]", ",", "\\", "ü", "😀", "\u202e", "\x00",
]
structured = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map("".join)
huge = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=40), st.integers(1, 3000))
responses = st.one_of(st.text(), structured, huge)
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses)
def test_math_never_raises(response) -> None:
    _check(DataSource.MATH500, response, "general", "none")


@settings(max_examples=300, deadline=None)
@given(response=responses)
def test_extraction_is_total(response) -> None:
    found = extract_answer(response)
    assert found.answer is None or (0 < len(found.answer) <= 1000)
    assert not found.format_ok or found.source == "json"
