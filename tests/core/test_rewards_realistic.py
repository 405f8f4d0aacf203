"""compute_score on realistic model outputs, one block per class of grading error the reward must not make.

Responses are written the way Qwen3 / Llama answers look (reasoning, markdown, LaTeX, a JSON line at the end).
Raw strings hold exactly what the model wrote: ``r'{"answer": "\\frac{3}{4}"}'`` is a single backslash, as
models write it. Every expected value was worked out by hand from the rules in the ``extract`` and ``scorers``
docstrings: (score, correct, format_ok, pred) with the default shape 0.9 * correct + 0.1 * format_ok.
"""

from __future__ import annotations

import pytest

from verl_personadual.core.rewards import RESULT_KEYS, compute_score

MATH = "math500"
MED = "ultramedical"
MMLU = "mmlu_pro"
MMLU_CHOICES = ["0", "1", "2", "3", "4", "N/A"]
FSPO_CHOICES = ["A slow-roasted pork shoulder with crackling.", "A quick vegan stir-fry with tofu and greens."]
ALIGNX_CHOICES = [
    "Knitting is relaxing and you can do it on the sofa.",
    "Try trail running: start with two short loops a week on a nearby ridge.",
]

MATH_REASONING = r"""We need the probability that both draws are red.

**Step 1.** The first draw is red with probability $\frac{6}{8} = \frac{3}{4}$.
**Step 2.** Multiply by the conditional probability and simplify.

So the result is $\frac{3}{4}$.
"""

