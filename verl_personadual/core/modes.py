"""The two reasoning modes, their control prefixes, and how to find them in token ids.

This module is the single source of truth for mode names, prefix strings and mode codes.
A mode is always read from a response's *token ids* (which prefix it starts with), never
from decoded text: special tokens are stripped when verl decodes responses.
"""

from __future__ import annotations

import enum
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from verl_personadual.utils.errors import UserError

__all__ = [
    "Mode",
    "PREFIX_TEXT",
    "UNKNOWN_MODE",
    "UNKNOWN_MODE_NAME",
    "MODE_NAMES",
    "mode_name",
    "mode_code",
    "ModePrefixes",
    "PrefixResolutionError",
    "resolve_prefixes",
]


class Mode(enum.IntEnum):
    """A reasoning mode; the int value is the code used in mode arrays (unknown = -1)."""

    GENERAL = 0
    PERSONALIZED = 1

    @property
    def prefix(self) -> str:
        """The control prefix that opens a response in this mode."""
        return PREFIX_TEXT[self]

    @property
    def other(self) -> "Mode":
        return Mode(1 - int(self))

    @classmethod
    def parse(cls, value: "str | int | Mode") -> "Mode":
        """Accept 'general' / 'personalized' (any case), 0 / 1, or a Mode."""
        if isinstance(value, Mode):
            return value
        if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
            return cls(int(value))
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        raise ValueError(f"unknown mode {value!r}: expected 'general' or 'personalized'")


#: Code for rows whose mode cannot be read (padding rows, responses without a valid prefix).
UNKNOWN_MODE: int = -1
#: Name of that code in metrics, predictions and tables.
UNKNOWN_MODE_NAME = "unknown"
#: Every mode name, in code order, then the unknown one (the columns of the mode-rate tables).
MODE_NAMES: tuple[str, ...] = ("general", "personalized", UNKNOWN_MODE_NAME)


def mode_name(code: int) -> str:
    """``"general"`` / ``"personalized"`` for mode codes 0 / 1, ``"unknown"`` for anything else."""
    return Mode(code).name.lower() if code in (Mode.GENERAL, Mode.PERSONALIZED) else UNKNOWN_MODE_NAME


def mode_code(name: str) -> int:
    """The code (0 / 1 / -1) of a name of :data:`MODE_NAMES`; raises ``ValueError`` naming the bad name."""
    if name not in MODE_NAMES:
        raise ValueError(f"unknown mode name {name!r}; expected one of {sorted(MODE_NAMES)}")
    return MODE_NAMES.index(name) if name != UNKNOWN_MODE_NAME else UNKNOWN_MODE


#: The control prefixes of the paper, exactly as the SFT data writes them.
PREFIX_TEXT: dict[Mode, str] = {
    Mode.GENERAL: "[General_mode]",
    Mode.PERSONALIZED: "[Personalized_mode]",
}


class PrefixResolutionError(UserError, ValueError):
    """A tokenizer does not encode the mode prefixes as the configuration requires."""


