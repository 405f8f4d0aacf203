"""The one prompt module: data-source names, task families, persona settings, persona rendering,
the answer-format instruction, and the chat prompt of every RL / SFT / evaluation row.

Everything that builds or reads a prompt imports from here; nothing else writes prompt text.

Answer format (what the reward code parses): the response reasons freely, then ends with a JSON object
whose key is ``ANSWER_KEY`` on its own last line, e.g. ``{"answer": "B"}``.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from verl_personadual.utils.strenum import StrEnum

__all__ = [
    "ANSWER_KEY",
    "DataSource",
    "TaskFamily",
    "PersonaSetting",
    "OBJECTIVE_SOURCES",
    "PERSONALIZED_SOURCES",
    "render_persona",
    "answer_format",
    "register_answer_format",
    "answer_instruction",
    "format_choices",
    "build_user_message",
    "build_prompt",
    "build_dialogue",
    "format_answer",
    "build_judge_prompt",
    "build_preference_question",
    "PERSONA_KEY",
    "build_aligned_persona_request",
    "EXPERT_PROMPT_VERSION",
    "build_expert_request",
    "build_mode_choice_prompt",
    "build_cot_prompt",
    "build_personal_prompt",
    "ALIGNXPERT_SYSTEM",
    "build_alignxpert_prompt",
    "EXTRACTED_KEY",
    "build_extract_verify_prompt",
]

#: The JSON key of the final answer object.
ANSWER_KEY = "answer"


class DataSource(StrEnum):
    """Names of the ``data_source`` values this project writes: the training sources, then the built-in evaluation
    benchmarks (registered, with everything else about them, in ``verl_personadual.data.benchmarks``; a benchmark
    registered elsewhere has a name but no member here)."""

    ULTRAMEDICAL = "ultramedical"
    FLAN = "flan"
    ALIGNX = "alignx"
    MMLU_PRO = "mmlu_pro"
    SUPERGPQA = "supergpqa"
    TRIVIAQA = "triviaqa"
    PUBMEDQA = "pubmedqa"
    MATH500 = "math500"
    PERSONAFEEDBACK = "personafeedback"
    FSPO_ROLEPLAY = "fspo_roleplay"
    TOY = "toy"  # the toy persona task of verl_personadual.data.toy (quickstart, CPU tests)


#: Training sources whose items have an objective answer (persona optional). Whether an evaluation benchmark is
#: objective is part of its registration (``verl_personadual.data.benchmarks.is_personalized``).
OBJECTIVE_SOURCES = frozenset({DataSource.ULTRAMEDICAL, DataSource.FLAN, DataSource.TOY})
#: Training sources whose answer depends on the user (each item carries its own persona).
PERSONALIZED_SOURCES = frozenset({DataSource.ALIGNX})


class TaskFamily(StrEnum):
    """The built-in reward families: how an item's gold answer is encoded, hence which scorer grades it (stored in
    ``extra_info``). A family is registered, with its scorer, in ``verl_personadual.core.rewards.families``; one
    registered elsewhere has a name but no member here."""

    MULTIPLE_CHOICE = "multiple_choice"  # gold: a letter A-J; options listed with letters in the question
    OPTION_TEXT = "option_text"  # gold: the text of one listed option (FLAN "OPTIONS:" items)
    FREE_TEXT = "free_text"  # gold: a short reference text (normalised match / containment)
    YES_NO_MAYBE = "yes_no_maybe"  # gold: yes / no / maybe
    OPEN_QA = "open_qa"  # gold: a list of aliases (TriviaQA-style exact match)
    MATH = "math"  # gold: a LaTeX / numeric answer (math-verify equivalence)
    PREFERENCE = "preference"  # gold: "A" or "B", the response this user prefers


class PersonaSetting(StrEnum):
    """Which persona a row's prompt carries.

    Personalized sources (AlignX, PersonaFeedback, FSPO) carry the user's own persona and are ``aligned``.
    """

    NONE = "none"
    UNALIGNED = "unaligned"
    ALIGNED = "aligned"


_I_AM = re.compile(r"^\s*(?:i\s+am|i'm|i’m)\s+", re.IGNORECASE)


def render_persona(persona: str) -> str:
    """Persona text as the clause after "I am": strips a leading "I am"/"I'm", the final period, and
    lower-cases the first letter unless the first word is an acronym or a name-like capitalised word
    followed by another capital (e.g. "NASA engineer" stays)."""
    text = " ".join(persona.split())
    text = _I_AM.sub("", text).rstrip(" .")
    if not text:
        raise ValueError("persona is empty")
    first = text.split(" ", 1)[0]
    if not (len(first) > 1 and first[1:2].isupper()):
        text = text[0].lower() + text[1:]
    return text


#: The answer-format clause of every reward family: the built-in ones here, others added by
#: ``verl_personadual.core.rewards.families.register_family`` (through :func:`register_answer_format`).
_INSTRUCTIONS: dict[str, str] = {
    TaskFamily.MULTIPLE_CHOICE: 'the letter of the correct option, e.g. {"answer": "B"}',
    TaskFamily.OPTION_TEXT: 'the exact text of the correct option, e.g. {"answer": "yes"}',
    TaskFamily.FREE_TEXT: 'a short final answer, e.g. {"answer": "your answer"}',
    TaskFamily.YES_NO_MAYBE: 'one of yes, no or maybe, e.g. {"answer": "yes"}',
    TaskFamily.OPEN_QA: 'a short entity or phrase, e.g. {"answer": "your answer"}',
    TaskFamily.MATH: 'the final result in simplest form (LaTeX allowed), e.g. {"answer": "\\\\frac{1}{2}"}',
    TaskFamily.PREFERENCE: 'the letter of the response you prefer, e.g. {"answer": "A"}',
}


def answer_format(family: TaskFamily | str) -> str:
    """The answer-format clause of ``family`` (what its final answer must be); ValueError for an unknown one."""
    try:
        return _INSTRUCTIONS[str(family)]
    except KeyError:
        raise ValueError(f"{family!r} is not a registered reward family ({sorted(_INSTRUCTIONS)})") from None


def register_answer_format(family: str, clause: str) -> None:
    """Record the answer-format clause of a reward family; ValueError when it already has another one."""
    if not clause.strip():
        raise ValueError(f"reward family {family!r}: empty answer-format clause")
    if _INSTRUCTIONS.get(str(family), clause) != clause:
        raise ValueError(f"reward family {family!r} already has the answer format {_INSTRUCTIONS[str(family)]!r}")
    _INSTRUCTIONS[str(family)] = clause


def answer_instruction(family: TaskFamily | str) -> str:
    """The sentence appended to every question: reason first, then a final JSON answer object."""
    return (
        "Reason step by step, then give your final answer on the last line as a JSON object "
        f'with the key "{ANSWER_KEY}": {answer_format(family)}.'
    )


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_choices(options: Sequence[str]) -> str:
    """Lettered option list "A. ...\\nB. ..."; "N/A" options (MMLU-Pro padding) are dropped and every kept
    option keeps the letter of its original position, which is what gold letters index."""
    lines = []
    for i, opt in enumerate(options):
        if opt.strip() == "N/A":
            continue
        lines.append(f"{LETTERS[i]}. {opt.strip()}")
    return "\n".join(lines)


def build_user_message(question: str, family: TaskFamily | str, persona: str | None = None) -> str:
    """User-turn text: optional persona sentence, the question, the answer-format instruction."""
    body = question.strip()
    if not body:
        raise ValueError("question is empty")
    parts = []
    if persona is not None:
        parts.append(f"I am {render_persona(persona)}. My question is:")
    parts.append(body)
    parts.append(answer_instruction(family))
    return "\n\n".join(parts)


def build_prompt(question: str, family: TaskFamily | str, persona: str | None = None) -> list[dict[str, str]]:
    """Chat prompt of one row (verl's ``prompt`` column): a single user turn, no system prompt."""
    return [{"role": "user", "content": build_user_message(question, family, persona)}]


def build_dialogue(
    first_prompt: Sequence[dict[str, str]], first_response: str, second_prompt: Sequence[dict[str, str]]
) -> list[dict[str, str]]:
    """A two-turn chat prompt: a finished first exchange (its prompt, then ``first_response`` as the assistant turn,
    mode prefix included) followed by the second prompt, whose answer is to be generated. Used by the multi-turn
    analysis (RQ6) and the two-turn training rows."""
    if not first_prompt or not second_prompt:
        raise ValueError("both turns need a prompt")
    return [*first_prompt, {"role": "assistant", "content": first_response}, *second_prompt]


def format_answer(answer: str) -> str:
    """The final answer line a well-formed response ends with (used by SFT data and tests)."""
    return json.dumps({ANSWER_KEY: answer}, ensure_ascii=False)


_JUDGE_TEMPLATE = (
    "You grade answers. Decide whether the candidate answer means the same as the reference answer for the "
    "question (wording may differ; extra correct detail is fine; a contradicting or missing key fact is not).\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{candidate}\n\n"
    'Reply with a JSON object on the last line with the key "{key}": "yes" if the candidate is correct, '
    'else "no", e.g. {{"{key}": "yes"}}.'
)


def build_judge_prompt(question: str, reference: str, candidate: str) -> list[dict[str, str]]:
    """Chat prompt asking an LLM judge whether ``candidate`` matches ``reference``; the judge replies in our
    answer format with "yes" or "no" (used by ``verl_personadual.core.rewards.judge``)."""
    content = _JUDGE_TEMPLATE.format(
        question=question.strip() or "(not given)",
        reference=reference.strip(),
        candidate=candidate.strip(),
        key=ANSWER_KEY,
    )
    return [{"role": "user", "content": content}]


# --- RL data: AlignX preference questions and aligned-persona generation (used by data_preprocess) ---

_PREFERENCE_TEMPLATE = (
    "{post}\n\nHere are two responses to this. Which one would you prefer?\n\n"
    "Response A:\n{response_a}\n\nResponse B:\n{response_b}"
)


def build_preference_question(post: str, response_a: str, response_b: str) -> str:
    """Question text of a pairwise-preference item (AlignX): the post, then responses A and B. The gold of such
    an item (family ``PREFERENCE``) is the letter of the response the user prefers."""
    return _PREFERENCE_TEMPLATE.format(post=post.strip(), response_a=response_a.strip(), response_b=response_b.strip())


#: JSON key of the persona in an aligned-persona generation reply.
PERSONA_KEY = "persona"

_ALIGNED_PERSONA_TEMPLATE = (
    "Describe a person who would plausibly ask the question below and whose background bears on it: their "
    "occupation, situation, experience or interests. Write one sentence of at most 40 words, in the third person, "
    'starting with "A" or "An" (e.g. "A rural nurse who often treats farm injuries."). Do not answer the '
    "question and do not hint at its answer.\n\nQuestion:\n{question}\n\n"
    'Reply with only a JSON object with the key "{key}", e.g. {{"{key}": "A ..."}}.'
)


def build_aligned_persona_request(question: str) -> list[dict[str, str]]:
    """Chat messages asking an LLM (the paper used GPT-4o) for a persona *aligned* with ``question``: someone
    whose background is relevant to it, without leaking the answer. The reply is a JSON object
    ``{"persona": "..."}`` (parsed and validated by ``verl_personadual.data.personas``)."""
    body = question.strip()
    if not body:
        raise ValueError("question is empty")
    return [{"role": "user", "content": _ALIGNED_PERSONA_TEMPLATE.format(question=body, key=PERSONA_KEY)}]


# --- SFT data: expert trajectories in each mode (used by verl_personadual.data.sft_rows) ---

#: Version of the two expert templates below; ``build_sft`` records it in its manifest. Bump it whenever their
#: text changes (the text is part of every request, hence of the LLM cache key, so a change re-asks the expert).
EXPERT_PROMPT_VERSION = "expert-v1"

_EXPERT_GENERAL_TEMPLATE = (
    "Answer the question below in general mode: reason only from facts, domain knowledge and logic. Do not "
    "assume anything about who is asking.\n\n{user}"
)

_EXPERT_PERSONALIZED_TEMPLATE = (
    "Answer the question below in personalized mode. The asker describes themselves first. Start your reasoning "
    "by analysing their attributes (occupation, interests, needs, situation) and use them throughout: decide "
    "what they most likely mean, which knowledge applies to them, and which answer serves them best.\n\n{user}"
)


def build_expert_request(question: str, family: TaskFamily | str, persona: str | None) -> list[dict[str, str]]:
    """Chat messages asking the expert model for one SFT trajectory.

    ``persona is None`` -> *general* mode: the expert sees only the question (and the answer-format instruction
    of :func:`build_user_message`) and is told to reason from facts and logic. Otherwise *personalized* mode:
    the expert sees the persona sentence + question exactly as the RL prompt words them, and is told to analyse
    the persona's attributes and use them throughout its reasoning. One user turn, no system prompt (some
    reasoning experts, e.g. DeepSeek-R1, are meant to be used without one). Versioned by
    :data:`EXPERT_PROMPT_VERSION`.
    """
    template = _EXPERT_GENERAL_TEMPLATE if persona is None else _EXPERT_PERSONALIZED_TEMPLATE
    return [{"role": "user", "content": template.format(user=build_user_message(question, family, persona))}]


# --- Evaluation baseline: PersonaDual-Prompt (the mode is chosen by an instruction, not by training) ---

_MODE_CHOICE_TEMPLATE = (
    "Before answering, decide whether the persona above should shape your answer. Begin your response with "
    "exactly one of these two tags: {general} if the answer should rest on facts alone and ignore the persona, "
    "or {personalized} if it should take the persona into account. Then answer in that mode."
)


def build_mode_choice_prompt(
    question: str, family: TaskFamily | str, persona: str | None = None
) -> list[dict[str, str]]:
    """Chat prompt of the PersonaDual-Prompt baseline: :func:`build_prompt`'s user turn followed by an instruction
    to open the response with one of the two mode prefixes (``modes.PREFIX_TEXT``) chosen by the model itself."""
    from verl_personadual.core.modes import PREFIX_TEXT, Mode

    instruction = _MODE_CHOICE_TEMPLATE.format(
        general=PREFIX_TEXT[Mode.GENERAL], personalized=PREFIX_TEXT[Mode.PERSONALIZED]
    )
    content = f"{build_user_message(question, family, persona)}\n\n{instruction}"
    return [{"role": "user", "content": content}]


# --- Evaluation baselines of the paper's Table 1 that are prompt formats (verl_personadual.eval.baselines) ---

_COT_INSTRUCTION = (
    "Think it through step by step before you answer: work out what exactly is asked, recall the facts and rules "
    "that apply, reason from them one step at a time, and check your result."
)


def build_cot_prompt(question: str, family: TaskFamily | str, persona: str | None = None) -> list[dict[str, str]]:
    """The CoT baseline (a general-purpose model prompted for chain-of-thought): :func:`build_prompt`'s user turn
    followed by an explicit step-by-step instruction. (Every prompt already asks for step-by-step reasoning in its
    answer instruction; this one spells the chain of thought out.)"""
    return [{"role": "user", "content": f"{build_user_message(question, family, persona)}\n\n{_COT_INSTRUCTION}"}]


_PERSONAL_INSTRUCTION = (
    "Personalize your answer: analyse what I told you about myself (occupation, interests, needs, situation) and "
    "use it throughout your reasoning to give the answer that serves me best."
)


def build_personal_prompt(question: str, family: TaskFamily | str, persona: str | None = None) -> list[dict[str, str]]:
    """The Personal-Prompt baseline (personalization alignment through prompting): :func:`build_prompt`'s user
    turn followed, when there is a persona, by an instruction to use it throughout the reasoning (the personalized
    mode's expert instruction, addressed to the model itself)."""
    content = build_user_message(question, family, persona)
    if persona is not None:
        content = f"{content}\n\n{_PERSONAL_INSTRUCTION}"
    return [{"role": "user", "content": content}]


#: AlignXpert system prompts, verbatim from AlignX's released generation scripts (``eval/gen_ica.py``,
#: ``eval/gen_pba.py`` of github.com/JinaLeejnl/AlignX).
ALIGNXPERT_SYSTEM = {
    "ica": "Generate a task-specific response based on user historical behavior and preferences.",
    "pba": "Generate a task-specific response based on user preferences.",
}
_ALIGNXPERT_PREFERENCES = {
    "ica": "***Historical Behavior and User Preferences***",
    "pba": "***User Preferences***",
}


def build_alignxpert_prompt(
    question: str, family: TaskFamily | str, persona: str | None, variant: str
) -> list[dict[str, str]]:
    """The prompt format an AlignXpert checkpoint was trained with (``variant`` ``"ica"``: in-context alignment;
    ``"pba"``: preference-bridged alignment), as AlignX's released generation scripts write it: a system turn and
    a user turn ``***Task***`` / ``**Post:**`` (here the question with our answer-format instruction) / the user's
    preferences / ``***Response:***``. Our rows carry a persona description only, which fills the preferences
    section (AlignX's ICA also lists the user's past comments and choices; its PBA, a profile derived from the
    user's preference directions); without a persona the section is left out."""
    if variant not in ALIGNXPERT_SYSTEM:
        raise ValueError(f"unknown AlignXpert variant {variant!r}: expected one of {sorted(ALIGNXPERT_SYSTEM)}")
    user = f"***Task***\n\n**Post:**\n{build_user_message(question, family, None)}\n\n"
    if persona is not None:
        user += f"{_ALIGNXPERT_PREFERENCES[variant]}\n\n{' '.join(persona.split())}\n\n"
    user += "***Response:***\n\n"
    return [{"role": "system", "content": ALIGNXPERT_SYSTEM[variant]}, {"role": "user", "content": user}]


# --- Evaluation grading: the paper's extract-then-verify LLM judge (PubMedQA, MATH-500) ---

#: JSON key of the concise answer in an extract-then-verify judge reply (the verdict uses ``ANSWER_KEY``).
EXTRACTED_KEY = "extracted"

_EXTRACT_VERIFY_TEMPLATE = (
    "You grade a model's response to a question. First extract the concise final answer the response gives (for a "
    "yes/no/maybe question: yes, no or maybe; for a math problem: the final value or expression), then verify it "
    "against the reference answer: it is correct if it means the same (for math: mathematically equivalent; "
    "wording and formatting may differ). A response that gives no final answer, or several different ones, is "
    "incorrect.\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\nResponse:\n{response}\n\n"
    'Reply with a JSON object on the last line with the keys "{extracted}" (the concise answer, "" if there is '
    'none) and "{key}" ("yes" if it is correct, else "no"), e.g. {{"{extracted}": "maybe", "{key}": "no"}}.'
)


def build_extract_verify_prompt(question: str, reference: str, response: str) -> list[dict[str, str]]:
    """Chat prompt of the extract-then-verify judge (paper §4: "an automated judge to first extract the concise
    answer and then verify its correctness"): the judge sees the whole response, extracts its final answer and
    replies ``{"extracted": ..., "answer": "yes"|"no"}`` (read by ``verl_personadual.eval.judge``)."""
    content = _EXTRACT_VERIFY_TEMPLATE.format(
        question=question.strip() or "(not given)",
        reference=reference.strip(),
        response=response.strip() or "(empty)",
        extracted=EXTRACTED_KEY,
        key=ANSWER_KEY,
    )
    return [{"role": "user", "content": content}]
