"""The recorded placeholder replies shipped for offline `--samples` runs: up to date with the sample files and prompt
templates, keyed as LLMClient keys requests, and replies as documented."""

from __future__ import annotations

import json

from verl_personadual import sample_replies
from verl_personadual.llm import Reply, ReplyCache
from verl_personadual.modes import Mode
from verl_personadual.prompts import DataSource


def test_shipped_cache_is_exactly_the_current_recording():
    """Fails after a prompt template or a sample file changed: re-record with `python -m
    verl_personadual.sample_replies`."""
    assert sample_replies.stale_keys() == []
    assert len(ReplyCache(sample_replies.CACHE_DIR).keys()) == 40 + 20  # build_sft --samples requests, eval personas
    assert sample_replies.main(["--check"]) == 0


def test_check_reports_a_stale_cache(tmp_path, capsys):
    assert sample_replies.main(["--root", str(tmp_path / "c"), "--check"]) == 1
    assert capsys.readouterr().err == (
        f"{tmp_path / 'c'}: 60 recorded replies are stale; run `python -m verl_personadual.sample_replies`\n")
    assert sample_replies.main(["--root", str(tmp_path / "c")]) == 0
    assert sample_replies.stale_keys(tmp_path / "c") == []
    ReplyCache(tmp_path / "c").put("0" * 64, Reply("left over"))
    assert sample_replies.stale_keys(tmp_path / "c") == ["0" * 64]


def row(family: str, gold: str, setting: str, choices: list[str] | None = None) -> dict:
    return {"reward_model": {"ground_truth": gold},
            "extra_info": {"source_id": "x:1", "task_family": family, "persona_setting": setting, "choices": choices or []}}


def test_expert_reply_is_a_labelled_placeholder_wrong_only_in_general_mode_for_aligned_items():
    head = "Placeholder reasoning recorded for the shipped samples (not written by an expert model)"
    assert sample_replies.expert_reply(row("multiple_choice", "C", "aligned"), Mode.PERSONALIZED) == (
        f'{head}: personalized mode, item x:1.\n{{"answer": "C"}}')
    assert sample_replies.expert_reply(row("multiple_choice", "C", "aligned"), Mode.GENERAL) == (
        f'{head}: general mode, item x:1.\n{{"answer": "A"}}')
    assert sample_replies.expert_reply(row("multiple_choice", "A", "aligned"), Mode.GENERAL).endswith('"B"}')
    assert sample_replies.expert_reply(row("multiple_choice", "C", "unaligned"), Mode.GENERAL).endswith('"C"}')
    assert sample_replies.expert_reply(row("option_text", "yes", "aligned", ["no", "yes"]), Mode.GENERAL).endswith(
        '"no"}')
    assert sample_replies.expert_reply(row("math", "54", "aligned"), Mode.GENERAL).endswith('"-1"}')
    assert sample_replies.expert_reply(row("free_text", "Canberra", "aligned"), Mode.GENERAL).endswith(
        '"I do not know"}')


def test_eval_personas_are_recorded_per_objective_benchmark():
    replies = {json.loads(r.content)["persona"] for k in ReplyCache(sample_replies.CACHE_DIR).keys()
               if (r := ReplyCache(sample_replies.CACHE_DIR).get(k)) and r.content.startswith("{")}
    assert replies == set(sample_replies.EVAL_PERSONAS.values())
    assert set(sample_replies.EVAL_PERSONAS) == {DataSource.MMLU_PRO, DataSource.SUPERGPQA, DataSource.TRIVIAQA,
                                                 DataSource.PUBMEDQA, DataSource.MATH500}
    config = sample_replies.replay_config()
    assert config.offline and config.model == sample_replies.REPLAY_MODEL and sample_replies.is_replay(config)
