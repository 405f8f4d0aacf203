"""The project's one OpenAI-compatible chat client (aligned personas, SFT expert trajectories, judges, eval
personas all go through it).

Contract:

- Endpoint, model and key come from :class:`LLMConfig` (explicit values win) or the environment variables
  ``PERSONADUAL_LLM_BASE_URL``, ``PERSONADUAL_LLM_MODEL``, ``PERSONADUAL_LLM_API_KEY``. The key is never logged
  nor shown in ``repr``; with no key set, the placeholder ``"EMPTY"`` is sent (what local vLLM servers accept).
- :meth:`LLMClient.complete_many` sends one chat completion per message list, at most
  ``max_concurrency`` in flight, and returns the reply texts in input order.
- Retries with exponential backoff (plus jitter, honouring ``Retry-After`` up to ``backoff_max_s``) on HTTP 429,
  5xx, timeouts and dropped connections, up to ``max_retries`` retries per request. An endpoint that cannot be
  connected to at all (connection refused, unknown host) is not transient: it is retried at most
  :data:`CONNECT_RETRIES` times, at most :data:`CONNECT_BACKOFF_S` apart, and the failure names the (redacted) URL
  and the number of attempts. Other HTTP errors fail at once.
- The endpoint URL (:func:`parse_base_url`, checked by :class:`LLMConfig` and ``--llm-base-url``): ``http(s)://host
  [:port][/path][?query]``. A key in its user-info (``https://KEY@host/v1``) is sent as the Bearer key (refused when
  ``PERSONADUAL_LLM_API_KEY`` holds another; ``user:password`` refused), and its query parameters are sent with
  every request.
- No credential is shown: the key is never logged nor in ``repr``, and every URL the project writes or prints
  (manifests, logs, reports, error messages, ``repr``) goes through :func:`redact_url` (user-info, key-like query
  parameters and key-looking path segments masked).
  httpx's per-request INFO log lines (which carry the URL) are silenced (WARNING and above still show).
- A content-addressed on-disk cache: key = SHA-256 of (model, messages, sampling params). A reply is cached only
  after it passed validation, written atomically (temp file + rename), so a re-run or a resumed run sends no
  request that already succeeded.
- Reasoning: a server with a reasoning parser (vLLM ``--reasoning-parser``, DeepSeek's API) returns a reasoning
  model's thinking in the message's ``reasoning_content`` (or ``reasoning``) field, next to the answer in
  ``content``. The client keeps it: :meth:`LLMClient.complete_replies` returns :class:`Reply` (content +
  reasoning), and the cache stores both (entries written before this field existed have none).
  :meth:`LLMClient.complete_many` returns the contents only. Validation hooks see the content.
- ``LLMConfig.offline``: replay only. Replies come from the cache; nothing is sent, and a batch with any request
  not in the cache raises :class:`LLMOfflineMissError` before anything else happens (the shipped sample replies,
  ``verl_personadual.data.samples``, are replayed this way).
- A validation hook ``validate(reply: str) -> None`` raises ``ValueError`` to reject a reply (garbage); the
  rejected reply is not cached. ``complete_many`` finishes every other request first (so they are cached), then
  raises :class:`LLMBatchError` listing each failed index with its reason.
- Identical requests within one batch are sent once and share the reply.
- Counters in :attr:`LLMClient.stats`: requests sent, completions served from cache, retries, rejected replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import sys
import threading
import urllib.parse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Coroutine, Mapping, Sequence, TypeVar

import openai
from tqdm.auto import tqdm

from verl_personadual.utils.atomic import atomic_write_text
from verl_personadual.utils.errors import UserError

__all__ = [
    "ENV_BASE_URL",
    "ENV_MODEL",
    "ENV_API_KEY",
    "ENV_CACHE_DIR",
    "LLMConfig",
    "LLMStats",
    "LLMError",
    "LLMConfigError",
    "LLMBatchError",
    "LLMOfflineMissError",
    "LLMClient",
    "Messages",
    "Reply",
    "Validator",
    "ReplyCache",
    "cache_key",
    "redact_url",
    "Endpoint",
    "parse_base_url",
    "needs_endpoint",
]

logger = logging.getLogger(__name__)
#: openai's HTTP stack (httpx, or httpx2 in newer openai releases) and its transport.
_HTTP_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2")
# httpx logs one INFO line per request, URL included; keep its warnings, drop that chatter (unless configured).
for _name in _HTTP_MODULES:
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

ENV_BASE_URL = "PERSONADUAL_LLM_BASE_URL"
ENV_MODEL = "PERSONADUAL_LLM_MODEL"
ENV_API_KEY = "PERSONADUAL_LLM_API_KEY"
ENV_CACHE_DIR = "PERSONADUAL_LLM_CACHE_DIR"


def needs_endpoint(what: str, otherwise: str = "") -> str:
    """The one message for work that needs an endpoint and has none: ``"<what> needs an LLM endpoint: set ...
    (or --llm-base-url / --llm-model)[, or <otherwise>]"``."""
    text = f"{what} needs an LLM endpoint: set {ENV_BASE_URL} and {ENV_MODEL} (or --llm-base-url / --llm-model)"
    return f"{text}, or {otherwise}" if otherwise else text


