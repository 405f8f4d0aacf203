"""The ``--llm-*`` options of every command that calls an OpenAI-compatible endpoint (data builders, eval), and the
endpoint they configure."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from verl_personadual.utils.cli import count
from verl_personadual.utils.llm import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_CACHE_DIR,
    ENV_MODEL,
    LLMConfig,
    LLMConfigError,
    parse_base_url,
)

__all__ = ["add_llm_arguments", "llm_config_from_args"]


def add_llm_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, concurrency: bool = True) -> None:
    """``--llm-base-url``, ``--llm-model``, ``--llm-cache-dir`` and (with ``concurrency``) ``--llm-concurrency``."""
    p.add_argument(
        "--llm-base-url",
        type=_base_url,
        metavar="URL",
        help=f"OpenAI-compatible base URL, http(s)://host[:port][/path][?query] (else {ENV_BASE_URL}); the key "
        f"comes from {ENV_API_KEY} or the URL's user-info (https://KEY@host/v1, sent as the Bearer key), query "
        "parameters are sent with every request, and the URL is written and printed only redacted",
    )
    p.add_argument("--llm-model", metavar="NAME", help=f"model name at that endpoint (else {ENV_MODEL})")
    p.add_argument(
        "--llm-cache-dir",
        type=Path,
        metavar="DIR",
        help=f"reply cache, so a rerun sends no request twice (else {ENV_CACHE_DIR}, else "
        "~/.cache/verl_personadual/llm)",
    )
    if concurrency:
        p.add_argument("--llm-concurrency", type=count, default=16, metavar="N", help="requests in flight (default 16)")


def _base_url(text: str) -> str:
    """``type=`` of ``--llm-base-url``: an http(s) URL with a host (:func:`parse_base_url`)."""
    try:
        parse_base_url(text)
    except LLMConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def llm_config_from_args(args: argparse.Namespace) -> LLMConfig | None:
    """The endpoint configured by the ``--llm-*`` flags or the environment, or None when there is none; a
    half-configured one (a URL without a model) is an ``LLMConfigError``."""
    if not (args.llm_base_url or os.environ.get(ENV_BASE_URL)):
        return None
    return LLMConfig.from_env(
        base_url=args.llm_base_url,
        model=args.llm_model,
        cache_dir=args.llm_cache_dir,
        max_concurrency=getattr(args, "llm_concurrency", None) or 16,
    )
