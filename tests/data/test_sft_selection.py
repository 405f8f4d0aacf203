"""SFT trajectory normalisation, grading and gain-based selection (verl_personadual.data.sft_selection),
exact values."""

from __future__ import annotations

import pytest

from verl_personadual.core.modes import Mode
from verl_personadual.core.rewards import compute_score
from verl_personadual.data.sft_selection import (
    Decision,
    Problem,
    Selection,
    Trajectory,
    assistant_text,
    normalize_reply,
    score_trajectory,
    select,
)

MC_INFO = {"task_family": "multiple_choice", "choices": ["Vitamin A", "Vitamin C", "Vitamin D"]}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('Scurvy is ascorbate deficiency.\n{"answer": "B"}', ("Scurvy is ascorbate deficiency.", "B")),
        ('Step 1.\nStep 2.\n\n```json\n{"answer": "B"}\n```\n', ("Step 1.\nStep 2.", "B")),
        ('Think.\n<answer>{"answer": "no"}</answer>', ("Think.", "no")),
        (
            'First {"answer": "A"} was a guess.\n{"note": {"k": 1}, "answer": "C"}',
            ('First {"answer": "A"} was a guess.', "C"),
        ),
        # Fallback extractions keep the whole reply as reasoning.
        (
            "Vitamin C prevents scurvy, so the answer is (B).",
            ("Vitamin C prevents scurvy, so the answer is (B).", "(B)"),
        ),
        ("We get \\boxed{42}.", ("We get \\boxed{42}.", "42")),
        # LaTeX with single backslashes and an explanation full of braces: still the final object.
        ('Rationalise.\n{"answer": "\\frac{\\sqrt{2}}{2}"}', ("Rationalise.", "\\frac{\\sqrt{2}}{2}")),
        ('Sets.\n{"why": "{1} {2} {3} {4} {5}", "answer": "C"}', ("Sets.", "C")),
        # The answer object is not last: the whole reply is the reasoning.
        ('{"answer": "B"}\nThat is my answer.', ('{"answer": "B"}\nThat is my answer.', "B")),
    ],
)
def test_normalize_reply_splits_reasoning_and_answer(reply, expected):
    assert normalize_reply(reply) == expected


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('<think>scurvy, cut off while thinking\n{"answer": "B"}', Problem.THINK_TAGS),
        ('<think>one</think><think>two</think>\n{"answer": "B"}', Problem.THINK_TAGS),
        ('Sure. <think>late</think>\n{"answer": "B"}', Problem.THINK_TAGS),
        ("I cannot decide between them.\nMaybe { later", Problem.NO_ANSWER),
        ("", Problem.NO_ANSWER),
        ("B", Problem.NO_REASONING),
        ('{"answer": "B"}', Problem.NO_REASONING),
        ('\n```json\n{"answer": "B"}\n```', Problem.NO_REASONING),
    ],
)
def test_normalize_reply_problems(reply, problem):
    assert normalize_reply(reply) is problem


@pytest.mark.parametrize(
    ("reply", "field", "keep", "expected"),
    [
        # A reasoning parser's field: kept as the head of the reasoning, then the content's own reasoning.
        (
            'Vitamin C.\n{"answer": "B"}',
            "Collagen needs ascorbate...",
            True,
            ("Collagen needs ascorbate...\n\nVitamin C.", "B"),
        ),
        ('Vitamin C.\n{"answer": "B"}', "Collagen needs ascorbate...", False, ("Vitamin C.", "B")),
        # DeepSeek-R1 often answers with the bare object after thinking: the thinking is the whole reasoning.
        ('{"answer": "B"}', "  Collagen needs ascorbate.  ", True, ("Collagen needs ascorbate.", "B")),
        ('{"answer": "B"}', "Collagen needs ascorbate.", False, Problem.NO_REASONING),
        # Inline think block (no reasoning parser), tags dropped; also when the template opened it (only </think>).
        ('<think>\nCollagen.\n</think>\n\nVitamin C.\n{"answer": "B"}', None, True, ("Collagen.\n\nVitamin C.", "B")),
        ('Collagen.\n</think>\n{"answer": "B"}', None, True, ("Collagen.", "B")),
        ('<think>Collagen.</think>\nVitamin C.\n{"answer": "B"}', None, False, ("Vitamin C.", "B")),
        # A draft answer inside the thinking never outranks the content's final answer.
        (
            '<think>Maybe {"answer": "A"}?</think>\nNo: vitamin C.\n{"answer": "B"}',
            None,
            True,
            ('Maybe {"answer": "A"}?\n\nNo: vitamin C.', "B"),
        ),
    ],
)
def test_expert_reasoning_is_kept_or_dropped(reply, field, keep, expected):
    assert normalize_reply(reply, field, keep_reasoning=keep) == expected


def test_kept_reasoning_is_graded_on_the_final_answer():
    kept = score_trajectory('<think>Perhaps {"answer": "A"}.</think>\n{"answer": "B"}', "ultramedical", "B", MC_INFO)
    assert kept == Trajectory('Perhaps {"answer": "A"}.', "B", True, None)
    assert assistant_text(Mode.GENERAL, kept) == '[General_mode]Perhaps {"answer": "A"}.\n{"answer": "B"}'


