"""The optional LLM judge, with a scripted in-test client implementing the ``CompletionClient`` protocol."""

from __future__ import annotations

import pytest

from verl_personadual.core.prompts import build_judge_prompt, format_answer
from verl_personadual.core.rewards import LLMJudge, compute_score


class ScriptedClient:
    """Answers every conversation with the next scripted reply; records what it was asked."""

    def __init__(self, *replies: str, fail: bool = False) -> None:
        self.replies = list(replies)
        self.fail = fail
        self.requests: list[list[dict[str, str]]] = []

    def complete_many(self, requests, **params):
        assert params == {"temperature": 0.0}
        self.requests.extend(requests)
        if self.fail:
            raise ConnectionError("endpoint down")
        return [self.replies.pop(0) for _ in requests]


YES = 'The candidate names the same person.\n{"answer": "yes"}'
NO = 'Different person.\n{"answer": "no"}'
ROW = dict(data_source="flan", ground_truth="Barack Obama", extra_info={"question": "Who was president in 2010?"})


def test_judge_upgrades_a_rule_miss_and_sees_question_reference_candidate() -> None:
    client = ScriptedClient(YES)
    out = compute_score(solution_str=format_answer("Obama, the 44th president"), judge=LLMJudge(client), **ROW)
    assert (out["score"], out["correct"], out["pred"]) == (1.0, 1.0, "obama 44th president")
    assert client.requests == [
        build_judge_prompt("Who was president in 2010?", "Barack Obama", "Obama, the 44th president")
    ]


@pytest.mark.parametrize(
    ("client", "score"),
    [
        (ScriptedClient(NO), 0.1),
        (ScriptedClient("I cannot tell."), 0.1),
        (ScriptedClient(fail=True), 0.1),
    ],
)
def test_judge_no_unreadable_or_failing_keeps_the_rule_verdict(client, score) -> None:
    out = compute_score(solution_str=format_answer("Obama, the 44th president"), judge=LLMJudge(client), **ROW)
    assert (out["score"], out["correct"]) == (score, 0.0)
    assert len(client.requests) == 1


def test_judge_is_not_asked_when_rules_match_or_family_is_not_judged() -> None:
    client = ScriptedClient()
    judge = LLMJudge(client)
    assert compute_score(solution_str=format_answer("Barack Obama"), judge=judge, **ROW)["score"] == 1.0
    assert compute_score("ultramedical", format_answer("A"), "B", {}, judge=judge)["score"] == 0.1
    assert compute_score(solution_str="", judge=judge, **ROW)["score"] == 0.0
    yes_no = LLMJudge(client, families=["yes_no_maybe"])
    assert compute_score("pubmedqa", format_answer("B"), "yes", {}, judge=yes_no)["score"] == 0.1  # not yes/no/maybe
    hedge = format_answer("Barack Obama or Joe Biden")
    assert compute_score(solution_str=hedge, judge=judge, **ROW)["score"] == 0.1  # a hedge is no answer
    assert client.requests == []


def test_judge_many_keeps_order_and_shows_alias_lists() -> None:
    client = ScriptedClient(YES, NO, '{"answer": "Yes."}')
    judge = LLMJudge(client, families=["open_qa", "free_text"])
    items = [("q1", ["Jupiter", "Planet Jupiter"], "the gas giant"), ("q2", "Paris", "Lyon"), ("q3", "x", "x")]
    assert judge.judge_many(items) == [True, False, True]
    assert "Jupiter | Planet Jupiter" in client.requests[0][0]["content"]
    assert judge.judge_many([]) == []


def test_judge_reply_count_mismatch_gives_unknown() -> None:
    class Short(ScriptedClient):
        def complete_many(self, requests, **params):
            return [YES]

    assert LLMJudge(Short()).judge_many([("q", "a", "b"), ("q", "a", "c")]) == [None, None]


@pytest.fixture
def judge_server(monkeypatch, tmp_path):
    """The project's local OpenAI-protocol test server, judging "yes" when the candidate mentions Obama."""
    from openai_server import OpenAITestServer

    from verl_personadual.core.rewards.judge import default_judge
    from verl_personadual.utils import llm

    def reply(body):
        prompt = body["messages"][-1]["content"]
        candidate = prompt.split("Candidate answer:\n", 1)[1]
        return format_answer("yes" if "Obama" in candidate.split("\n\n")[0] else "no")

    with OpenAITestServer(reply=reply) as srv:
        monkeypatch.setenv(llm.ENV_BASE_URL, srv.base_url)
        monkeypatch.setenv(llm.ENV_MODEL, "judge-model")
        monkeypatch.setenv(llm.ENV_CACHE_DIR, str(tmp_path / "cache"))
        default_judge.cache_clear()
        yield srv
        default_judge.cache_clear()


def test_llm_judge_from_reward_kwargs_through_the_project_client(judge_server) -> None:
    kw = dict(ROW, llm_judge=True, judge_families=["free_text"])
    out = compute_score(solution_str=format_answer("Obama, the 44th president"), **kw)
    assert (out["score"], out["correct"]) == (1.0, 1.0)
    assert compute_score(solution_str=format_answer("George Bush"), **kw)["score"] == 0.1
    assert judge_server.requests == 2
    assert judge_server.bodies[0]["temperature"] == 0.0 and judge_server.bodies[0]["model"] == "judge-model"
    again = compute_score(solution_str=format_answer("Obama, the 44th president"), **kw)
    assert again["score"] == 1.0 and judge_server.requests == 2  # served from the client's cache


def test_unreadable_judge_reply_is_rejected_by_the_client_hook() -> None:
    with pytest.raises(ValueError, match="no yes/no verdict"):
        LLMJudge.check_reply("I think so")
    LLMJudge.check_reply('{"answer": "no"}')
