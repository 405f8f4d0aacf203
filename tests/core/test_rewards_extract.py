"""Answer extraction: the prompt's JSON format, and the deviations real models produce."""

from __future__ import annotations

import pytest

from verl_personadual.core.prompts import format_answer
from verl_personadual.core.rewards.extract import (
    BARE_MAX_CHARS,
    FALLBACK_WINDOW,
    MAX_ANSWER_CHARS,
    Extraction,
    extract_answer,
    strip_mode_prefix,
)

CASES = [
    # (response, answer, format_ok, source)
    ('Vitamin C prevents scurvy.\n{"answer": "B"}', "B", True, "json"),
    ('[General_mode] Vitamin C.\n{"answer": "B"}', "B", True, "json"),
    ('[Personalized_mode]{"answer": "B"}', "B", True, "json"),
    ('reasoning\n{"answer": "B"}\n\n', "B", True, "json"),
    ('```json\n{"answer": "B"}\n```', "B", True, "json"),
    ('<answer> {"answer": "B"} </answer>', "B", True, "json"),
    ('{"answer": "B"}\nHope this helps!', "B", False, "json"),
    ('first {"answer": "A"} then {"answer": "C"}', "C", True, "json"),
    ('{"answer": "A"}\n{"answer": "C"', "A", False, "json"),  # broken last object: the last valid one wins
    ('{"answer": "A"} and {"answer": null}', "A", False, "json"),
    ('{"answer": {"letter": "A"}}', None, False, "none"),
    ('{"reasoning": "uses {braces}", "answer": "D"}', "D", True, "json"),
    ('{"answer": 42}', "42", True, "json"),
    ('{"answer": 0.5}', "0.5", True, "json"),
    ('{"answer": true}', "yes", True, "json"),
    ('{"answer": ["Paris", "Lyon"]}', "Paris, Lyon", True, "json"),
    ('{"answer": "  Jupiter  "}', "Jupiter", True, "json"),
    ('{"answer": "\\u00e9t\\u00e9"}', "été", True, "json"),
    ('{"answer": ""}', None, False, "none"),
    ("{'answer': 'B'}", "B", False, "loose_json"),
    ("{answer: B}", "B", False, "loose_json"),
    ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", False, "boxed"),
    ("\\boxed{1} then \\boxed{x^{2}+1}", "x^{2}+1", False, "boxed"),
    ("\\boxed{unclosed", None, False, "none"),
    ('{"answer": "B"', None, False, "none"),
    ("Scurvy is ascorbate deficiency.\n\nSo, the answer is B.", "B", False, "phrase"),
    ("The answer is (B)", "(B)", False, "phrase"),
    ("Final answer: **Jupiter**.", "Jupiter", False, "phrase"),
    ("B", "B", False, "bare"),
    ("  (C)  ", "(C)", False, "bare"),
    ("", None, False, "none"),
    ("   \n  ", None, False, "none"),
    ("line one\nline two without anything", None, False, "none"),
    ("x" * (BARE_MAX_CHARS + 1), None, False, "none"),
    # JSON strings as models write them: a backslash starting a LaTeX command is literal
    (r'{"answer": "\frac{3}{4}"}', r"\frac{3}{4}", True, "json"),
    (r'{"answer": "\\frac{3}{4}"}', r"\frac{3}{4}", True, "json"),
    (r'{"answer": "3 \times 4 \neq \theta"}', r"3 \times 4 \neq \theta", True, "json"),
    (r'{"answer": "\text{yes}, \textbf{no}"}', r"\text{yes}, \textbf{no}", True, "json"),
    (r'{"answer": "\left[ 0, 1 \right)"}', r"\left[ 0, 1 \right)", True, "json"),
    (r'{"answer": "\binom{6}{2} \beta \bar{x}"}', r"\binom{6}{2} \beta \bar{x}", True, "json"),
    (
        r'{"answer": "\sqrt{2} \pi \cdot \{1\} \, \$ \underline{x}"}',
        r"\sqrt{2} \pi \cdot \{1\} \, \$ \underline{x}",
        True,
        "json",
    ),
    (r'{"answer": "first\nsecond\tthird"}', "first\nsecond\tthird", True, "json"),  # not LaTeX: escapes
    (r'{"answer": "\"quoted\" \/ \u00e9 \ud83d\ude00"}', '"quoted" / é 😀', True, "json"),
    (r'{"answer": "\ud83d alone"}', "\ufffd alone", True, "json"),
    # the answer object behind string values full of braces, pretty-printed
    ('{"why": "{a} {b} {c} {d} {e} {f} {g} {h} {i} {j}", "answer": "D"}', "D", True, "json"),
    ('{\n  "steps": {"one": [1, {"x": null}]},\n  "answer": "D"\n}', "D", True, "json"),
    ('{"answer": "B", }', "B", False, "loose_json"),
    # lead-ins inside the value
    ('{"answer": "The answer is C"}', "C", True, "json"),
    ('{"answer": "**Final answer:** 12"}', "12", True, "json"),
    ('{"answer": "Answer:"}', "Answer:", True, "json"),
    # think blocks
    ('<think>{"answer": "A"}</think>{"answer": "B"}', "B", True, "json"),
    ("<think>so \\boxed{3}</think>\nThe answer is 4.", "4", False, "phrase"),
    ('<think>draft {"answer": "A"}', None, False, "none"),
    ("<think>x</think>", None, False, "none"),
    ("draft</think>B", "B", False, "bare"),
    ('[General_mode]<think>a</think>{"answer": "B"}', "B", True, "json"),
    ('<think>a</think>{"answer": "B"}<think>b', None, False, "none"),
    # nesting beyond MAX_JSON_DEPTH is no object; inside it is
    ('{"answer": ' + "[" * 40 + '"B"' + "]" * 40 + "}", None, False, "none"),
    ('{"answer": ["B"], "x": ' + "[" * 10 + "]" * 10 + "}", "B", True, "json"),
]


