"""Dual-mode agent loops for verl: prefix-forced rollouts for training, free rollouts for validation.

Both loops *are* verl's own ``single_turn_agent`` loop (``SingleTurnAgentLoop``, subclassed): verl's prompt
building, multimodal handling, ``priority`` passing, deterministic request ids (``det-<priority>`` under
``rollout.full_determinism``), ``routed_experts`` slicing and output schema all come from verl unchanged. The
plugin adds two things only: it wraps the loop's rollout-server client (:class:`PrefixingServer`) so that a
forced session's prefix is appended to the prompt the server receives and the server's output is returned as
``prefix ids + generated ids``, and it records the mode of each output in its ``extra_fields``.

Two loops are registered with verl's agent-loop registry (a data row picks one through its ``agent_name``):

``names.AGENT_LOOP_FORCED`` (training rows)
    Each prompt group of ``n = actor_rollout_ref.rollout.n`` sessions is split exactly in half by the
    session's index in the group (verl's ``session_id``, 0..n-1): sessions ``0 .. n/2-1`` are forced into
    ``Mode.GENERAL``, sessions ``n/2 .. n-1`` into ``Mode.PERSONALIZED``. The rollout server receives
    ``prompt_ids + prefix_ids(mode)`` and *generates after* the prefix, with
    ``max_tokens = response_length - len(prefix)``, so the response (prefix + generated tokens) never
    exceeds ``response_length``. The returned response starts with the prefix ids, and the prefix has
    ``response_mask = 1`` so it receives gradient (its advantage is weighted by ``beta`` in the estimator).
    With ``algorithm.dual_grpo.prefix_forcing = false`` (the paper's "w/o PfxSmp" ablation) this loop
    behaves exactly like the free loop. With ``algorithm.dual_grpo.only_mode = general|personalized`` (the
    G-SFT-RL / P-SFT-RL baselines) every session is forced into that one mode and any ``n >= 1`` is accepted.

``names.AGENT_LOOP_FREE`` (validation rows)
    No forcing: the server receives the prompt (with ``max_tokens = response_length``) and the model writes its
    own prefix.

Both record, in the output's ``extra_fields`` (which verl passes on to the reward's ``extra_info`` and stores
per row), ``names.MODE_FIELD`` = ``"general"`` / ``"personalized"`` (free: read from the head of the generated
ids; ``"unknown"`` when they start with no valid prefix), ``FORCED_FIELD`` (bool) and
``names.RESPONSE_LENGTH_FIELD`` (response tokens, prefix included; the per-mode length metrics of validation).

Rollout log-probs of forced tokens. The prefix tokens were not sampled, so the server has no log-prob for
them; the loop records ``0.0`` for each (i.e. probability 1, which is what forcing means for the sampler).
verl recomputes ``old_log_probs`` with the actor, so the PPO ratio and the loss are exact. The rollout
log-probs are used only for diagnostics (``rollout_corr/*`` metrics, slightly skewed on the prefix) and by
rollout correction: ``algorithm.rollout_correction.rollout_is`` / ``rollout_rs`` would weight or reject on the
fake 0.0, and ``bypass_mode: true`` would use them as the PPO ratio's old log-probs. The forced loop
therefore refuses, at construction, any of these settings (the free loop has honest log-probs for every
token and accepts them).

Prefix ids come from the tokenizer via ``modes.resolve_prefixes`` (cached per process and tokenizer: verl builds
one loop object per rollout); ``algorithm.dual_grpo.require_mode_tokens`` (default true) requires dedicated
tokens; false also accepts the plain-text encoding (several ids), exactly as the trainer resolves them. Both loops
refuse at construction a tokenizer on which the prefixes do not resolve so.

The loops require verl's v1 (TransferQueue) agent-loop worker, which passes ``session_id``; the forced loop
assumes each group has exactly ``rollout.n`` sessions (no per-row ``__rollout_n__`` override, and it is not
meant for validation rows, whose group size is ``rollout.val_kwargs.n``).
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

from verl_personadual.core.config import DualGRPOConfig
from verl_personadual.core.modes import Mode, ModePrefixes, mode_name, resolve_prefixes
from verl_personadual.core.names import (
    AGENT_LOOP_FORCED,
    AGENT_LOOP_FREE,
    MODE_FIELD,
    RESPONSE_LENGTH_FIELD,
)

__all__ = [
    "FORCED_FIELD",
    "PrefixingServer",
    "ForcedModeAgentLoop",
    "FreeModeAgentLoop",
    "forced_mode",
]

logger = logging.getLogger(__name__)

#: ``extra_fields`` key: True when the rollout's prefix was forced, False when the model chose it.
FORCED_FIELD = "forced"


def forced_mode(session_id: int, n: int) -> Mode:
    """Mode forced on session ``session_id`` (0..n-1) of a group of ``n`` (even): first half general."""
    if not 0 <= session_id < n:
        raise ValueError(
            f"session_id {session_id} is outside the group of actor_rollout_ref.rollout.n={n} sessions; "
            f"{AGENT_LOOP_FORCED} assumes every group has exactly rollout.n sessions "
            "(use it for training rows only, without a per-row __rollout_n__)"
        )
    return Mode.GENERAL if session_id < n // 2 else Mode.PERSONALIZED


#: The prefix ids forced on the session running in the current asyncio task (empty: free generation).
_FORCED_PREFIX: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "personadual_forced_prefix", default=()
)


class PrefixingServer:
    """verl's rollout-server client with the current session's forced prefix (every other attribute is the
    wrapped client's).

    ``generate`` sends ``prompt_ids + prefix`` with ``max_tokens = min(given, response_length - len(prefix))``
    (the given value, or that cap when none is given), passes every other argument (request id, priority,
    multimodal data) through unchanged, and returns the server's ``TokenOutput`` with ``token_ids = prefix +
    generated`` (generated cut to ``max_tokens``) and ``log_probs = [0.0] * len(prefix) + the server's`` (None
    when the server returned none). The prefix is read from a context variable that the loop sets for the
    duration of one session, so concurrent sessions never see each other's prefix.
    """

    def __init__(self, inner: Any, response_length: int) -> None:
        self._inner = inner
        self._response_length = response_length

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any) -> TokenOutput:
        prefix = list(_FORCED_PREFIX.get())
        params = dict(sampling_params)  # shared by all sessions of the group: never mutate it
        cap = self._response_length - len(prefix)
        params["max_tokens"] = min(int(params.get("max_tokens", cap)), cap)
        output: TokenOutput = await self._inner.generate(
            prompt_ids=list(prompt_ids) + prefix, sampling_params=params, **kwargs
        )
        generated = list(output.token_ids)[: params["max_tokens"]]
        log_probs = None
        if output.log_probs is not None:
            log_probs = [0.0] * len(prefix) + list(output.log_probs)[: params["max_tokens"]]
        return output.model_copy(update={"token_ids": prefix + generated, "log_probs": log_probs})


class _DualModeAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop with the prefixing server client, prefix resolution and the mode record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dual_grpo = DualGRPOConfig.from_algorithm(self.config.get("algorithm"))
        self.prefixes: ModePrefixes = resolve_prefixes(
            self.tokenizer, require_single_token=self.dual_grpo.prefix_requirement
        )
        self.server_manager = PrefixingServer(self.server_manager, self.response_length)

    async def _rollout(self, sampling_params: dict[str, Any], forced: Mode | None, **kwargs: Any) -> AgentLoopOutput:
        """verl's single-turn rollout of the row, generated after ``forced``'s prefix ids if given.

        Returns verl's ``AgentLoopOutput`` whose ``response_ids`` are ``prefix_ids + generated`` (forced) or
        ``generated`` (free), at most ``response_length`` long, with ``response_mask`` all 1 and, when the
        server returns log-probs, ``response_logprobs`` = ``[0.0] * len(prefix)`` + the server's; its
        ``extra_fields`` carry the mode and whether it was forced.
        """
        prefix_ids = self.prefixes.ids[forced] if forced is not None else ()
        token = _FORCED_PREFIX.set(tuple(prefix_ids))
        try:
            output: AgentLoopOutput = await super().run(sampling_params, **kwargs)
        finally:
            _FORCED_PREFIX.reset(token)
        if list(output.response_ids[: len(prefix_ids)]) != list(prefix_ids):
            raise RuntimeError(
                f"the continuous-token merge changed the forced prefix: expected the response to start with "
                f"{list(prefix_ids)}, got {list(output.response_ids[: len(prefix_ids) + 2])}"
            )
        mode_code = int(forced) if forced is not None else self.prefixes.mode_of_ids(output.response_ids)
        output.extra_fields.update(
            {
                MODE_FIELD: mode_name(mode_code),
                FORCED_FIELD: forced is not None,
                RESPONSE_LENGTH_FIELD: len(output.response_ids),
            }
        )
        return output


@register(AGENT_LOOP_FREE)
class FreeModeAgentLoop(_DualModeAgentLoop):
    """Validation loop: the model chooses its prefix; the mode it chose is recorded."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        return await self._rollout(sampling_params, forced=None, **kwargs)