@dataclass(frozen=True)
class ModePrefixes:
    """Token ids of both prefixes for one tokenizer.

    ``ids[mode]`` is the tuple of ids that opens a response in ``mode``: one id when the prefix is a
    dedicated added token, several when it is plain text.
    """

    ids: dict[Mode, tuple[int, ...]]

    def __post_init__(self) -> None:
        g, p = self.ids[Mode.GENERAL], self.ids[Mode.PERSONALIZED]
        if not g or not p:
            raise PrefixResolutionError(f"empty prefix ids: general={g}, personalized={p}")
        shorter, longer = sorted((g, p), key=len)
        if longer[: len(shorter)] == shorter:
            raise PrefixResolutionError(
                f"prefix ids are ambiguous (one starts with the other): general={g}, personalized={p}"
            )

    @property
    def single_token(self) -> bool:
        """True when both prefixes are one dedicated token each."""
        return all(len(v) == 1 for v in self.ids.values())

    def length(self, mode: Mode) -> int:
        return len(self.ids[mode])

    def id_to_mode(self) -> dict[int, Mode]:
        """For single-token prefixes: token id -> mode."""
        if not self.single_token:
            raise PrefixResolutionError("id_to_mode() needs single-token prefixes")
        return {ids[0]: mode for mode, ids in self.ids.items()}

    def modes_of(
        self, responses: torch.Tensor, response_mask: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read each row's mode from the head of its response.

        Args:
            responses: (B, L) int token ids, right-padded, response starting at column 0.
            response_mask: optional (B, L); a prefix counts only where all its positions have mask 1
                (so balance-padding rows, whose mask is 0, are unknown).
        Returns:
            ``(modes, prefix_len)``: int8 array (B,) with 0 / 1 / -1 (unknown) and int64 array (B,) with the
            number of prefix tokens at the head of each response (0 for unknown rows).
        """
        if responses.dim() != 2:
            raise ValueError(f"responses must be (B, L), got shape {tuple(responses.shape)}")
        b, length = responses.shape
        modes = np.full(b, UNKNOWN_MODE, dtype=np.int8)
        plen = np.zeros(b, dtype=np.int64)
        for mode, ids in self.ids.items():
            k = len(ids)
            if k > length:
                continue
            head = responses[:, :k].cpu()
            hit = (head == torch.tensor(ids, dtype=head.dtype)).all(dim=1)
            if response_mask is not None:
                hit &= response_mask[:, :k].cpu().bool().all(dim=1)
            hit_np = hit.numpy()
            modes[hit_np] = int(mode)
            plen[hit_np] = k
        return modes, plen

    def mode_of_ids(self, ids: Sequence[int]) -> int:
        """Mode code (0, 1 or -1) of one response given as a list of ids."""
        head = tuple(int(t) for t in ids)
        for mode, pids in self.ids.items():
            if head[: len(pids)] == pids:
                return int(mode)
        return UNKNOWN_MODE


def _describe(ids: dict[Mode, tuple[int, ...]]) -> str:
    return ", ".join(f"{mode.prefix} -> {list(v)}" for mode, v in ids.items())


def _added_token_id(tokenizer: Any, text: str) -> int | None:
    """Id of ``text`` if the tokenizer has it as one added (or vocabulary) token, else None."""
    vocab = tokenizer.get_vocab()
    tid = vocab.get(text)
    if tid is None:
        return None
    return int(tid)


#: Resolutions per (tokenizer object, requirement): a weak reference to the tokenizer, its size when resolved,
#: and the result. verl builds one agent-loop object per rollout (512 per step at the paper's size), each of
#: which resolves the prefixes; reading a 150k-entry vocabulary every time is what the cache avoids.
_CACHE: dict[tuple[int, bool | None], tuple[Callable[[], Any], int | None, "ModePrefixes"]] = {}
_CACHE_LOCK = threading.Lock()


def _size(tokenizer: Any) -> int | None:
    try:
        return len(tokenizer)
    except TypeError:
        return None


def resolve_prefixes(tokenizer: Any, require_single_token: bool | None = None) -> ModePrefixes:
    """Resolve the prefix ids of both modes for ``tokenizer``.

    A dedicated token (one id, as written by ``verl_personadual.apps.add_mode_tokens``) is preferred; otherwise the
    prefix is the tokenizer's plain-text encoding (several ids, no special tokens added).

    Cached per process, tokenizer object and ``require_single_token``: the same tokenizer object gives the same
    :class:`ModePrefixes` object without reading its vocabulary again, unless its size (``len(tokenizer)``)
    changed since (tokens were added). A failed resolution is not cached. The cache holds the tokenizer weakly.

    Args:
        require_single_token: True -> fail unless both are dedicated tokens; False -> fail if they are
            (the configuration says text prefixes); None -> accept either, but both must be of the same kind.
    Raises:
        PrefixResolutionError: with the tokenizer name and what was found.
    """
    key = (id(tokenizer), require_single_token)
    size = _size(tokenizer)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0]() is tokenizer and hit[1] == size:
        return hit[2]
    prefixes = _resolve(tokenizer, require_single_token)
    try:
        ref = weakref.ref(tokenizer, lambda _dead, key=key: _CACHE.pop(key, None))
    except TypeError:  # an object without weak-reference support is resolved every time
        return prefixes
    with _CACHE_LOCK:
        _CACHE[key] = (ref, size, prefixes)
    return prefixes


def _resolve(tokenizer: Any, require_single_token: bool | None) -> ModePrefixes:
    """The uncached resolution of :func:`resolve_prefixes`."""
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    ids: dict[Mode, tuple[int, ...]] = {}
    kinds = set()
    for mode in Mode:
        tid = _added_token_id(tokenizer, mode.prefix)
        if tid is not None:
            encoded = tuple(tokenizer.encode(mode.prefix, add_special_tokens=False))
            if encoded != (tid,):
                raise PrefixResolutionError(
                    f"tokenizer {name!r}: {mode.prefix!r} is token {tid} but encodes as {list(encoded)}; "
                    "add it as a special/added token so that it is never split"
                )
            ids[mode] = (tid,)
            kinds.add("token")
        else:
            ids[mode] = tuple(int(t) for t in tokenizer.encode(mode.prefix, add_special_tokens=False))
            kinds.add("text")
    if len(kinds) > 1:
        raise PrefixResolutionError(
            f"tokenizer {name!r}: one prefix is a dedicated token and the other is not ({_describe(ids)}); "
            "run `python -m verl_personadual.apps.add_mode_tokens` on the checkpoint"
        )
    prefixes = ModePrefixes(ids)
    if require_single_token is True and not prefixes.single_token:
        raise PrefixResolutionError(
            f"tokenizer {name!r}: the mode prefixes are not dedicated tokens ({_describe(ids)}); "
            "prepare the checkpoint with `python -m verl_personadual.apps.add_mode_tokens` "
            "or set the prefix kind to text"
        )
    if require_single_token is False and prefixes.single_token:
        raise PrefixResolutionError(
            f"tokenizer {name!r}: text prefixes were configured but the tokenizer has dedicated mode tokens "
            f"({_describe(ids)})"
        )
    return prefixes
