"""Checks the command-line tools run on their arguments before they write or start anything.

Every failure is a :class:`PreflightError` whose message is one line naming the flag, the value and what to do;
the CLIs print it as ``error: <message>`` and exit with status 2.

- :func:`check_model`: a local Hugging Face checkpoint directory (with ``config.json``), or a well-formed hub id
  that the local cache or the hub knows (with ``HF_HUB_OFFLINE`` set only the cache is asked);
- :func:`check_files`: every path is an existing file;
- :func:`check_output_dir`: the directory exists or can be created, and is writable (nothing is created);
- :func:`closest`: the "did you mean" of an unknown name;
- :func:`check_rl_parquet` / :func:`check_sft_parquet`: a training parquet has the columns, types and values that
  verl's datasets, our agent loops and our reward read (the message names file, column and row);
- :func:`check_mode_tokens`: a checkpoint's tokenizer encodes the mode prefixes as the configuration requires.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from verl_personadual.core.verl_private import agent_loop_names
from verl_personadual.utils.errors import UserError

__all__ = [
    "PreflightError",
    "check_model",
    "check_files",
    "check_output_dir",
    "check_rl_parquet",
    "check_sft_parquet",
    "check_mode_tokens",
    "known_agent_loops",
    "MODE_TOKENS_HINT",
    "looks_local",
]


class PreflightError(UserError, ValueError):
    """A command-line argument that cannot work; the message is one line naming flag and value."""


def looks_local(spec: str) -> bool:
    """A value meant as a path rather than a hub id: starts like a path, or its first component is a local dir."""
    if spec.startswith(("/", ".", "~")):
        return True
    head = Path(spec).parts[0] if Path(spec).parts else ""
    return "/" in spec and Path(head).is_dir()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def check_model(spec: str, flag: str = "--model") -> None:
    """``spec`` names a usable model: a local checkpoint directory, or a hub id the cache or the hub has.

    Raises:
        PreflightError: a missing path, a directory without ``config.json``, a malformed hub id, or a hub id that
            neither the local cache nor the hub (when it may be asked) knows.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PreflightError(f"{flag} {spec}: a file, not a checkpoint directory")
        if not (path / "config.json").is_file():
            raise PreflightError(
                f"{flag} {spec}: no config.json in this directory (expected a Hugging Face checkpoint, e.g. one "
                "written by `python -m verl_personadual.apps.tiny_model --out DIR`)"
            )
        return
    if looks_local(spec):
        raise PreflightError(f"{flag} {spec}: no such directory")
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise PreflightError(
            f"{flag} {spec}: no such directory, and not a Hugging Face hub id (name or namespace/name)"
        ) from None
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise PreflightError(
            f"{flag} {spec}: no such directory, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
        )
    try:
        HfApi().model_info(spec, timeout=10)
    except GatedRepoError:
        return  # it exists; loading it needs a token, which the loader reports
    except RepositoryNotFoundError:
        raise PreflightError(f"{flag} {spec}: no such directory, and no such model on the Hugging Face hub") from None
    except Exception as err:  # network errors of any HTTP stack
        raise PreflightError(
            f"{flag} {spec}: no such directory, and the Hugging Face hub cannot be reached to look it up "
            f"({_first_line(err)})"
        ) from None


def check_files(paths: Iterable[str | os.PathLike[str]], flag: str) -> None:
    """Every path is an existing file; else PreflightError naming the first one that is not."""
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise PreflightError(f"{flag} {p}: no such file")
        if not path.is_file():
            raise PreflightError(f"{flag} {p}: not a file")


def check_output_dir(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """``path`` is, or can be created as, a writable directory; nothing is left behind (the check creates and
    removes a temporary directory in ``path`` or its nearest existing parent)."""
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise PreflightError(f"{flag} {path}: exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PreflightError(f"{flag} {path}: {parent} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".preflight-"))
    except OSError as err:
        raise PreflightError(f"{flag} {path}: cannot write in {parent} ({err.strerror or _first_line(err)})") from None


# --- training data ------------------------------------------------------------------------------------------------

#: Chat roles a message of ``prompt`` / ``messages`` may have (verl templates them with the chat template).
_ROLES = frozenset({"system", "user", "assistant", "tool"})
#: Persona settings whose prompt carries a persona (``prompts.PersonaSetting``): the persona must not be empty.
_SETTINGS_WITH_PERSONA = frozenset({"unaligned", "aligned"})