def test_score_trajectory_grades_the_normalised_body():
    good = score_trajectory("Scurvy: vitamin C.\nSo the answer is B.", "ultramedical", "B", MC_INFO)
    assert good == Trajectory("Scurvy: vitamin C.\nSo the answer is B.", "B", True, None)
    assert good.body() == 'Scurvy: vitamin C.\nSo the answer is B.\n{"answer": "B"}'
    # The option text counts as its letter (reward rule), and is kept verbatim in the answer line.
    text = score_trajectory('Ascorbate.\n{"answer": "Vitamin C"}', "ultramedical", "B", MC_INFO)
    assert (text.answer, text.correct) == ("Vitamin C", True)
    wrong = score_trajectory('Hmm.\n{"answer": "A"}', "ultramedical", "B", MC_INFO)
    assert (wrong.answer, wrong.correct, wrong.usable) == ("A", False, True)
    bad = score_trajectory("B", "ultramedical", "B", MC_INFO)
    assert bad == Trajectory(None, None, False, Problem.NO_REASONING)
    with pytest.raises(ValueError, match="unusable"):
        bad.body()


def test_assistant_text_is_prefix_reasoning_answer_line_and_scores_full_marks():
    t = score_trajectory('Ascorbate.\n```json\n{"answer": "B"}\n```', "ultramedical", "B", MC_INFO)
    text = assistant_text(Mode.PERSONALIZED, t)
    assert text == '[Personalized_mode]Ascorbate.\n{"answer": "B"}'
    result = compute_score("ultramedical", text, "B", MC_INFO)
    assert (result["score"], result["correct"], result["format_ok"]) == (1.0, 1.0, 1.0)


def _t(correct: bool, usable: bool = True) -> Trajectory:
    if not usable:
        return Trajectory(None, None, False, Problem.NO_ANSWER)
    return Trajectory("r", "B" if correct else "A", correct, None)


RIGHT, WRONG, BROKEN = _t(True), _t(False), _t(False, usable=False)


@pytest.mark.parametrize(
    ("general", "personalized", "mode", "decision", "strict_mode"),
    [
        (WRONG, RIGHT, Mode.PERSONALIZED, Decision.PERSONA_GAIN, Mode.PERSONALIZED),
        (BROKEN, RIGHT, Mode.PERSONALIZED, Decision.PERSONA_GAIN, Mode.PERSONALIZED),
        (RIGHT, RIGHT, Mode.GENERAL, Decision.BOTH_CORRECT, Mode.GENERAL),
        (RIGHT, WRONG, Mode.GENERAL, Decision.GENERAL_ONLY, Mode.GENERAL),
        (RIGHT, BROKEN, Mode.GENERAL, Decision.GENERAL_ONLY, Mode.GENERAL),
        (WRONG, WRONG, Mode.GENERAL, Decision.BOTH_WRONG, None),
        (WRONG, BROKEN, Mode.GENERAL, Decision.BOTH_WRONG, None),
        (BROKEN, WRONG, None, Decision.GENERAL_UNUSABLE, None),
        (BROKEN, BROKEN, None, Decision.GENERAL_UNUSABLE, None),
        (None, RIGHT, Mode.PERSONALIZED, Decision.PERSONALIZED_CORRECT, Mode.PERSONALIZED),
        (None, WRONG, Mode.PERSONALIZED, Decision.PERSONALIZED_WRONG, None),
        (None, BROKEN, None, Decision.PERSONALIZED_UNUSABLE, None),
    ],
)
def test_selection_table(general, personalized, mode, decision, strict_mode):
    assert select(general, personalized) == (s := select(general, personalized, require_correct=False))
    assert (s.mode, s.decision) == (mode, decision)
    strict = select(general, personalized, require_correct=True)
    assert (strict.mode, strict.decision) == (strict_mode, decision)
    # The tie switch changes only the both-correct row.
    tied = select(general, personalized, tie=Mode.PERSONALIZED)
    assert (tied.mode, tied.decision) == (Mode.PERSONALIZED if decision is Decision.BOTH_CORRECT else mode, decision)


@pytest.mark.parametrize("mode", list(Mode))
def test_select_single_keeps_every_usable_trajectory_in_its_mode(mode):
    from verl_personadual.data.sft_selection import select_single

    right, wrong = Trajectory("r", "B", True, None), Trajectory("r", "A", False, None)
    unusable = Trajectory(None, None, False, Problem.NO_ANSWER)
    assert select_single(right, mode) == Selection(mode, Decision.ONLY_MODE_CORRECT)
    assert select_single(wrong, mode) == Selection(mode, Decision.ONLY_MODE_WRONG)
    assert select_single(wrong, mode, require_correct=True) == Selection(None, Decision.ONLY_MODE_WRONG)
    assert select_single(unusable, mode) == Selection(None, Decision.ONLY_MODE_UNUSABLE)
