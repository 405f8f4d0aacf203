"""build_sft output through verl 0.9.1's real MultiTurnSFTDataset: exact input ids and loss mask per row.

The parquet is written by the real builder (shipped samples, expert = local OpenAI-protocol test server); the
tokenizer is the locally built one whose mode prefixes are dedicated special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from openai_server import OpenAITestServer
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

from verl_personadual.apps import build_sft
from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.core.prompts import format_answer
from verl_personadual.core.rewards import compute_score

GENERATION_PROMPT = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>\n"


def expert(body: dict) -> str:
    """Letter "A" for lettered items, "yes" otherwise: right for some items, wrong for others."""
    content = body["messages"][0]["content"]
    answer = "A" if "the letter of" in content else "yes"
    return f"Reasoning in {'personalized' if 'personalized mode' in content else 'general'} mode.\n" + format_answer(
        answer
    )


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft")
    with OpenAITestServer(reply=expert) as srv:
        code = build_sft.main(
            [
                "--samples",
                "--out",
                str(out),
                "--llm-base-url",
                srv.base_url,
                "--llm-model",
                "m",
                "--llm-cache-dir",
                str(out / "cache"),
                "--no-progress",
            ]
        )
    assert code == 0
    return out


@pytest.mark.parametrize("split", ["train", "validation"])
def test_loss_mask_covers_mode_token_and_answer_not_prompt(sft_dir, tokenizer, split):
    path = sft_dir / f"{split}.parquet"
    rows = pq.read_table(path).to_pylist()
    assert {r["extra_info"]["mode"] for r in rows} == {"general", "personalized"}
    ds = MultiTurnSFTDataset(
        [str(path)],
        tokenizer,
        OmegaConf.create(
            {"messages_key": "messages", "pad_mode": "no_padding", "max_length": 8192, "truncation": "error"}
        ),
    )
    assert len(ds) == len(rows)
    prefixes = resolve_prefixes(tokenizer, require_single_token=True)
    mode_ids = {m: prefixes.ids[m][0] for m in Mode}
    for i, row in enumerate(rows):
        user, assistant = row["messages"]
        mode = Mode.parse(row["extra_info"]["mode"])
        prompt_ids = tokenizer.encode(
            f"<|im_start|>user\n{user['content']}{END_OF_TURN}{GENERATION_PROMPT}", add_special_tokens=False
        )
        target_ids = tokenizer.encode(assistant["content"] + END_OF_TURN, add_special_tokens=False)
        item = ds[i]
        assert item["input_ids"].tolist() == prompt_ids + target_ids, i
        assert item["loss_mask"].tolist() == [0] * len(prompt_ids) + [1] * len(target_ids), i
        # The first trained id is this row's mode token; neither mode token occurs in the prompt.
        assert target_ids[0] == mode_ids[mode] and target_ids.count(mode_ids[mode]) == 1
        assert not set(mode_ids.values()) & set(prompt_ids)
        # The trained ids end with the answer line and the end of turn.
        answer_line = assistant["content"].rsplit("\n", 1)[1]
        assert answer_line == format_answer(json.loads(answer_line)["answer"])
        answer_ids = tokenizer.encode(answer_line + END_OF_TURN, add_special_tokens=False)
        assert target_ids[-len(answer_ids) :] == answer_ids
        # As verl decodes a response (special tokens, so the prefix, stripped), the reward reads the answer and
        # gives the correctness the builder recorded, with full format marks.
        response = tokenizer.decode(target_ids, skip_special_tokens=True)
        assert not response.startswith("[")
        result = compute_score(row["data_source"], response, row["extra_info"]["ground_truth"], row["extra_info"])
        assert result["format_ok"] == 1.0
        kept_correct = row["extra_info"][f"{mode.name.lower()}_correct"]
        assert result["correct"] == float(kept_correct)
