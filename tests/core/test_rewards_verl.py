"""The reward called the way verl 0.9.1 calls it (CPU, no Ray): ``RewardLoopWorker`` (the class verl wraps in
``ray.remote``) loads ``pkg://verl_personadual.core.rewards`` through ``load_reward_manager`` and runs the naive
reward manager on a DataProto built like the agent loop's ``_compute_score`` builds it; the scores are
assembled into ``rm_scores`` by verl and the validation metrics computed by verl's trainer code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.reward import resolve_reward_manager_cls
from verl.trainer.ppo.v1.trainer_base import PPOTrainer

from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.core.names import MODE_FIELD, REWARD_FN_NAME, REWARD_FN_PATH
from verl_personadual.core.prompts import build_prompt, format_answer
from verl_personadual.core.rewards import RESULT_KEYS

# (data_source, gold, extra_info, mode of the forced prefix, response text after the prefix, expected score)
SAMPLES = [
    ("ultramedical", "B", {"persona_setting": "aligned"}, Mode.GENERAL, "Vitamin C.\n" + format_answer("B"), 1.0),
    ("ultramedical", "B", {"persona_setting": "aligned"}, Mode.PERSONALIZED, "As a nurse: " + format_answer("A"), 0.1),
    ("ultramedical", "B", {"persona_setting": "none"}, Mode.GENERAL, "So, the answer is B.", 0.9),
    ("ultramedical", "B", {"persona_setting": "none"}, Mode.PERSONALIZED, "I am not sure.\nMaybe.\n", 0.0),
    ("alignx", "A", {"persona_setting": "aligned"}, Mode.PERSONALIZED, format_answer("A"), 1.0),
    ("alignx", "A", {"persona_setting": "aligned"}, Mode.GENERAL, format_answer("B"), 0.1),
]


def _config(tokenizer_dir):
    return OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(tokenizer_dir), "tokenizer_path": str(tokenizer_dir)}},
            "reward": {
                "num_workers": 1,
                "custom_reward_function": {
                    "path": REWARD_FN_PATH,
                    "name": REWARD_FN_NAME,
                    "reward_kwargs": {"correct_weight": 0.9, "format_weight": 0.1},
                },
                "reward_manager": {"source": "register", "name": "naive", "module": {"path": None, "name": "x"}},
                "reward_model": {"enable": False},
                "sandbox_fusion": None,
            },
        }
    )


def _batch(tokenizer) -> DataProto:
    """Left-padded prompts, right-padded responses starting with the mode token (as the forced agent loop
    writes them), plus the non-tensor fields the agent loop passes: dataset columns and its extra fields."""
    prefixes = resolve_prefixes(tokenizer, require_single_token=True)
    prompts, responses = [], []
    for source, _, _, mode, text, _ in SAMPLES:
        msgs = build_prompt("Which vitamin deficiency causes scurvy?", "multiple_choice", "a nurse")
        text_prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        prompts.append(tokenizer.encode(text_prompt, add_special_tokens=False))
        responses.append(list(prefixes.ids[mode]) + tokenizer.encode(text, add_special_tokens=False))
    p_len, r_len, pad = max(map(len, prompts)), max(map(len, responses)), tokenizer.pad_token_id
    prompt_t = torch.tensor([[pad] * (p_len - len(p)) + list(p) for p in prompts])
    resp_t = torch.tensor([r + [pad] * (r_len - len(r)) for r in responses])
    mask = torch.tensor(
        [
            [0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
            for p, r in zip(prompts, responses)
        ]
    )
    n = len(SAMPLES)
    batch = TensorDict(
        {
            "prompts": prompt_t,
            "responses": resp_t,
            "attention_mask": mask,
            "input_ids": torch.cat([prompt_t, resp_t], 1),
        },
        batch_size=n,
    )
    non_tensor = {
        "data_source": np.array([s[0] for s in SAMPLES], dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": s[1]} for s in SAMPLES], dtype=object),
        "extra_info": np.array([dict(s[2], task_family=None) for s in SAMPLES], dtype=object),
        "tool_extra_fields": np.array([{MODE_FIELD: s[3].name.lower()} for s in SAMPLES], dtype=object),
        "__num_turns__": np.array([2] * n),
    }
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


@pytest.fixture(scope="module")
def outputs(tokenizer_dir, tokenizer):
    worker = RewardLoopWorker(_config(tokenizer_dir))
    data = _batch(tokenizer)
    # verl's reward manager binds the event loop current at construction (as in its Ray actor): run on it.
    return data, worker.reward_manager.loop.run_until_complete(worker.compute_score_batch(data))


def test_scores_through_verl_reward_manager(outputs) -> None:
    data, outs = outputs
    assert [o["reward_score"] for o in outs] == pytest.approx([s[5] for s in SAMPLES])
    cls = resolve_reward_manager_cls(_config("unused"))
    rm = cls.assemble_rm_scores(data, [o["reward_score"] for o in outs])
    last = data.batch["attention_mask"][:, data.batch["prompts"].size(1) :].sum(1) - 1
    assert rm.sum(1).tolist() == pytest.approx([s[5] for s in SAMPLES])
    assert rm[torch.arange(len(SAMPLES)), last].tolist() == pytest.approx([s[5] for s in SAMPLES])


def test_special_mode_tokens_are_stripped_and_mode_read_from_extra_fields(outputs) -> None:
    _, outs = outputs
    infos = [o["reward_extra_info"] for o in outs]
    assert all(tuple(info) == RESULT_KEYS for info in infos)
    assert [info["mode"] for info in infos] == [float(s[3]) for s in SAMPLES]
    assert [info["pred"] for info in infos] == ["B", "A", "B", "", "A", "B"]
    assert [info["format_ok"] for info in infos] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert [info["acc_general"] for info in infos] == [1.0, None, 1.0, None, None, 0.0]
    assert [info["acc_persona_aligned"] for info in infos] == [1.0, 0.0, None, None, 1.0, 0.0]


def test_validation_metric_keys_from_verl(outputs) -> None:
    data, outs = outputs
    infos = [o["reward_extra_info"] for o in outs]
    table = {k: [info[k] for info in infos] for k in infos[0]}
    table["reward"] = [o["reward_score"] for o in outs]
    uids = ["q_med", "q_med", "q_med2", "q_med2", "q_ax", "q_ax"]
    metrics = PPOTrainer._val_metrics_update(None, list(data.non_tensor_batch["data_source"]), uids, table, [2] * 6)
    assert metrics["val-core/ultramedical/acc/mean@2"] == pytest.approx(0.5)
    assert metrics["val-aux/ultramedical/acc_general/mean@1"] == pytest.approx(1.0)
    assert metrics["val-aux/ultramedical/acc_personalized/mean@1"] == pytest.approx(0.0)
    assert metrics["val-aux/ultramedical/personalized/mean@2"] == pytest.approx(0.5)
    assert metrics["val-aux/ultramedical/persona_setting/mean@2"] == pytest.approx(1.0)
    assert metrics["val-aux/alignx/acc_persona_aligned/mean@2"] == pytest.approx(0.5)
    assert metrics["val-aux/alignx/format_ok/mean@2"] == pytest.approx(1.0)
    assert metrics["val-aux/ultramedical/reward/mean@2"] == pytest.approx(0.5)
    assert not any("/pred/" in k for k in metrics)
    numeric = set(RESULT_KEYS) - {"pred"} | {"reward"}
    never_set = {"ultramedical": {"acc_persona_unaligned"}, "alignx": {"acc_persona_unaligned", "acc_persona_none"}}
    for source, empty in never_set.items():
        seen = {k.split("/")[2] for k in metrics if k.startswith(f"val-aux/{source}/")}
        assert seen == numeric - empty


def test_extra_info_survives_verl_tensordict_conversion(outputs) -> None:
    """``RewardLoopManager.compute_rm_score`` stacks each key with ``np.array`` and writes it to TransferQueue
    through ``tu.get_tensordict``; the None entries of the per-mode keys must pass."""
    from verl.utils import tensordict_utils as tu

    _, outs = outputs
    infos = [o["reward_extra_info"] for o in outs]
    td = tu.get_tensordict({k: np.array([info[k] for info in infos]) for k in infos[0]})
    assert list(td["acc_general"]) == [1.0, None, 1.0, None, None, 0.0]
    assert list(td["pred"]) == ["B", "A", "B", "", "A", "B"]
