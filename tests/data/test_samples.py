"""The recorded placeholder replies shipped for offline `--samples` runs: up to date with the sample files and prompt
templates, keyed as LLMClient keys requests, and replies as documented."""

from __future__ import annotations

import json

from verl_personadual.apps import record_samples
from verl_personadual.core.modes import Mode
from verl_personadual.core.prompts import DataSource
from verl_personadual.data import samples
from verl_personadual.utils.llm import Reply, ReplyCache


def test_shipped_cache_is_exactly_the_current_recording():
    """Fails after a prompt template or a sample file changed: re-record with `python -m
    verl_personadual.apps.record_samples`."""
    assert record_samples.stale_keys() == []
    assert len(ReplyCache(samples.CACHE_DIR).keys()) == 40 + 20  # build_sft --samples requests, eval personas
    assert record_samples.main(["--check"]) == 0


def test_check_reports_a_stale_cache(tmp_path, capsys):
    assert record_samples.main(["--root", str(tmp_path / "c"), "--check"]) == 1
    assert capsys.readouterr().err == (
        f"{tmp_path / 'c'}: 60 recorded replies are stale; run `python -m verl_personadual.apps.record_samples`\n"
    )
    assert record_samples.main(["--root", str(tmp_path / "c")]) == 0
    assert record_samples.stale_keys(tmp_path / "c") == []
    ReplyCache(tmp_path / "c").put("0" * 64, Reply("left over"))
    assert record_samples.stale_keys(tmp_path / "c") == ["0" * 64]


def row(family: str, gold: str, setting: str, choices: list[str] | None = None) -> dict:
    return {
        "reward_model": {"ground_truth": gold},
        "extra_info": {"source_id": "x:1", "task_family": family, "persona_setting": setting, "choices": choices or []},
    }


def test_expert_reply_is_a_labelled_placeholder_wrong_only_in_general_mode_for_aligned_items():
    head = "Placeholder reasoning recorded for the shipped samples (not written by an expert model)"
    assert samples.expert_reply(row("multiple_choice", "C", "aligned"), Mode.PERSONALIZED) == (
        f'{head}: personalized mode, item x:1.\n{{"answer": "C"}}'
    )
    assert samples.expert_reply(row("multiple_choice", "C", "aligned"), Mode.GENERAL) == (
        f'{head}: general mode, item x:1.\n{{"answer": "A"}}'
    )
    assert samples.expert_reply(row("multiple_choice", "A", "aligned"), Mode.GENERAL).endswith('"B"}')
    assert samples.expert_reply(row("multiple_choice", "C", "unaligned"), Mode.GENERAL).endswith('"C"}')
    assert samples.expert_reply(row("option_text", "yes", "aligned", ["no", "yes"]), Mode.GENERAL).endswith('"no"}')
    assert samples.expert_reply(row("math", "54", "aligned"), Mode.GENERAL).endswith('"-1"}')
    assert samples.expert_reply(row("free_text", "Canberra", "aligned"), Mode.GENERAL).endswith('"I do not know"}')


def test_eval_personas_are_recorded_per_objective_benchmark():
    replies = {
        json.loads(r.content)["persona"]
        for k in ReplyCache(samples.CACHE_DIR).keys()
        if (r := ReplyCache(samples.CACHE_DIR).get(k)) and r.content.startswith("{")
    }
    assert replies == set(samples.eval_personas().values())
    assert set(samples.eval_personas()) == {
        DataSource.MMLU_PRO,
        DataSource.SUPERGPQA,
        DataSource.TRIVIAQA,
        DataSource.PUBMEDQA,
        DataSource.MATH500,
    }
    config = samples.replay_config()
    assert config.offline and config.model == samples.REPLAY_MODEL and samples.is_replay(config)