@pytest.mark.parametrize(("response", "answer", "format_ok", "source"), CASES)
def test_extract_answer(response: str, answer: str | None, format_ok: bool, source: str) -> None:
    assert extract_answer(response) == Extraction(answer, format_ok, source)


def test_prompt_module_answer_line_is_extracted_with_format_ok() -> None:
    assert extract_answer("thinking...\n" + format_answer("Zürich")) == Extraction("Zürich", True, "json")


def test_answer_after_50k_chars_of_noise_is_found() -> None:
    noise = ('lorem {ipsum} "answer" dolor ' * 2000)[:50_000]
    assert extract_answer(noise + '\n{"answer": "E"}') == Extraction("E", True, "json")


def test_fallbacks_look_only_at_the_tail() -> None:
    far = "The answer is B.\n" + "filler line\n" * (FALLBACK_WINDOW // 12 + 10)
    assert extract_answer(far) == Extraction(None, False, "none")


def test_long_answer_is_cut() -> None:
    found = extract_answer(format_answer("y" * 5000))
    assert found.answer == "y" * MAX_ANSWER_CHARS and found.format_ok


def test_strip_mode_prefix() -> None:
    assert strip_mode_prefix("  [General_mode] hi") == " hi"
    assert strip_mode_prefix("[Personalized_mode]hi") == "hi"
    assert strip_mode_prefix("hi [General_mode]") == "hi [General_mode]"


@pytest.mark.parametrize("value", [None, 3, b'{"answer": "B"}'])
def test_non_string_input_gives_nothing(value: object) -> None:
    assert extract_answer(value) == Extraction(None, False, "none")  # type: ignore[arg-type]


@pytest.mark.parametrize("opener", ["[", "{", '{"answer": ', '["', '{"a": '])
def test_deep_nesting_is_bounded_not_recursive(opener: str) -> None:
    assert extract_answer('{"answer": ' + opener * 200_000) == Extraction(None, False, "none")
    assert extract_answer(opener * 200_000 + '\n{"answer": "B"}') == Extraction("B", True, "json")


@pytest.mark.parametrize(
    ("response", "obj"),
    [
        (
            '[General_mode]<think>draft {"answer": "A"}</think>\nSo:\n{"answer": "\\frac{1}{2}"}\n```',
            '{"answer": "\\frac{1}{2}"}',
        ),
        ('[Personalized_mode] x\n{"why": "{a} {b}", "answer": "C"} trailing', '{"why": "{a} {b}", "answer": "C"}'),
    ],
)
def test_span_locates_the_answer_object_in_the_response(response: str, obj: str) -> None:
    start, end = extract_answer(response).span
    assert response[start:end] == obj
    assert extract_answer("The answer is B.").span is None