#: Cache directory when neither the config nor ``PERSONADUAL_LLM_CACHE_DIR`` names one.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "verl_personadual" / "llm"
_NO_KEY = "EMPTY"

Messages = Sequence[Mapping[str, str]]
Validator = Callable[[str], None]
_T = TypeVar("_T")

#: Request parameters the client controls itself; passing them as sampling params is an error.
_RESERVED_PARAMS = frozenset({"model", "messages", "n", "stream", "timeout"})
#: Retries of a request whose connection cannot be made at all (refused, unknown host), and their longest wait.
CONNECT_RETRIES = 1
CONNECT_BACKOFF_S = 0.5

#: Query parameters whose value is masked by :func:`redact_url` (a name containing one of these, any case).
_SECRET_PARAM = re.compile(r"key|token|sig|secret|passw|auth|credential|session", re.IGNORECASE)
#: Path segments masked by :func:`redact_url`: the prefixes of common API keys, and long unbroken tokens.
_SECRET_NAME = re.compile(r"[A-Za-z_-]{1,24}")  # a segment that names what follows (/key/<it>, /api_token/<it>)
_KEY_PREFIX = re.compile(r"(sk|pk|rk|hf|gsk|xai|key|api)[-_]", re.IGNORECASE)
_TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_\-.~+]{32,}")
_MASK = "***"


def _secret_segment(segment: str, previous: str) -> bool:
    """A path segment that may be a credential: after a key-like segment (``/key/<it>``), a ``name=value`` with a
    key-like name, a known key prefix (``sk-``, ``hf_``, ...), or a long token (:data:`_TOKEN_SEGMENT`)."""
    name, sep, _ = segment.partition("=")
    return bool(
        (_SECRET_NAME.fullmatch(previous) and _SECRET_PARAM.search(previous))
        or (sep and _SECRET_PARAM.search(name))
        or _KEY_PREFIX.match(segment)
        or _TOKEN_SEGMENT.fullmatch(segment)
    )


def redact_url(url: str) -> str:
    """``url`` with its user-info (``user:password@``), the values of key-like query parameters (``key``,
    ``api_key``, ``token``, ``access_token``, ``sig``, ``X-Amz-Signature``, ..., any case) and the path segments
    that may be credentials (:func:`_secret_segment`) replaced by ``***``; anything else unchanged. Every URL
    written to a manifest, cache, log, report or error message goes through this."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not parseable as a URL: mask the whole value rather than risk writing a secret
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rpartition('@')[2]}"
    segments = parts.path.split("/")
    path = "/".join(
        _MASK if _secret_segment(seg, segments[i - 1] if i else "") else seg for i, seg in enumerate(segments)
    )
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{urllib.parse.quote(k, safe='')}={_MASK if _SECRET_PARAM.search(k) else urllib.parse.quote(v, safe='')}"
            for k, v in pairs
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


@dataclass(frozen=True)
class Endpoint:
    """What the client sends to: ``base_url`` without user-info nor query, the query parameters sent with every
    request (``query``, in their order), and the Bearer key taken from the URL's user-info (None when it has none)."""

    base_url: str
    query: tuple[tuple[str, str], ...]
    url_key: str | None