# (id, data_source, gold, extra_info, response, score, correct, format_ok, pred)
CASES = [
    # --- LaTeX inside JSON strings: single backslashes are LaTeX, not JSON escapes ---
    (
        "frac_single_backslash",
        MATH,
        r"\frac{3}{4}",
        {},
        MATH_REASONING + r'{"answer": "\frac{3}{4}"}',
        1.0,
        1,
        1,
        r"\frac{3}{4}",
    ),
    (
        "dfrac_single_backslash",
        MATH,
        r"\frac{3}{4}",
        {},
        MATH_REASONING + r'{"answer": "\dfrac{3}{4}"}',
        1.0,
        1,
        1,
        r"\dfrac{3}{4}",
    ),
    (
        "frac_double_backslash",
        MATH,
        r"\frac{3}{4}",
        {},
        MATH_REASONING + r'{"answer": "\\frac{3}{4}"}',
        1.0,
        1,
        1,
        r"\frac{3}{4}",
    ),
    (
        "sqrt_invalid_json_escape",
        MATH,
        r"2\sqrt{2}",
        {},
        r"Thus $AB = 2\sqrt{2}$." + "\n" + r'{"answer": "2\sqrt{2}"}',
        1.0,
        1,
        1,
        r"2\sqrt{2}",
    ),
    (
        "left_right_pi",
        MATH,
        r"\left( 3, \frac{\pi}{2} \right)",
        {},
        "In polar coordinates the point is $(3, \\pi/2)$.\n" + r'{"answer": "\left( 3, \frac{\pi}{2} \right)"}',
        1.0,
        1,
        1,
        r"\left( 3, \frac{\pi}{2} \right)",
    ),
    (
        "text_command",
        MATH,
        r"\text{Evelyn}",
        {},
        "Evelyn has the highest average speed.\n" + r'{"answer": "\text{Evelyn}"}',
        1.0,
        1,
        1,
        r"\text{Evelyn}",
    ),
    (
        "wrong_fraction",
        MATH,
        r"\frac{3}{4}",
        {},
        MATH_REASONING + r'{"answer": "\frac{4}{3}"}',
        0.1,
        0,
        1,
        r"\frac{4}{3}",
    ),
    ("truncated_json_string", MATH, r"\frac{3}{4}", {}, MATH_REASONING + r'{"answer": "\frac{3}{', 0.0, 0, 0, ""),
    (
        "mc_text_letter",
        MED,
        "B",
        {},
        "Scurvy results from vitamin C deficiency.\n" + r'{"answer": "\text{B}"}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "mc_boxed_in_json",
        MED,
        "B",
        {},
        "Scurvy results from vitamin C deficiency.\n" + r'{"answer": "\boxed{B}"}',
        1.0,
        1,
        1,
        "B",
    ),
    # --- the answer object after an explanation full of braces ---
    (
        "explanation_with_braces",
        MMLU,
        "C",
        {"choices": MMLU_CHOICES},
        "Let me work through this carefully.\n\n"
        r'{"explanation": "Let $S = \{x \in \mathbb{Z} : x^2 < 5\}$, so $S = \{-2, -1, 0, 1, 2\}$ and '
        r'$|S \cap \{1, 2, 3\}| = 2$; with {a}, {b}, {c} and {d} fixed, $\frac{4}{2} = 2$.", "answer": "C"}',
        1.0,
        1,
        1,
        "C",
    ),
    (
        "pretty_printed_object",
        MMLU,
        "C",
        {"choices": MMLU_CHOICES},
        'Counting the elements:\n```json\n{\n  "reasoning": "The sets {1}, {2}, {1, 2} and {} are the subsets",\n'
        '  "answer": "E"\n}\n```',
        0.1,
        0,
        1,
        "E",
    ),
    # --- repetition loops, deep nesting, huge inputs: never a raise ---
    ("deep_brackets", MED, "B", {}, 'Final answer:\n{"answer": ' + "[" * 50_000, 0.0, 0, 0, ""),
    ("deep_objects", MED, "B", {}, '{"answer": ' * 5_000, 0.0, 0, 0, ""),
    (
        "loop_then_answer",
        MED,
        "B",
        {},
        "Wait, let me re-check. " * 3_000 + "[" * 10_000 + '\n{"answer": "B"}',
        1.0,
        1,
        1,
        "B",
    ),
    ("answer_then_loop", MED, "B", {}, '{"answer": "B"}' + "]" * 10_000, 0.9, 1, 0, "B"),
    # --- hedges ---
    (
        "free_text_or",
        "flan",
        "Barack Obama",
        {},
        'He won in 2008 and 2012.\n{"answer": "Barack Obama or Joe Biden"}',
        0.1,
        0,
        1,
        "",
    ),
    (
        "free_text_either_or",
        "flan",
        "Barack Obama",
        {},
        '{"answer": "Either Barack Obama or George W. Bush"}',
        0.1,
        0,
        1,
        "",
    ),
    (
        "free_text_five_guesses",
        "flan",
        "Paris",
        {},
        '{"answer": "Paris, Lyon, Marseille, Nice, Toulouse"}',
        0.1,
        0,
        1,
        "",
    ),
    ("free_text_qualifier", "flan", "Paris", {}, '{"answer": "Paris, France"}', 1.0, 1, 1, "paris france"),
    ("free_text_wrong", "flan", "Barack Obama", {}, '{"answer": "Joe Biden"}', 0.1, 0, 1, "joe biden"),
    ("free_text_or_in_gold", "flan", "Trick or Treat", {}, '{"answer": "trick or treat"}', 1.0, 1, 1, "trick or treat"),
    ("free_text_number_word", "flan", "4", {}, 'A dog has four legs.\n{"answer": "four"}', 1.0, 1, 1, "4"),
    ("free_text_digits_for_words", "flan", "twenty-one", {}, '{"answer": "21 years"}', 1.0, 1, 1, "21 years"),
    ("free_text_number_hedge", "flan", "4", {}, '{"answer": "4 or 5"}', 0.1, 0, 1, ""),
    ("mc_c_or_d", MMLU, "C", {"choices": MMLU_CHOICES}, 'It is either C or D.\n{"answer": "C or D"}', 0.1, 0, 1, ""),
    ("mc_slash", MMLU, "C", {"choices": MMLU_CHOICES}, '{"answer": "C/D"}', 0.1, 0, 1, ""),
    ("mc_both", MED, "B", {}, '{"answer": "Both B and C"}', 0.1, 0, 1, ""),
    ("mc_or_possibly", MED, "B", {}, '{"answer": "B (or possibly C)"}', 0.1, 0, 1, ""),
    ("mc_phrase_hedge", MED, "B", {}, "So, the answer is B or C.", 0.0, 0, 0, ""),
    ("mc_letter_with_reason", MED, "B", {}, '{"answer": "B, because ascorbate is a cofactor"}', 1.0, 1, 1, "B"),
    ("ynm_yes_or_no", "pubmedqa", "yes", {}, '{"answer": "yes or no"}', 0.1, 0, 1, ""),
    ("ynm_maybe_yes", "pubmedqa", "yes", {}, '{"answer": "maybe yes"}', 0.1, 0, 1, ""),
    ("preference_a_or_b", "alignx", "B", {"choices": ALIGNX_CHOICES}, '{"answer": "A or B"}', 0.1, 0, 1, ""),
    # --- <think> blocks ---
    (
        "think_draft_then_final",
        MED,
        "B",
        {},
        '<think>\nScurvy... is it A? Draft: {"answer": "A"}. No wait, vitamin C deficiency is B.\n</think>\n\n'
        'The deficiency is of vitamin C.\n{"answer": "B"}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "think_right_draft_wrong_final",
        MED,
        "B",
        {},
        '<think>\nVitamin C, so {"answer": "B"}.\n</think>\n\n{"answer": "A"}',
        0.1,
        0,
        1,
        "A",
    ),
    (
        "think_cut_off",
        MED,
        "B",
        {},
        '<think>\nThe patient has bleeding gums, so vitamin C; draft {"answer": "B"} but let me double-check the',
        0.0,
        0,
        0,
        "",
    ),
    ("think_cut_off_boxed", MATH, "42", {}, "<think>\nSo the total is \\boxed{42}. Hmm, but wait", 0.0, 0, 0, ""),
    ("think_closed_nothing_after", MED, "B", {}, '<think>\n{"answer": "B"}\n</think>', 0.0, 0, 0, ""),
    ("think_opened_in_prompt", MED, "B", {}, 'Draft {"answer": "A"}\n</think>\n\n{"answer": "B"}', 1.0, 1, 1, "B"),
    (
        "prefix_then_think",
        "personafeedback",
        "B",
        {},
        '[Personalized_mode]<think>\nThe user likes quiet plans: A? {"answer": "A"}\n</think>\n'
        'You prefer calm evenings, so the second suggestion fits.\n{"answer": "B"}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "think_second_block_cut",
        MED,
        "B",
        {},
        '<think>\nB.\n</think>\n{"answer": "B"}\n<think>\nActually',
        0.0,
        0,
        0,
        "",
    ),
    # --- "A" the article, quoted responses, phrases inside the value ---
    (
        "quote_of_b_starting_with_a",
        "fspo_roleplay",
        "B",
        {"choices": FSPO_CHOICES},
        "As a vegan with little time, the stir-fry is the obvious pick.\n"
        '{"answer": "A quick vegan stir-fry with tofu and greens."}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "quote_of_a_starting_with_a",
        "fspo_roleplay",
        "B",
        {"choices": FSPO_CHOICES},
        '{"answer": "A slow-roasted pork shoulder with crackling"}',
        0.1,
        0,
        1,
        "A",
    ),
    (
        "partial_quote",
        "fspo_roleplay",
        "B",
        {"choices": FSPO_CHOICES},
        '{"answer": "quick vegan stir-fry with tofu"}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "quote_with_reason",
        "alignx",
        "B",
        {"choices": ALIGNX_CHOICES},
        '{"answer": "Try trail running: start with two short loops a week on a nearby ridge. It matches my hiking."}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "sentence_starting_with_a",
        "fspo_roleplay",
        "A",
        {"choices": FSPO_CHOICES},
        '{"answer": "A hearty dinner is what this user wants."}',
        0.1,
        0,
        1,
        "",
    ),
    (
        "article_without_choices",
        "personafeedback",
        "A",
        {},
        '{"answer": "A calm, practical reply suits me."}',
        0.1,
        0,
        1,
        "",
    ),
    ("letter_a_is_better", "personafeedback", "A", {}, '{"answer": "A is better for me"}', 1.0, 1, 1, "A"),
    ("letter_a_period", "personafeedback", "A", {}, 'Both are fine.\n{"answer": "A."}', 1.0, 1, 1, "A"),
    (
        "response_a_offers",
        "personafeedback",
        "A",
        {},
        '{"answer": "Response A offers the calmer plan"}',
        1.0,
        1,
        1,
        "A",
    ),
    (
        "i_prefer_response_b",
        "alignx",
        "B",
        {"choices": ALIGNX_CHOICES},
        '{"answer": "I prefer Response B"}',
        1.0,
        1,
        1,
        "B",
    ),
    (
        "i_would_choose",
        "personafeedback",
        "B",
        {},
        '{"answer": "I would choose B because it is shorter"}',
        1.0,
        1,
        1,
        "B",
    ),
    ("the_answer_is_c", MMLU, "C", {"choices": MMLU_CHOICES}, '{"answer": "The answer is C"}', 1.0, 1, 1, "C"),
    ("final_answer_colon", MMLU, "C", {"choices": MMLU_CHOICES}, '{"answer": "**Final answer:** (C)"}', 1.0, 1, 1, "C"),
    ("i_think_not_letter_i", MMLU, "C", {"choices": ["a"] * 10}, '{"answer": "I think C"}', 1.0, 1, 1, "C"),
    ("free_text_lead_in", "triviaqa", ["Jupiter"], {}, '{"answer": "The answer is Jupiter"}', 1.0, 1, 1, "jupiter"),
    # --- smaller ones ---
    ("boxed_text_letter", MED, "C", {}, r"Hence the correct choice is $\boxed{\text{C}}$.", 0.9, 1, 0, "C"),
    ("boxed_textbf_parens", MED, "B", {}, r"$\boxed{\textbf{(B)}}$", 0.9, 1, 0, "B"),
    (
        "pubmedqa_leading_label",
        "pubmedqa",
        "yes",
        {},
        'The trial met its primary endpoint.\n{"answer": "yes, although no difference in mortality was found"}',
        1.0,
        1,
        1,
        "yes",
    ),
    ("pubmedqa_leading_no", "pubmedqa", "yes", {}, '{"answer": "No. Although yes in one subgroup"}', 0.1, 0, 1, "no"),
]


@pytest.mark.parametrize(
    ("data_source", "gold", "extra", "response", "score", "correct", "format_ok", "pred"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_realistic_outputs(data_source, gold, extra, response, score, correct, format_ok, pred) -> None:
    out = compute_score(data_source, response, gold, extra, math_timeout_s=30.0)
    assert tuple(out) == RESULT_KEYS
    assert (out["score"], out["correct"], out["format_ok"], out["pred"]) == pytest.approx(
        (score, float(correct), float(format_ok), pred)
    )


def test_case_ids_are_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)