def _parquet_columns(path: str, flag: str, columns: Sequence[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The schema of ``path`` and its rows restricted to the ``columns`` it has; PreflightError if unreadable."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(Path(path).expanduser())
        present = [c for c in columns if c in schema.names]
        rows = pq.read_table(Path(path).expanduser(), columns=present).to_pylist()
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise PreflightError(f"{flag} {path}: not a readable parquet file ({type(err).__name__})") from None
    return schema, rows


def _require_columns(path: str, flag: str, schema: Any, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise PreflightError(
            f"{flag} {path}: no column {missing[0]!r} (columns: {', '.join(schema.names) or 'none'}); {what}"
        )


def _is_string(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_messages_type(path: str, flag: str, schema: Any, column: str) -> None:
    """``column`` is a list of structs with string ``role`` and ``content``."""
    import pyarrow as pa

    t = schema.field(column).type
    ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type)
    if ok:
        fields = {f.name: f.type for f in t.value_type}
        ok = all(k in fields and _is_string(fields[k]) for k in ("role", "content"))
    if not ok:
        raise PreflightError(f"{flag} {path}: column {column!r} is {t}, expected a list of {{role, content}} strings")


def _check_messages(where: str, column: str, messages: Any, last_role: str | None) -> None:
    """One row's chat: a non-empty list of messages with a known role and string content."""
    if not messages:
        raise PreflightError(f"{where}: {column} is empty")
    for k, m in enumerate(messages):
        if m is None or m.get("role") not in _ROLES:
            role = None if m is None else m.get("role")
            raise PreflightError(f"{where}: {column}[{k}].role is {role!r}, expected one of {sorted(_ROLES)}")
        if not isinstance(m.get("content"), str):
            raise PreflightError(f"{where}: {column}[{k}].content is {m.get('content')!r}, expected a string")
    if last_role is not None and messages[-1]["role"] != last_role:
        raise PreflightError(
            f"{where}: the last message of {column} is {messages[-1]['role']!r}, expected {last_role!r}"
        )


def _check_persona(where: str, extra: Mapping[str, Any]) -> None:
    """A row whose persona setting needs a persona has a non-empty one."""
    setting = extra.get("persona_setting")
    if setting is None:
        return
    from verl_personadual.core.prompts import PersonaSetting

    if setting not in {s.value for s in PersonaSetting}:
        raise PreflightError(
            f"{where}: extra_info.persona_setting is {setting!r}, expected one of {[s.value for s in PersonaSetting]}"
        )
    persona = extra.get("persona")
    if setting in _SETTINGS_WITH_PERSONA and "persona" in extra and not (isinstance(persona, str) and persona.strip()):
        raise PreflightError(
            f"{where}: extra_info.persona is {persona!r} but persona_setting {setting!r} needs a persona"
        )


def known_agent_loops() -> list[str]:
    """Names in verl's agent-loop registry once the plugin has registered its loops."""
    return agent_loop_names()


def check_rl_parquet(path: str, flag: str, prompt_key: str = "prompt", agent_loops: Sequence[str] | None = None) -> int:
    """An RL parquet as verl's ``RLHFDataset``, our agent loops and our reward read it; returns its row count.

    Columns: ``prompt_key`` (a non-empty list of {role, content} strings ending with a user turn), ``data_source``
    (string), ``reward_model`` (a struct with a non-null ``ground_truth``), ``extra_info`` (a struct; its
    ``task_family`` / ``data_source`` must name a reward family, as ``rewards.dispatch.resolve_family`` reads them,
    and a ``persona_setting`` of unaligned / aligned needs a non-empty ``persona``), and, when present,
    ``agent_name`` (a name of verl's agent-loop registry, ``agent_loops``: default :func:`known_agent_loops`).

    Raises:
        PreflightError: naming the file, the column and the first bad row.
    """
    import pyarrow as pa

    from verl_personadual.core.rewards import RewardInputError
    from verl_personadual.core.rewards.dispatch import resolve_family

    needed = [prompt_key, "data_source", "reward_model", "extra_info"]
    schema, rows = _parquet_columns(path, flag, [*needed, "agent_name"])
    _require_columns(
        path,
        flag,
        schema,
        needed,
        "an RL parquet is written by verl_personadual.apps.build_rl or verl_personadual.apps.build_toy",
    )
    _check_messages_type(path, flag, schema, prompt_key)
    if not _is_string(schema.field("data_source").type):
        raise PreflightError(
            f"{flag} {path}: column 'data_source' is {schema.field('data_source').type}, expected string"
        )
    reward_type = schema.field("reward_model").type
    if not pa.types.is_struct(reward_type) or "ground_truth" not in {f.name for f in reward_type}:
        raise PreflightError(
            f"{flag} {path}: column 'reward_model' is {reward_type}, expected a struct with ground_truth"
        )
    if not pa.types.is_struct(schema.field("extra_info").type):
        raise PreflightError(
            f"{flag} {path}: column 'extra_info' is {schema.field('extra_info').type}, expected a struct"
        )
    known = None
    if "agent_name" in schema.names:
        known = set(agent_loops if agent_loops is not None else known_agent_loops())
    for i, row in enumerate(rows):
        where = f"{flag} {path}, row {i}"
        _check_messages(where, prompt_key, row[prompt_key], "user")
        if row["data_source"] is None:
            raise PreflightError(f"{where}: data_source is null")
        if row["reward_model"] is None or row["reward_model"].get("ground_truth") is None:
            raise PreflightError(f"{where}: reward_model.ground_truth is null")
        extra = row["extra_info"]
        if extra is None:
            raise PreflightError(f"{where}: extra_info is null")
        try:
            resolve_family(row["data_source"], extra)
        except RewardInputError as err:
            raise PreflightError(f"{where}: {err}") from None
        _check_persona(where, extra)
        if known is not None and row.get("agent_name") not in known:
            raise PreflightError(
                f"{where}: agent_name {row.get('agent_name')!r} is not an agent loop verl knows "
                f"({', '.join(sorted(known))})"
            )
    return len(rows)


def check_sft_parquet(path: str, flag: str, messages_key: str = "messages") -> int:
    """An SFT parquet as verl's multi-turn SFT dataset reads it; returns its row count.

    ``messages_key``: a non-empty list of {role, content} strings with at least one assistant turn; when the file
    has an ``extra_info`` struct, a ``persona_setting`` of unaligned / aligned needs a non-empty ``persona``.

    Raises:
        PreflightError: naming the file, the column and the first bad row.
    """
    import pyarrow as pa

    schema, rows = _parquet_columns(path, flag, [messages_key, "extra_info"])
    _require_columns(
        path,
        flag,
        schema,
        [messages_key],
        "an SFT parquet is written by verl_personadual.apps.build_sft or verl_personadual.apps.build_toy",
    )
    _check_messages_type(path, flag, schema, messages_key)
    has_extra = "extra_info" in schema.names and pa.types.is_struct(schema.field("extra_info").type)
    for i, row in enumerate(rows):
        where = f"{flag} {path}, row {i}"
        _check_messages(where, messages_key, row[messages_key], None)
        if not any(m["role"] == "assistant" for m in row[messages_key]):
            raise PreflightError(f"{where}: {messages_key} has no assistant message to train on")
        if has_extra and row.get("extra_info") is not None:
            _check_persona(where, row["extra_info"])
    return len(rows)


# --- mode tokens --------------------------------------------------------------------------------------------------

#: What to do about a checkpoint without dedicated mode tokens.
MODE_TOKENS_HINT = (
    "add them with `python -m verl_personadual.apps.add_mode_tokens`, or use plain-text prefixes "
    "(algorithm.dual_grpo.require_mode_tokens=false)"
)


def check_mode_tokens(
    model: str, require_single_token: bool | None, flag: str = "--model", hint: str = MODE_TOKENS_HINT
) -> None:
    """The tokenizer of checkpoint ``model`` resolves the mode prefixes as ``modes.resolve_prefixes`` does with
    ``require_single_token``; PreflightError (one line: the model, what was found, ``hint``) otherwise.

    Only the tokenizer is loaded (no weights)."""
    from transformers import AutoTokenizer

    from verl_personadual.core.modes import PrefixResolutionError, resolve_prefixes

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception as err:  # any loader error: a checkpoint without a usable tokenizer
        raise PreflightError(f"{flag} {model}: cannot load its tokenizer ({_first_line(err)})") from None
    try:
        resolve_prefixes(tokenizer, require_single_token=require_single_token)
    except PrefixResolutionError as err:
        from verl_personadual.core.modes import Mode

        try:
            found = resolve_prefixes(tokenizer).ids
        except PrefixResolutionError:  # mixed kinds: the resolver's own words
            raise PreflightError(f"{flag} {model}: {' '.join(str(err).split())}; {hint}") from None
        detail = ", ".join(f"{m.prefix} encodes as {len(found[m])} tokens" for m in Mode)
        raise PreflightError(f"{flag} {model}: the mode prefixes are not dedicated tokens ({detail}); {hint}") from None
