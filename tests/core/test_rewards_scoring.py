"""compute_score on hand-written responses for every data source and task family: exact scores and fields."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from verl_personadual.core.names import MODE_FIELD, RESPONSE_LENGTH_FIELD
from verl_personadual.core.prompts import (
    DataSource,
    PersonaSetting,
    TaskFamily,
    format_answer,
)
from verl_personadual.core.rewards import RESULT_KEYS, RewardInputError, compute_score
from verl_personadual.core.rewards.dispatch import resolve_family
from verl_personadual.core.rewards.families import source_names
from verl_personadual.data import benchmarks  # noqa: F401  (registers the benchmarks' data sources)

MMLU_CHOICES = ["4", "5", "6", "N/A", "N/A"]
GPQA_CHOICES = ["joule", "newton", "watt", "pascal"]
FLAN_CHOICES = ["yes", "it is not possible to tell", "no"]
MED = "ultramedical"

_rng = random.Random(1234)
NOISE = "".join(_rng.choice("abcdefghij klmnop\n{}[]\"':,.0123456789\\") for _ in range(50_000))
UNICODE = "患者は壊血病です 🤒 — «vitamine C» ∑ résumé\n"


def ans(text: str) -> str:
    return "Let me think step by step.\n" + format_answer(text)


# (data_source, ground_truth, extra_info, response, score, correct, format_ok, pred)
ROWS = [
    # UltraMedical exam item, gold letter
    (MED, "B", {}, ans("B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, "[General_mode]" + ans("B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, "[Personalized_mode] As a nurse you know this.\n" + format_answer("B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, ans("A"), 0.1, 0, 1, "A"),
    (MED, "B", {}, ans("(b)"), 1.0, 1, 1, "B"),
    (MED, "B", {}, ans("B. Vitamin C"), 1.0, 1, 1, "B"),
    (MED, "B", {}, ans("Option B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, ans("**B**"), 1.0, 1, 1, "B"),
    (MED, "B", {}, "Scurvy is ascorbate deficiency.\n\nSo, the answer is B.", 0.9, 1, 0, "B"),
    (MED, "B", {}, "The answer is (B) because vitamin C.", 0.9, 1, 0, "B"),
    (MED, "B", {}, "\\boxed{B}", 0.9, 1, 0, "B"),
    (MED, "B", {}, 'Answer: {"answer": "B"}\n```', 1.0, 1, 1, "B"),
    (MED, "B", {}, '{"answer": "A"}\n...wait, actually {"answer": "B"}', 1.0, 1, 1, "B"),
    (MED, "B", {}, '{"answer": "B"} I hope that helps.', 0.9, 1, 0, "B"),
    (MED, "B", {}, '{"answer": "B"', 0.0, 0, 0, ""),
    (MED, "B", {}, "", 0.0, 0, 0, ""),
    (MED, "B", {}, NOISE, 0.0, 0, 0, ""),
    (MED, "B", {}, NOISE + "\n" + format_answer("B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, UNICODE + format_answer("B"), 1.0, 1, 1, "B"),
    (MED, "B", {}, ans("K"), 0.1, 0, 1, ""),  # letter outside A-J: not a valid answer
    (MED, "B", {}, ans("Vitamin C"), 0.1, 0, 1, ""),  # option text without known options
    (MED, "b ", {}, ans("B"), 1.0, 1, 1, "B"),
    # MMLU-Pro: options padded with N/A, gold letter
    ("mmlu_pro", "B", {"choices": MMLU_CHOICES}, ans("B"), 1.0, 1, 1, "B"),
    ("mmlu_pro", "B", {"choices": MMLU_CHOICES}, ans("5"), 1.0, 1, 1, "B"),
    ("mmlu_pro", "B", {"choices": MMLU_CHOICES}, ans("D"), 0.1, 0, 1, ""),  # D is N/A padding
    ("mmlu_pro", "B", {"choices": MMLU_CHOICES}, ans("C"), 0.1, 0, 1, "C"),
    ("mmlu_pro", "B", {"choices": np.array(MMLU_CHOICES, dtype=object)}, "answer is (B)", 0.9, 1, 0, "B"),
    # SuperGPQA: gold answer_letter, options without letters
    ("supergpqa", "B", {"choices": GPQA_CHOICES}, ans("newton"), 1.0, 1, 1, "B"),
    ("supergpqa", "B", {"choices": GPQA_CHOICES}, ans("Joule"), 0.1, 0, 1, "A"),
    ("supergpqa", "B", {"choices": GPQA_CHOICES}, ans("E"), 0.1, 0, 1, ""),
    # FLAN option text
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("no"), 1.0, 1, 1, "no"),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("No."), 1.0, 1, 1, "no"),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("yes"), 0.1, 0, 1, "yes"),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("C"), 1.0, 1, 1, "no"),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("No, the sky is blue."), 1.0, 1, 1, "no"),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("yes or no"), 0.1, 0, 1, ""),
    ("flan", "no", {"choices": FLAN_CHOICES}, ans("green"), 0.1, 0, 1, ""),
    (
        "flan",
        "it is not possible to tell",
        {"choices": FLAN_CHOICES},
        ans("It is not possible to tell"),
        1.0,
        1,
        1,
        "it is not possible to tell",
    ),
    ("flan", "no", {"choices": FLAN_CHOICES}, "[General_mode]The answer is: no", 0.9, 1, 0, "no"),
    # FLAN free text (no options): normalised match / bounded containment
    ("flan", "Barack Obama", {}, ans("barack obama."), 1.0, 1, 1, "barack obama"),
    ("flan", "Barack Obama", {}, ans("It was Barack Obama"), 1.0, 1, 1, "it was barack obama"),
    # a list of guesses that holds the gold is a hedge: no answer (the format is still right)
    ("flan", "Barack Obama", {}, ans("Bush, Clinton, Barack Obama, Trump, Biden, Carter"), 0.1, 0, 1, ""),
    (
        "flan",
        "Barack Obama",
        {},
        ans("Bush, Clinton, Barack Obama, Trump, Biden, Carter, Ford, Nixon, Reagan"),
        0.1,
        0,
        1,
        "",
    ),
    (
        "flan",
        "Barack Obama",
        {},
        ans("It was Barack Obama, the 44th president"),
        1.0,
        1,
        1,
        "it was barack obama 44th president",
    ),  # 6 tokens <= 2 * 2 + 5; two comma parts are no list
    ("flan", "Barack Obama", {}, ans("Obama Barack"), 0.1, 0, 1, "obama barack"),
    # FLAN math through task_family
    ("flan", "12", {"task_family": "math"}, ans("12"), 1.0, 1, 1, "12"),
    ("flan", "12", {"task_family": "math"}, ans("12.0"), 1.0, 1, 1, "12.0"),
    ("flan", "12", {"task_family": "math"}, ans("-12"), 0.1, 0, 1, "-12"),
    # PubMedQA
    ("pubmedqa", "yes", {}, ans("yes"), 1.0, 1, 1, "yes"),
    ("pubmedqa", "yes", {}, ans("Yes, it does."), 1.0, 1, 1, "yes"),
    ("pubmedqa", "maybe", {}, ans("The evidence says maybe"), 1.0, 1, 1, "maybe"),
    ("pubmedqa", "yes", {}, ans("no"), 0.1, 0, 1, "no"),
    ("pubmedqa", "yes", {}, ans("yes and no"), 0.1, 0, 1, ""),
    ("pubmedqa", "no", {}, ans("No, no and no."), 1.0, 1, 1, "no"),
    ("pubmedqa", "yes", {}, ans("perhaps no or maybe"), 0.1, 0, 1, ""),
    ("pubmedqa", "Yes", {}, "Final answer: **yes**", 0.9, 1, 0, "yes"),
    # TriviaQA: list of aliases (list, numpy array from parquet, JSON string, single str)
    ("triviaqa", ["Jupiter", "Planet Jupiter"], {}, ans("jupiter"), 1.0, 1, 1, "jupiter"),
    (
        "triviaqa",
        np.array(["Jupiter", "Planet Jupiter"], dtype=object),
        {},
        ans("The planet Jupiter!"),
        1.0,
        1,
        1,
        "planet jupiter",
    ),
    ("triviaqa", json.dumps(["Zürich", "Zurich"]), {}, ans("ZÜRICH"), 1.0, 1, 1, "zürich"),
    ("triviaqa", "Jupiter", {}, ans("Saturn"), 0.1, 0, 1, "saturn"),
    ("triviaqa", ["Jupiter"], {}, ans("Jupiter, the biggest planet"), 0.1, 0, 1, "jupiter biggest planet"),
    ("triviaqa", ["U.S.A."], {}, ans("USA"), 1.0, 1, 1, "usa"),
    # MATH-500
    ("math500", "\\frac{1}{2}", {}, ans("\\frac{1}{2}"), 1.0, 1, 1, "\\frac{1}{2}"),
    ("math500", "\\frac{1}{2}", {}, ans("0.5"), 1.0, 1, 1, "0.5"),
    ("math500", "\\frac{1}{2}", {}, ans("\\dfrac12"), 1.0, 1, 1, "\\dfrac12"),
    ("math500", "\\frac{1}{2}", {}, "so $x = \\boxed{\\dfrac{1}{2}}$", 0.9, 1, 0, "\\dfrac{1}{2}"),
    ("math500", "2", {}, ans("\\sqrt{4}"), 1.0, 1, 1, "\\sqrt{4}"),
    ("math500", "x^2+1", {}, ans("1 + x^{2}"), 1.0, 1, 1, "1 + x^{2}"),
    ("math500", "\\frac{1}{2}", {}, ans("\\frac{1}{3}"), 0.1, 0, 1, "\\frac{1}{3}"),
    ("math500", "1,000", {}, ans("1000"), 1.0, 1, 1, "1000"),
    ("math500", "32", {}, "", 0.0, 0, 0, ""),
    # Preference sources: gold "A"/"B"
    ("alignx", "A", {}, ans("A"), 1.0, 1, 1, "A"),
    ("alignx", "A", {}, ans("Response A"), 1.0, 1, 1, "A"),
    ("alignx", "A", {}, ans("B"), 0.1, 0, 1, "B"),
    ("alignx", "A", {}, ans("C"), 0.1, 0, 1, ""),
    (
        "personafeedback",
        "B",
        {},
        "[Personalized_mode] You like quiet plans, so I prefer (B).\nThe answer is B",
        0.9,
        1,
        0,
        "B",
    ),
    ("fspo_roleplay", "B", {}, UNICODE + format_answer("B"), 1.0, 1, 1, "B"),
    ("fspo_roleplay", "B", {}, NOISE, 0.0, 0, 0, ""),
    # Toy task (verl_personadual.data.toy): true/false free text, the mode token stripped by verl's decoding
    ("toy", "false", {}, ans("false"), 1.0, 1, 1, "false"),
    ("toy", "false", {}, ans("true"), 0.1, 0, 1, "true"),
    ("toy", "true", {}, '{"answer": "true"', 0.0, 0, 0, ""),
    ("toy", "true", {}, ans("true or false"), 0.1, 0, 1, ""),
]


@pytest.mark.parametrize(
    ("data_source", "gold", "extra", "response", "score", "correct", "format_ok", "pred"),
    ROWS,
    ids=[f"{i}-{r[0]}" for i, r in enumerate(ROWS)],
)
def test_score_table(data_source, gold, extra, response, score, correct, format_ok, pred) -> None:
    out = compute_score(data_source=data_source, solution_str=response, ground_truth=gold, extra_info=extra)
    assert tuple(out) == RESULT_KEYS
    assert (out["score"], out["correct"], out["acc"], out["format_ok"], out["pred"]) == pytest.approx(
        (score, float(correct), float(correct), float(format_ok), pred)
    )
    assert out["has_answer"] == (1.0 if pred else 0.0)


#: FLAN's ANLI / CB options, verbatim (google-research/FLAN flan/tasks.py).
ANLI_CHOICES = ["Yes", "It's impossible to say", "No"]
IMPOSSIBLE = "It's impossible to say"
# Answers that differ from the gold only by a contraction or punctuation are right; near misses (a negation, a
# dropped "im-", a possessive read as "is") stay wrong. (data_source, gold, extra_info, response, score,
# correct, format_ok, pred)
CONTRACTION_ROWS = [
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("It is impossible to say"), 1.0, 1, 1, IMPOSSIBLE),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("It is impossible to say."), 1.0, 1, 1, IMPOSSIBLE),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("It’s impossible to say!"), 1.0, 1, 1, IMPOSSIBLE),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("it's impossible, to say"), 1.0, 1, 1, IMPOSSIBLE),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("It is possible to say"), 0.1, 0, 1, ""),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("It's not impossible to say"), 0.1, 0, 1, ""),
    ("flan", IMPOSSIBLE, {"choices": ANLI_CHOICES}, ans("No, it is not"), 0.1, 0, 1, "No"),
    (
        "flan",
        "it is not possible to tell",
        {"choices": FLAN_CHOICES},
        ans("It isn't possible to tell"),
        1.0,
        1,
        1,
        "it is not possible to tell",
    ),
    ("flan", "it is not possible to tell", {"choices": FLAN_CHOICES}, ans("It's possible to tell"), 0.1, 0, 1, ""),
    ("flan", "it is not possible to tell", {"choices": FLAN_CHOICES}, ans("It is possible to tell."), 0.1, 0, 1, ""),
    (
        "flan",
        "no",
        {"choices": FLAN_CHOICES},
        ans("It isn't possible to tell"),
        0.1,
        0,
        1,
        "it is not possible to tell",
    ),
    # free text and TriviaQA aliases: both sides canonicalised the same way
    ("flan", "It's a Wonderful Life", {}, ans("It is a wonderful life"), 1.0, 1, 1, "it is wonderful life"),
    ("flan", "Don't Look Back in Anger", {}, ans("Do not look back in anger."), 1.0, 1, 1, "do not look back in anger"),
    ("flan", "Don't Look Back in Anger", {}, ans("Look Back in Anger"), 0.1, 0, 1, "look back in anger"),
    ("flan", "Ocean's Eleven", {}, ans("Oceans Eleven"), 1.0, 1, 1, "oceans 11"),
    ("flan", "Ocean's Eleven", {}, ans("Ocean is Eleven"), 0.1, 0, 1, "ocean is 11"),
    ("flan", "You can't hurry love", {}, ans("You cannot hurry love"), 1.0, 1, 1, "you can not hurry love"),
    ("flan", "You can't hurry love", {}, ans("You can hurry love"), 0.1, 0, 1, "you can hurry love"),
    (
        "triviaqa",
        ["Who's Afraid of Virginia Woolf?"],
        {},
        ans("Who is afraid of Virginia Woolf"),
        1.0,
        1,
        1,
        "who is afraid of virginia woolf",
    ),
    (
        "triviaqa",
        ["Who's Afraid of Virginia Woolf?"],
        {},
        ans("Whose afraid of Virginia Woolf"),
        0.1,
        0,
        1,
        "whose afraid of virginia woolf",
    ),
]


@pytest.mark.parametrize(
    ("data_source", "gold", "extra", "response", "score", "correct", "format_ok", "pred"),
    CONTRACTION_ROWS,
    ids=[f"{i}-{r[3][39:-2]}" for i, r in enumerate(CONTRACTION_ROWS)],
)
def test_contractions_and_punctuation(data_source, gold, extra, response, score, correct, format_ok, pred) -> None:
    test_score_table(data_source, gold, extra, response, score, correct, format_ok, pred)


def test_every_data_source_is_covered_by_the_table() -> None:
    assert {r[0] for r in ROWS} == {s.value for s in DataSource}
    assert set(source_names()) == {s.value for s in DataSource}


@pytest.mark.parametrize(
    ("mode", "setting", "expected"),
    [
        (
            "general",
            "none",
            dict(mode=0.0, personalized=0.0, persona_setting=0.0, acc_general=1.0, acc_persona_none=1.0),
        ),
        (
            "personalized",
            "unaligned",
            dict(mode=1.0, personalized=1.0, persona_setting=1.0, acc_personalized=1.0, acc_persona_unaligned=1.0),
        ),
        (
            "Personalized",
            "aligned",
            dict(mode=1.0, personalized=1.0, persona_setting=2.0, acc_personalized=1.0, acc_persona_aligned=1.0),
        ),
        ("unknown", None, dict(mode=-1.0, personalized=0.0, persona_setting=-1.0)),
        (None, "sideways", dict(mode=-1.0, personalized=0.0, persona_setting=-1.0)),
    ],
)
def test_mode_and_persona_fields(mode, setting, expected) -> None:
    extra = {"persona_setting": setting}
    if mode is not None:
        extra[MODE_FIELD] = mode
    out = compute_score("ultramedical", ans("B"), "B", extra)
    per_group = ["acc_general", "acc_personalized"] + [f"acc_persona_{s.value}" for s in PersonaSetting]
    want = {k: None for k in per_group} | expected
    assert {k: out[k] for k in want} == want


def test_per_mode_accuracy_carries_the_correctness() -> None:
    out = compute_score("mmlu_pro", ans("A"), "B", {MODE_FIELD: "general", "persona_setting": "aligned"})
    assert (out["acc_general"], out["acc_persona_aligned"], out["acc_personalized"]) == (0.0, 0.0, None)


@pytest.mark.parametrize(("given", "expected"), [(12, 12.0), (0, 0.0), (None, -1.0), (-3, -1.0), (True, -1.0)])
def test_response_length_is_passed_on_from_the_agent_loop(given, expected) -> None:
    extra = {MODE_FIELD: "general"} | ({} if given is None else {RESPONSE_LENGTH_FIELD: given})
    assert compute_score("mmlu_pro", ans("A"), "A", extra)[RESPONSE_LENGTH_FIELD] == expected


def test_reward_shape_is_configurable() -> None:
    kw = dict(correct_weight=1.0, format_weight=0.5, no_answer_score=-1.0)
    assert compute_score(MED, ans("B"), "B", {}, **kw)["score"] == 1.5
    assert compute_score(MED, ans("A"), "B", {}, **kw)["score"] == 0.5
    assert compute_score(MED, "The answer is B", "B", {}, **kw)["score"] == 1.0
    assert compute_score(MED, "", "B", {}, **kw)["score"] == -1.0
    assert compute_score(MED, ans("B"), "B", None)["score"] == 1.0


def test_verl_keywords_are_accepted_and_typos_rejected() -> None:
    out = compute_score(MED, ans("B"), "B", {}, reward_router_address=None, reward_model_tokenizer=None)
    assert out["score"] == 1.0
    with pytest.raises(TypeError, match="correct_wieght"):
        compute_score(MED, ans("B"), "B", {}, correct_wieght=1.0)
    with pytest.raises(TypeError, match="format_weight"):
        compute_score(MED, ans("B"), "B", {}, format_weight="0.1")
    with pytest.raises(TypeError, match="math_timeout_s"):
        compute_score(MED, ans("B"), "B", {}, math_timeout_s=0)


def test_task_family_overrides_the_source_default() -> None:
    assert resolve_family("flan", {}) == TaskFamily.FREE_TEXT
    assert resolve_family("pubmedqa", {"task_family": ""}) == TaskFamily.YES_NO_MAYBE
    assert resolve_family("flan", {"choices": ["yes", "no"]}) == TaskFamily.OPTION_TEXT
    assert resolve_family("ultramedical", {"task_family": "yes_no_maybe"}) == TaskFamily.YES_NO_MAYBE
    assert resolve_family("some_new_benchmark", {"task_family": "open_qa"}) == TaskFamily.OPEN_QA


@pytest.mark.parametrize(
    ("data_source", "gold", "extra", "message"),
    [
        ("gsm8k", "1", {}, "data_source='gsm8k'"),
        (MED, "B", {"task_family": "essay"}, "task_family"),
        (MED, "Vitamin C", {}, "multiple_choice"),
        ("mmlu_pro", "D", {"choices": MMLU_CHOICES}, "'ABC'"),
        ("alignx", "C", {}, "'AB'"),
        ("pubmedqa", "probably", {}, "yes/no/maybe"),
        ("triviaqa", [], {}, "open_qa"),
        ("triviaqa", "[not json", {}, "JSON list"),
        ("math500", "  ", {}, "math"),
        ("supergpqa", "B", {"choices": "joule newton"}, "choices"),
    ],
)
def test_bad_rows_raise_a_precise_error(data_source, gold, extra, message) -> None:
    with pytest.raises(RewardInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compute_score(data_source, ans("B"), gold, extra)


# Per data source (and FLAN family): gold, extra_info, a correct answer, a wrong one, a messy correct response.
SPECS = {
    "ultramedical": ("B", {}, "B", "A", "Vitamin C is ascorbate.\n\nSo, the answer is B."),
    "flan/option_text": ("no", {"choices": FLAN_CHOICES}, "no", "yes", "**Answer:** No."),
    "flan/free_text": ("Barack Obama", {}, "Barack Obama", "George Bush", "The answer is: barack obama."),
    "flan/math": ("-3/4", {"task_family": "math"}, "-\\frac{3}{4}", "3/4", "hence \\boxed{-0.75}"),
    "alignx": ("A", {}, "A", "B", "I prefer Response A. The answer is (A)"),
    "mmlu_pro": ("B", {"choices": MMLU_CHOICES}, "B", "C", "The answer is (B)"),
    "supergpqa": ("B", {"choices": GPQA_CHOICES}, "newton", "joule", "answer: B) newton"),
    "triviaqa": (["Jupiter", "Planet Jupiter"], {}, "Jupiter", "Saturn", "Final answer: *Planet Jupiter*."),
    "pubmedqa": ("maybe", {}, "maybe", "yes", "\\boxed{Maybe}"),
    "math500": ("\\frac{1}{2}", {}, "0.5", "2", "so $\\boxed{\\frac12}$"),
    "personafeedback": ("B", {}, "B", "A", "Given your persona, Response B fits better.\nThe answer is B"),
    "fspo_roleplay": ("A", {}, "(A)", "(B)", "```\n{'answer': 'A'}\n```"),
    "toy": ("true", {}, "true", "false", "The book says true and I agree.\nThe answer is true"),
}


def _standard_cases():
    for key, (gold, extra, right, wrong, messy) in SPECS.items():
        source = key.split("/")[0]
        cases = {
            "correct": (ans(right), 1.0, 1, 1),
            "prefix_general": ("[General_mode] " + ans(right), 1.0, 1, 1),
            "prefix_personalized_unicode": ("[Personalized_mode]" + UNICODE + format_answer(right), 1.0, 1, 1),
            "wrong": (ans(wrong), 0.1, 0, 1),
            "messy": (messy, 0.9, 1, 0),
            "malformed": ('{"answer": "' + right, 0.0, 0, 0),
            "empty": ("", 0.0, 0, 0),
            "noise_50k": (NOISE, 0.0, 0, 0),
            "noise_50k_then_answer": (NOISE + "\n" + format_answer(right), 1.0, 1, 1),
        }
        for name, (response, score, correct, format_ok) in cases.items():
            yield pytest.param(source, gold, extra, response, score, correct, format_ok, id=f"{key}-{name}")


@pytest.mark.parametrize(("source", "gold", "extra", "response", "score", "correct", "format_ok"), _standard_cases())
def test_standard_cases_for_every_source(source, gold, extra, response, score, correct, format_ok) -> None:
    out = compute_score(source, response, gold, dict(extra, persona_setting="unaligned", **{MODE_FIELD: "general"}))
    assert (out["score"], out["correct"], out["format_ok"]) == pytest.approx((score, float(correct), float(format_ok)))
    assert (out["acc_general"], out["acc_persona_unaligned"], out["acc_personalized"]) == (
        float(correct),
        float(correct),
        None,
    )


def test_standard_cases_cover_every_source() -> None:
    assert {k.split("/")[0] for k in SPECS} == {s.value for s in DataSource}