@register(AGENT_LOOP_FORCED)
class ForcedModeAgentLoop(_DualModeAgentLoop):
    """Training loop: session ``i`` of a group of ``n`` is forced into ``forced_mode(i, n)``.

    Raises (at construction) ``ValueError`` for what ``DualGRPOConfig.check_forced_rollout`` refuses (odd ``n``
    or ``n < 2``, rollout-correction settings that would use the forced tokens' placeholder log-probs; the same
    check runs before a launch) and for a ``response_length`` that leaves no room after the longest prefix;
    ``PrefixResolutionError`` for a tokenizer that does not resolve as configured.
    With ``algorithm.dual_grpo.prefix_forcing = false`` none of this applies and it behaves like the free loop.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forcing: bool = self.dual_grpo.prefix_forcing
        if not self.forcing:
            return
        self.n: int = int(self.rollout_config.n)
        self.single_mode: Mode | None = self.dual_grpo.single_mode
        correction = self.config.get("algorithm", {}).get("rollout_correction", None)
        self.dual_grpo.check_forced_rollout(self.n, correction)
        longest = max(self.prefixes.length(m) for m in Mode)
        if self.response_length <= longest:
            raise ValueError(
                f"actor_rollout_ref.rollout.response_length={self.response_length} leaves no room to generate "
                f"after a forced prefix of {longest} token(s)"
            )

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        if not self.forcing:
            return await self._rollout(sampling_params, forced=None, **kwargs)
        if "session_id" not in kwargs:
            raise ValueError(
                f"{AGENT_LOOP_FORCED} needs the session index verl's v1 agent-loop worker passes as session_id "
                "(trainer.use_v1=true); it was not given"
            )
        mode = self.single_mode if self.single_mode is not None else forced_mode(int(kwargs["session_id"]), self.n)
        return await self._rollout(sampling_params, forced=mode, **kwargs)
