"""Persona-aware reward: answer extraction and rule scoring per task family, one entry point for RL and eval.

verl loads this package as ``reward.custom_reward_function.path=pkg://verl_personadual.core.rewards`` with
``name=compute_score`` (``names.REWARD_FN_PATH`` / ``names.REWARD_FN_NAME``). It registers nothing with verl
and imports no heavy library (math-verify runs in a small pool of child processes, started on demand and
ready before any check is timed; see ``mathcheck``).

Modules: ``extract`` (answer extraction), ``normalize`` (text normalisation), ``families`` (the registry of reward
families and of data sources' default families), ``scorers`` (gold encodings and rule scorers of the built-in
families, registered there), ``mathcheck`` (math equivalence, child pool), ``mathserver`` (the child), ``judge``
(optional LLM judge), ``dispatch`` (the entry point).
"""

from __future__ import annotations

from verl_personadual.core.rewards.dispatch import RESULT_KEYS, compute_score
from verl_personadual.core.rewards.extract import Extraction, extract_answer
from verl_personadual.core.rewards.judge import CompletionClient, LLMJudge
from verl_personadual.core.rewards.scorers import RewardInputError

__all__ = [
    "compute_score",
    "RESULT_KEYS",
    "extract_answer",
    "Extraction",
    "LLMJudge",
    "CompletionClient",
    "RewardInputError",
]