def parse_base_url(url: str, source: str = "") -> Endpoint:
    """Check an endpoint URL and split it (:class:`Endpoint`). A URL that is not
    ``http(s)://host[:port][/path][?query]``, or whose user-info is ``user:password`` (HTTP Basic auth, which
    OpenAI-compatible servers do not take), is an :class:`LLMConfigError` naming ``source`` (the flag or variable
    the URL came from, when given) and the redacted URL."""
    shown = f"{source} {redact_url(url)!r}".lstrip()
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018  (ValueError on a port that is not a number in 0..65535)
    except ValueError as err:
        raise LLMConfigError(f"{shown}: not a URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url.strip()):
        raise LLMConfigError(
            f"{shown}: not an http(s) URL with a host (expected e.g. http://127.0.0.1:8000/v1 or "
            "https://api.example.com/v1)"
        )
    if parts.fragment:
        raise LLMConfigError(f"{shown}: a URL fragment (#...) is not sent to a server; remove it")
    key = None
    if parts.username is not None or parts.password is not None:
        if parts.password is not None:
            raise LLMConfigError(
                f"{shown}: user:password in the URL is HTTP Basic auth, which OpenAI-compatible servers do "
                f"not take; put the API key in {ENV_API_KEY} (or write the URL as https://KEY@host/...)"
            )
        key = urllib.parse.unquote(parts.username or "") or None
    host = parts.netloc.rpartition("@")[2]
    base = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    query = tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return Endpoint(base, query, key)


class LLMError(UserError, RuntimeError):
    """Base class of this module's errors (user errors: an endpoint, model, cache or reply problem)."""


class LLMConfigError(LLMError):
    """The endpoint or model is not configured."""


class LLMBatchError(LLMError):
    """Some requests of a batch failed after retries or had their reply rejected.

    Attributes:
        failures: input index -> reason, for every failed request.
        results: the reply of every request that succeeded (``None`` where it failed), in input order.
    """

    def __init__(self, failures: dict[int, str], results: list[str | None]):
        self.failures = failures
        self.results = results
        shown = "; ".join(f"#{i}: {msg}" for i, msg in sorted(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} of {len(results)} LLM requests failed: {shown}{more}")


class LLMOfflineMissError(LLMError):
    """An offline (replay-only) client was asked for replies its cache does not hold."""


@dataclass(frozen=True)
class Reply:
    """One completion: the message ``content`` and the reasoning-parser field (None when the server sent none)."""

    content: str
    reasoning: str | None = None


#: Message fields that carry a reasoning model's thinking, by priority (vLLM / DeepSeek, then vLLM >= 0.10 and
#: OpenRouter).
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to send requests. ``api_key`` is excluded from ``repr``; ``cache_dir=None`` disables the
    cache (:meth:`from_env` always sets one). ``offline=True``: replay ``cache_dir`` only (module docstring); then
    ``base_url`` may be empty and ``cache_dir`` is required."""

    base_url: str
    model: str
    api_key: str = field(default=_NO_KEY, repr=False)
    max_concurrency: int = 16
    max_retries: int = 6
    timeout_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    cache_dir: Path | None = None
    offline: bool = False

    def __repr__(self) -> str:
        """The fields but ``api_key``, with ``base_url`` redacted (:func:`redact_url`)."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        shown["base_url"] = redact_url(self.base_url)
        return f"LLMConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        if self.offline and self.cache_dir is None:
            raise LLMConfigError("an offline (replay-only) LLM config needs a cache_dir")
        if not self.base_url and not self.offline:
            raise LLMConfigError(f"no LLM endpoint configured: set {ENV_BASE_URL} (or --llm-base-url)")
        if self.base_url:
            url_key = parse_base_url(self.base_url, "base_url").url_key
            if url_key is not None and self.api_key not in (_NO_KEY, url_key):
                raise LLMConfigError(
                    f"the LLM endpoint URL {redact_url(self.base_url)} holds a key and {ENV_API_KEY} another one; "
                    "keep one of them"
                )
        if not self.model:
            raise LLMConfigError(f"no LLM model configured: set {ENV_MODEL} (or --llm-model)")
        if self.max_concurrency < 1:
            raise LLMConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise LLMConfigError(f"max_retries must be >= 0, got {self.max_retries}")

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> "LLMConfig":
        """Explicit arguments win over the ``PERSONADUAL_LLM_*`` environment variables.

        The cache directory: ``cache_dir``, else ``PERSONADUAL_LLM_CACHE_DIR``, else ``DEFAULT_CACHE_DIR``.
        Raises :class:`LLMConfigError` naming the variable when the endpoint or model is missing, or naming the flag
        or variable of a malformed endpoint URL (:func:`parse_base_url`).
        """
        cache = cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
        if base_url or os.environ.get(ENV_BASE_URL):
            parse_base_url(base_url or os.environ[ENV_BASE_URL], "--llm-base-url" if base_url else ENV_BASE_URL)
        return cls(
            base_url=base_url or os.environ.get(ENV_BASE_URL, ""),
            model=model or os.environ.get(ENV_MODEL, ""),
            api_key=api_key or os.environ.get(ENV_API_KEY) or _NO_KEY,
            cache_dir=Path(cache),
            **kwargs,
        )


@dataclass
class LLMStats:
    """Counters over the client's lifetime."""

    requests: int = 0  # HTTP requests sent (retries included)
    completed: int = 0  # replies received and accepted (not from cache)
    cache_hits: int = 0  # replies served from the on-disk cache
    duplicates: int = 0  # requests identical to an earlier one of the same batch (answered by its one request)
    retries: int = 0  # requests re-sent after 429 / 5xx / timeout / connection error
    rejected: int = 0  # replies the validator rejected
    failed: int = 0  # requests that failed for good

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def cache_key(model: str, messages: Messages, params: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of (model, messages, sampling params): the cache address of one request."""
    material = json.dumps(
        {"model": model, "messages": [dict(m) for m in messages], "params": dict(params)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ReplyCache:
    """One JSON file per key under ``root/<key[:2]>/<key>.json``; writes are atomic; ``root=None``: no cache."""

    def __init__(self, root: Path | None):
        self.root = root

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Reply | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
            reasoning = entry.get("reasoning")
            if not isinstance(entry["reply"], str) or not isinstance(reasoning, (str, type(None))):
                raise TypeError("reply / reasoning are not strings")
            return Reply(entry["reply"], reasoning)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            logger.warning("ignoring unreadable LLM cache entry %s (%s)", path, err)
            return None

    def put(self, key: str, reply: Reply) -> None:
        """Store ``reply`` (``{"reply": content}``, plus ``"reasoning"`` when there is any)."""
        if self.root is None:
            return
        entry: dict[str, str] = {"reply": reply.content}
        if reply.reasoning is not None:
            entry["reasoning"] = reply.reasoning
        atomic_write_text(self._path(key), json.dumps(entry, ensure_ascii=False))

    def keys(self) -> set[str]:
        """Every key with an entry on disk."""
        if self.root is None or not self.root.is_dir():
            return set()
        return {p.stem for p in self.root.glob("*/*.json")}


def _unreachable(err: Exception) -> bool:
    """True when no connection could be made at all (refused, unknown host): not a transient failure."""
    if not isinstance(err, openai.APIConnectionError) or isinstance(err, openai.APITimeoutError):
        return False
    connect_errors = tuple(
        getattr(sys.modules[m], "ConnectError") for m in _HTTP_MODULES if hasattr(sys.modules.get(m), "ConnectError")
    )
    cause: BaseException | None = err.__cause__
    while cause is not None:
        if isinstance(cause, (ConnectionRefusedError, *connect_errors)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _retryable(err: Exception) -> bool:
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


def _describe_error(err: Exception) -> str:
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {str(err.message)[:200]}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from sync code, also when the caller is inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the calling thread
            box["error"] = err

    thread = threading.Thread(target=target, name="llm-client")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class LLMClient:
    """Chat completions with bounded concurrency, retries, an on-disk cache and counters.

    Args:
        config: endpoint, model, key and limits (see :meth:`LLMConfig.from_env`).
        validate: default validation hook; raise ``ValueError`` to reject a reply.
        progress: show a tqdm bar per batch.
    """

    def __init__(self, config: LLMConfig, *, validate: Validator | None = None, progress: bool = True):
        self.config = config
        self.validate = validate
        self.progress = progress
        self.stats = LLMStats()
        self._cache = ReplyCache(config.cache_dir)

    def __repr__(self) -> str:
        return f"LLMClient({self.config!r})"

    def complete(self, messages: Messages, *, validate: Validator | None = None, **params: Any) -> str:
        """One chat completion (see :meth:`complete_many`)."""
        return self.complete_many([messages], validate=validate, desc=None, **params)[0]

    def complete_many(
        self,
        messages_list: Sequence[Messages],
        *,
        validate: Validator | None = None,
        desc: str | None = "LLM",
        **params: Any,
    ) -> list[str]:
        """Reply text (the message content) of each message list, in input order.

        ``params`` are sampling parameters passed to ``chat.completions.create`` (temperature, max_tokens, seed,
        top_p, ...) and are part of the cache key. ``validate`` overrides the client's default hook.
        Raises :class:`LLMBatchError` (after all other requests finished and were cached) if any failed.
        From async code prefer ``await acomplete_many(...)``: called inside a running event loop, this method
        runs the batch on a helper thread and blocks the caller until it is done.
        """
        return _run_sync(self.acomplete_many(messages_list, validate=validate, desc=desc, **params))

    def complete_replies(
        self,
        messages_list: Sequence[Messages],
        *,
        validate: Validator | None = None,
        desc: str | None = "LLM",
        **params: Any,
    ) -> list[Reply]:
        """:meth:`complete_many` with each reply's reasoning field kept (:class:`Reply`); same contract and cache."""
        return _run_sync(self.acomplete_replies(messages_list, validate=validate, desc=desc, **params))

    async def acomplete_many(
        self,
        messages_list: Sequence[Messages],
        *,
        validate: Validator | None = None,
        desc: str | None = "LLM",
        **params: Any,
    ) -> list[str]:
        """Async form of :meth:`complete_many` (same contract)."""
        replies = await self.acomplete_replies(messages_list, validate=validate, desc=desc, **params)
        return [r.content for r in replies]

    async def acomplete_replies(
        self,
        messages_list: Sequence[Messages],
        *,
        validate: Validator | None = None,
        desc: str | None = "LLM",
        **params: Any,
    ) -> list[Reply]:
        """Async form of :meth:`complete_replies` (same contract)."""
        bad = _RESERVED_PARAMS.intersection(params)
        if bad:
            raise ValueError(f"these parameters are set by LLMClient and may not be passed: {sorted(bad)}")
        check = validate or self.validate
        results: list[Reply | None] = [None] * len(messages_list)
        failures: dict[int, str] = {}
        todo: dict[str, list[int]] = {}  # cache key -> indices of identical requests, sent once
        for i, messages in enumerate(messages_list):
            key = cache_key(self.config.model, messages, params)
            if key in todo:
                todo[key].append(i)
                self.stats.duplicates += 1
                continue
            cached = self._cache.get(key)
            if cached is None:
                todo[key] = [i]
            else:
                results[i] = cached
                self.stats.cache_hits += 1
        if todo and self.config.offline:
            missing = sum(len(v) for v in todo.values())
            raise LLMOfflineMissError(
                f"{missing} of {len(messages_list)} requests have no recorded reply in {self.config.cache_dir} "
                f"(model {self.config.model!r}, offline replay: nothing was sent)"
            )
        bar = tqdm(total=len(messages_list), desc=desc, disable=not self.progress or desc is None, unit="req")
        bar.update(len(messages_list) - sum(len(v) for v in todo.values()))
        if todo:
            endpoint = parse_base_url(self.config.base_url)
            client = openai.AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.url_key or self.config.api_key,
                default_query=dict(endpoint.query) or None,
                max_retries=0,
                timeout=self.config.timeout_s,
            )
            sem = asyncio.Semaphore(self.config.max_concurrency)

            async def one(key: str, indices: list[int]) -> None:
                async with sem:
                    try:
                        reply = await self._request(client, messages_list[indices[0]], params)
                        if check is not None:
                            try:
                                check(reply.content)
                            except ValueError as err:
                                self.stats.rejected += 1
                                raise LLMError(
                                    f"reply rejected by validator: {err}; reply: {reply.content[:200]!r}"
                                ) from err
                        self._cache.put(key, reply)
                        for i in indices:
                            results[i] = reply
                        self.stats.completed += 1
                    except (LLMError, openai.OpenAIError) as err:
                        self.stats.failed += 1
                        for i in indices:
                            failures[i] = str(err) if isinstance(err, LLMError) else _describe_error(err)
                    finally:
                        bar.update(len(indices))

            try:
                await asyncio.gather(*(one(key, indices) for key, indices in todo.items()))
            finally:
                await client.close()
        bar.close()
        if failures:
            raise LLMBatchError(failures, [None if r is None else r.content for r in results])
        return [r for r in results if r is not None]

    async def _request(self, client: openai.AsyncOpenAI, messages: Messages, params: Mapping[str, Any]) -> Reply:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                resp = await client.chat.completions.create(
                    model=self.config.model, messages=[dict(m) for m in messages], **params
                )
            except openai.OpenAIError as err:
                unreachable = _unreachable(err)
                retries = min(self.config.max_retries, CONNECT_RETRIES) if unreachable else self.config.max_retries
                if unreachable and attempt >= retries:
                    raise LLMError(
                        f"cannot connect to the LLM endpoint {redact_url(self.config.base_url)} "
                        f"({_describe_error(err)}; {attempt + 1} attempt{'s' if attempt else ''})"
                    ) from err
                if not _retryable(err) or attempt >= retries:
                    raise
                delay = self._backoff(attempt, err)
                if unreachable:
                    delay = min(delay, CONNECT_BACKOFF_S)
                logger.warning(
                    "LLM request failed (%s); retry %d/%d in %.2fs",
                    _describe_error(err),
                    attempt + 1,
                    retries,
                    delay,
                )
                self.stats.retries += 1
                attempt += 1
                await asyncio.sleep(delay)
                continue
            return self._reply(resp)

    @staticmethod
    def _reply(resp: Any) -> Reply:
        choices = getattr(resp, "choices", None)
        if not choices:
            raise LLMError(f"malformed completion: no choices in {str(resp)[:200]!r}")
        message = choices[0].message
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            raise LLMError(f"malformed completion: message content is {type(content).__name__}, not str")
        reasoning = next(
            (r for r in (getattr(message, name, None) for name in REASONING_FIELDS) if isinstance(r, str) and r),
            None,
        )
        return Reply(content, reasoning)

    def _backoff(self, attempt: int, err: Exception) -> float:
        delay = self.config.backoff_base_s * (2**attempt) * (1 + random.random() / 2)
        if isinstance(err, openai.APIStatusError):
            retry_after = err.response.headers.get("retry-after")
            try:
                delay = max(delay, float(retry_after)) if retry_after else delay
            except ValueError:
                pass
        return min(delay, self.config.backoff_max_s)
