"""LLMClient against the local OpenAI-protocol server: cache, retries, validation, concurrency, key hygiene."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from openai_server import OpenAITestServer

from verl_personadual.utils.llm import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_CACHE_DIR,
    ENV_MODEL,
    LLMBatchError,
    LLMClient,
    LLMConfig,
    LLMConfigError,
    cache_key,
    redact_url,
)

SECRET = "sk-test-secret-123"


def msgs(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}"}]


@pytest.fixture
def server():
    with OpenAITestServer() as srv:
        yield srv


def make_client(srv: OpenAITestServer, cache: Path, **kw) -> LLMClient:
    cfg = LLMConfig(
        base_url=srv.base_url,
        model="test-model",
        api_key=SECRET,
        cache_dir=cache,
        backoff_base_s=0.01,
        timeout_s=kw.pop("timeout_s", 5.0),
        **{k: kw.pop(k) for k in list(kw) if k in ("max_concurrency", "max_retries")},
    )
    return LLMClient(cfg, progress=False, **kw)


def test_replies_in_order_and_rerun_sends_nothing(server, tmp_path):
    client = make_client(server, tmp_path / "c")
    out = client.complete_many([msgs(i) for i in range(5)], temperature=0.0, max_tokens=8)
    assert out == [f"question {i}" for i in range(5)]
    assert server.requests == 5
    assert server.bodies[0]["model"] == "test-model"
    assert server.bodies[0]["temperature"] == 0.0 and server.bodies[0]["max_tokens"] == 8
    assert client.stats.as_dict() == {
        "requests": 5,
        "completed": 5,
        "cache_hits": 0,
        "duplicates": 0,
        "retries": 0,
        "rejected": 0,
        "failed": 0,
    }
    again = make_client(server, tmp_path / "c")
    assert again.complete_many([msgs(i) for i in range(5)], temperature=0.0, max_tokens=8) == out
    assert server.requests == 5
    assert again.stats.cache_hits == 5 and again.stats.requests == 0
    # Different sampling params are a different request.
    assert again.complete(msgs(0), temperature=0.5, max_tokens=8) == "question 0"
    assert server.requests == 6


def test_cache_key_is_content_addressed():
    k = cache_key("m", msgs(1), {"temperature": 0.0})
    assert k == cache_key("m", [{"content": "question 1", "role": "user"}], {"temperature": 0.0})
    assert (
        len(
            {
                k,
                cache_key("m2", msgs(1), {"temperature": 0.0}),
                cache_key("m", msgs(2), {"temperature": 0.0}),
                cache_key("m", msgs(1), {"temperature": 0.1}),
            }
        )
        == 4
    )


def test_cache_files_are_complete_json(server, tmp_path):
    client = make_client(server, tmp_path / "c")
    client.complete(msgs(7))
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].name == cache_key("test-model", msgs(7), {}) + ".json"
    assert json.loads(files[0].read_text()) == {"reply": "question 7"}


@pytest.mark.parametrize("failures", [(429, 429), (500, 503), ("timeout",), (429, "timeout", 502)])
def test_transient_failures_are_retried(failures, tmp_path):
    with OpenAITestServer(hang_s=2.5) as srv:
        srv.script(*failures)
        client = make_client(srv, tmp_path / "c", timeout_s=1.0)
        assert client.complete(msgs(1)) == "question 1"
        assert srv.requests == len(failures) + 1
        assert client.stats.retries == len(failures) and client.stats.requests == len(failures) + 1


def test_retries_are_bounded_and_other_errors_fail_at_once(server, tmp_path):
    server.script(500, 500, 500)
    client = make_client(server, tmp_path / "c", max_retries=2)
    with pytest.raises(LLMBatchError, match=r"1 of 1 LLM requests failed: #0: HTTP 500"):
        client.complete(msgs(1))
    assert server.requests == 3
    server.script(400)
    with pytest.raises(LLMBatchError, match="HTTP 400"):
        client.complete(msgs(2))
    assert server.requests == 4  # no retry on 400


def _validate_json_persona(reply: str) -> None:
    if not reply.startswith("{"):
        raise ValueError("expected a JSON object")


def test_garbage_reply_rejected_not_cached_others_kept(tmp_path):
    replies = {"question 0": "{ok}", "question 1": "I cannot help", "question 2": "{fine}"}
    with OpenAITestServer(reply=lambda b: replies[b["messages"][-1]["content"]]) as srv:
        client = make_client(srv, tmp_path / "c", validate=_validate_json_persona)
        with pytest.raises(LLMBatchError) as info:
            client.complete_many([msgs(i) for i in range(3)])
        err = info.value
        assert list(err.failures) == [1]
        assert "reply rejected by validator: expected a JSON object; reply: 'I cannot help'" in err.failures[1]
        assert err.results == ["{ok}", None, "{fine}"]
        assert client.stats.rejected == 1
        # The good replies were cached; the rejected one is asked again.
        replies["question 1"] = "{now good}"
        again = make_client(srv, tmp_path / "c", validate=_validate_json_persona)
        assert again.complete_many([msgs(i) for i in range(3)]) == ["{ok}", "{now good}", "{fine}"]
        assert again.stats.cache_hits == 2 and again.stats.requests == 1


def test_non_json_http_body_is_a_clear_failure(server, tmp_path):
    server.script("garbage")
    client = make_client(server, tmp_path / "c", max_retries=0)
    with pytest.raises(LLMBatchError, match=r"#0: malformed completion: no choices in '<html>not json</html>'$"):
        client.complete(msgs(1))
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_concurrency_is_bounded(tmp_path):
    with OpenAITestServer(latency_s=0.05) as srv:
        client = make_client(srv, tmp_path / "c", max_concurrency=4)
        client.complete_many([msgs(i) for i in range(16)])
        assert srv.max_in_flight == 4


def test_works_inside_a_running_event_loop(server, tmp_path):
    client = make_client(server, tmp_path / "c")

    async def inner() -> list[str]:
        return client.complete_many([msgs(1)])

    assert asyncio.run(inner()) == ["question 1"]


def test_config_from_env_and_key_never_shown(monkeypatch, server, tmp_path, caplog):
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LLMConfigError, match=ENV_BASE_URL):
        LLMConfig.from_env(model="m")
    monkeypatch.setenv(ENV_BASE_URL, server.base_url)
    with pytest.raises(LLMConfigError, match=ENV_MODEL):
        LLMConfig.from_env()
    monkeypatch.setenv(ENV_MODEL, "env-model")
    monkeypatch.setenv(ENV_API_KEY, SECRET)
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "envcache"))
    cfg = LLMConfig.from_env(backoff_base_s=0.01)
    assert (cfg.base_url, cfg.model, cfg.api_key, cfg.cache_dir) == (
        server.base_url,
        "env-model",
        SECRET,
        tmp_path / "envcache",
    )
    assert LLMConfig.from_env(model="explicit").model == "explicit"
    client = LLMClient(cfg, progress=False)
    assert SECRET not in repr(client) and SECRET not in repr(cfg)
    server.script(429)
    with caplog.at_level(logging.DEBUG):
        assert client.complete(msgs(3)) == "question 3"
    assert "retry 1/6" in caplog.text and SECRET not in caplog.text
    assert (tmp_path / "envcache").is_dir()


def test_reserved_params_rejected(server, tmp_path):
    client = make_client(server, tmp_path / "c")
    with pytest.raises(ValueError, match=r"\['n'\]"):
        client.complete(msgs(1), n=2)


def test_server_reply_function_error_is_a_500(tmp_path):
    def boom(body):
        raise RuntimeError("reply function failed")

    with OpenAITestServer(reply=boom) as srv:
        client = make_client(srv, tmp_path / "c", max_retries=1)
        with pytest.raises(LLMBatchError, match=r"#0: HTTP 500: .*reply function failed"):
            client.complete(msgs(1))
        assert srv.requests == 2 and client.stats.retries == 1 and client.stats.failed == 1


def test_identical_requests_in_a_batch_are_sent_once(server, tmp_path):
    client = make_client(server, tmp_path / "c")
    out = client.complete_many([msgs(1), msgs(2), msgs(1), msgs(1)])
    assert out == ["question 1", "question 2", "question 1", "question 1"]
    assert server.requests == 2 and client.stats.duplicates == 2 and client.stats.completed == 2


def test_config_errors_name_the_variable_and_the_flag(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LLMConfigError) as err:
        LLMConfig.from_env(model="m")
    assert str(err.value) == "no LLM endpoint configured: set PERSONADUAL_LLM_BASE_URL (or --llm-base-url)"
    with pytest.raises(LLMConfigError) as err:
        LLMConfig.from_env(base_url="http://127.0.0.1:9/v1")
    assert str(err.value) == "no LLM model configured: set PERSONADUAL_LLM_MODEL (or --llm-model)"


def test_offline_config_replays_the_cache_and_sends_nothing(tmp_path):
    """No server anywhere: hits are answered from the cache; one miss fails the whole batch before any request."""
    from verl_personadual.utils.llm import LLMOfflineMissError, Reply, ReplyCache

    ReplyCache(tmp_path).put(cache_key("rec", msgs(1), {"temperature": 0.0}), Reply("one"))
    ReplyCache(tmp_path).put(cache_key("rec", msgs(2), {"temperature": 0.0}), Reply("two"))
    with pytest.raises(LLMConfigError, match="needs a cache_dir"):
        LLMConfig(base_url="", model="rec", offline=True)
    client = LLMClient(LLMConfig(base_url="", model="rec", cache_dir=tmp_path, offline=True), progress=False)
    assert client.complete_many([msgs(2), msgs(1), msgs(2)], temperature=0.0) == ["two", "one", "two"]
    with pytest.raises(LLMOfflineMissError) as err:
        client.complete_many([msgs(1), msgs(3), msgs(3)], temperature=0.0)
    assert str(err.value) == (
        f"2 of 3 requests have no recorded reply in {tmp_path} (model 'rec', offline replay: nothing was sent)"
    )
    assert client.stats.requests == 0 and client.stats.cache_hits == 3 + 1  # first batch, then msgs(1)
    assert ReplyCache(tmp_path).keys() == {cache_key("rec", msgs(i), {"temperature": 0.0}) for i in (1, 2)}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_is_kept_and_cached(field: str, tmp_path):
    """A reasoning parser's field comes back with the content, is cached with it, and complete_many (content
    only) is unchanged; a reply without the field has reasoning None."""
    from verl_personadual.utils.llm import Reply

    def reply(body):
        q = body["messages"][-1]["content"]
        return {"content": f"answer to {q}", field: f"thinking about {q}"} if q.endswith("1") else f"plain {q}"

    with OpenAITestServer(reply=reply) as srv:
        client = make_client(srv, tmp_path)
        assert client.complete_replies([msgs(1), msgs(2)]) == [
            Reply("answer to question 1", "thinking about question 1"),
            Reply("plain question 2", None),
        ]
        again = make_client(srv, tmp_path)
        assert again.complete_replies([msgs(1)]) == [Reply("answer to question 1", "thinking about question 1")]
        assert again.complete_many([msgs(1), msgs(2)]) == ["answer to question 1", "plain question 2"]
        assert srv.requests == 2 and again.stats.cache_hits == 3
    stored = sorted((json.loads(p.read_text()) for p in tmp_path.glob("*/*.json")), key=lambda e: e["reply"])
    assert stored == [
        {"reply": "answer to question 1", "reasoning": "thinking about question 1"},
        {"reply": "plain question 2"},
    ]


def test_redact_url_masks_user_info_and_key_like_query_parameters():
    assert redact_url("http://user:KEY@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("http://tok@host/v1") == "http://***@host/v1"
    assert redact_url("https://host/v1?api_key=K&model=x&Token=T&SIG=s&X-Amz-Signature=z&access_token=a") == (
        "https://host/v1?api_key=***&model=x&Token=***&SIG=***&X-Amz-Signature=***&access_token=***"
    )
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("") == ""
    cfg = LLMConfig(base_url=f"http://{SECRET}@h/v1?key={SECRET}", model="m", api_key=SECRET)
    assert repr(cfg).startswith("LLMConfig(base_url='http://***@h/v1?key=***', model='m',") and SECRET not in repr(cfg)


def test_connection_refused_is_retried_once_and_names_the_url_and_attempts(tmp_path, closed_port):
    """An endpoint nobody listens on is not transient (429 / 5xx / timeouts are): with the default six retries
    it is tried twice, and the failure names the redacted URL and the attempts."""
    port = closed_port
    cfg = LLMConfig(
        base_url=f"http://{SECRET}@127.0.0.1:{port}/v1",
        model="m",
        api_key=SECRET,
        cache_dir=tmp_path / "c",
        backoff_base_s=0.01,
    )
    assert cfg.max_retries == 6
    client = LLMClient(cfg, progress=False)
    with pytest.raises(LLMBatchError) as err:
        client.complete(msgs(1))
    assert str(err.value) == (
        f"1 of 1 LLM requests failed: #0: cannot connect to the LLM endpoint "
        f"http://***@127.0.0.1:{port}/v1 (APIConnectionError: Connection error.; 2 attempts)"
    )
    assert (client.stats.requests, client.stats.retries, client.stats.failed) == (2, 1, 1)
    no_retry = LLMClient(
        LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", cache_dir=tmp_path / "c", max_retries=0),
        progress=False,
    )
    with pytest.raises(LLMBatchError, match=r"\(APIConnectionError: Connection error\.; 1 attempt\)$"):
        no_retry.complete(msgs(1))
