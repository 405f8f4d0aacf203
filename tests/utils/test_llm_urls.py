"""Endpoint URLs (issue 33, item 7): checked when parsed (scheme, host), a key in the user-info sent as the Bearer
key (user:password refused with the fix), query parameters sent intact, and every printed URL redacted, path
included. What the local OpenAI-protocol server received (path + query, Authorization header) is the evidence."""

from __future__ import annotations

import pytest
from openai_server import OpenAITestServer

from verl_personadual.apps import build_rl
from verl_personadual.utils.llm import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    LLMBatchError,
    LLMClient,
    LLMConfig,
    LLMConfigError,
    redact_url,
)

KEY = "sk-url-key-5e2b"
OTHER = "sk-env-key-91aa"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)


def _ask(base_url: str, tmp_path, **kw) -> str:
    cfg = LLMConfig(base_url=base_url, model="m", cache_dir=tmp_path / "cache", max_retries=0, **kw)
    return LLMClient(cfg, progress=False).complete(MESSAGES)


def test_a_key_in_the_user_info_is_sent_as_the_bearer_key(tmp_path):
    with OpenAITestServer() as srv:
        url = srv.base_url.replace("http://", f"http://{KEY}@")
        assert _ask(url, tmp_path) == "hi"
        assert _ask(url, tmp_path / "again", api_key=KEY) == "hi"  # the same key given twice is fine
        assert srv.received == [("/v1/chat/completions", f"Bearer {KEY}")] * 2


def test_query_parameters_are_sent_with_every_request_intact(tmp_path):
    with OpenAITestServer() as srv:
        assert _ask(f"{srv.base_url}?api-version=2024-10-21&key={KEY}&empty=", tmp_path, api_key=OTHER) == "hi"
        assert srv.received == [(f"/v1/chat/completions?api-version=2024-10-21&key={KEY}&empty=", f"Bearer {OTHER}")]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "'not a url': not an http(s) URL with a host"),
        ("ftp://host/v1", "'ftp://host/v1': not an http(s) URL with a host"),
        ("http:///v1", "'http:///v1': not an http(s) URL with a host"),
        ("127.0.0.1:8000/v1", "'127.0.0.1:8000/v1': not an http(s) URL with a host"),
        ("http://host:99999/v1", "'http://host:99999/v1': not a URL (Port out of range 0-65535)"),
        ("http://host/v1#x", "'http://host/v1#x': a URL fragment (#...) is not sent to a server; remove it"),
        (
            f"http://user:{KEY}@host/v1",
            "'http://***@host/v1': user:password in the URL is HTTP Basic auth, which OpenAI-compatible servers do "
            f"not take; put the API key in {ENV_API_KEY} (or write the URL as https://KEY@host/...)",
        ),
    ],
)
def test_a_bad_url_is_refused_when_parsed(url, says, tmp_path, capsys):
    status = build_rl.main(
        ["--samples", "--aligned-personas", "llm", "--llm-base-url", url, "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert (status, err.count("\n")) == (2, 1), err
    assert err.startswith(f"error: --llm-base-url: {says}")
    assert err.endswith(" (see python -m verl_personadual.apps.build_rl --help)\n")
    assert KEY not in err and list(tmp_path.iterdir()) == []


def test_a_bad_url_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, "not a url")
    with pytest.raises(LLMConfigError) as err:
        LLMConfig.from_env(model="m")
    assert str(err.value).startswith(f"{ENV_BASE_URL} 'not a url': not an http(s) URL with a host")


def test_two_different_keys_are_refused():
    with pytest.raises(LLMConfigError) as err:
        LLMConfig(base_url=f"http://{KEY}@host/v1", model="m", api_key=OTHER)
    assert str(err.value) == (
        f"the LLM endpoint URL http://***@host/v1 holds a key and {ENV_API_KEY} another one; keep one of them"
    )
    assert KEY not in str(err.value) and OTHER not in str(err.value)


def test_redact_url_masks_keys_in_the_path():
    token = "a" * 20 + "0123456789AB"  # 32 characters
    assert redact_url(f"https://host/v1/{KEY}/chat") == "https://host/v1/***/chat"
    assert redact_url("https://host/key/abc/v1") == "https://host/key/***/v1"
    assert redact_url("https://host/v1;api_key=abc") == "https://host/***"
    assert redact_url(f"https://host/{token}/v1") == "https://host/***/v1"
    assert redact_url("https://host/openai/deployments/gpt-4o-mini-2024-07-18/v1") == (
        "https://host/openai/deployments/gpt-4o-mini-2024-07-18/v1"
    )


def test_a_key_in_the_path_is_not_printed_when_the_endpoint_is_down(tmp_path, closed_port):
    with pytest.raises(LLMBatchError) as err:
        _ask(f"http://127.0.0.1:{closed_port}/{KEY}/v1", tmp_path)
    assert f"cannot connect to the LLM endpoint http://127.0.0.1:{closed_port}/***/v1 (" in str(err.value)
    assert KEY not in str(err.value)
