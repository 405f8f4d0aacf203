"""The trainer glue on verl's real advantage path: rows in TransferQueue, verl's balance padding and
reordering, verl's ``_compute_advantage`` and ``compute_advantage``; hand-computed advantages come out."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_advantage import SINGLE_TOKEN_EXPECTED, SINGLE_TOKEN_ROWS, U
from transfer_queue import KVBatchMeta
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.protocol import DataProto
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

from verl_personadual.core.advantage import row_modes
from verl_personadual.core.config import DualGRPOConfig, TrainerSettings
from verl_personadual.core.modes import Mode, resolve_prefixes
from verl_personadual.core.names import ESTIMATOR
from verl_personadual.core.trainer import (
    PersonaDualSyncTrainer,
    read_step_rows,
    setting_name,
)

ROWS = SINGLE_TOKEN_ROWS[:-1]  # verl appends its own padding rows
EXPECTED = SINGLE_TOKEN_EXPECTED[:-1]
FILLER = 30  # an ordinary token id
SETTING = {"a": "aligned", "b": "unaligned", "c": "none"}  # persona setting of each prompt group
#: [first, last] weight version of each row of ROWS (an async batch: some rows older, some spanning two versions)
POLICY_STEPS = [(i % 3, 2) for i in range(len(ROWS))]
MAX_RESPONSE = 4  # data.max_response_length of the glue trainer: rows of 4 tokens were clipped


def response_ids(mode: int, n: int, prefixes) -> list[int]:
    if mode == U:
        return [FILLER + 1] * n  # no valid prefix
    return list(prefixes.ids[Mode(mode)]) + [FILLER] * (n - 1)


def put_rollouts(tq, prefixes, partition: str) -> KVBatchMeta:
    """Write ROWS to TransferQueue exactly as verl's agent-loop postprocess does (AgentLoopOutput.as_dict())."""
    keys, fields, tags = [], [], []
    run = uuid.uuid4().hex[:6]
    for i, (uid, mode, n, reward) in enumerate(ROWS):
        out = AgentLoopOutput(
            prompt_ids=[5, 6, 7],
            response_ids=response_ids(mode, n, prefixes),
            response_mask=[1] * n,
            response_logprobs=[0.0] * n,
            reward_score=reward,
            metrics=AgentLoopMetrics(),
            extra_fields={},
        )
        field = out.as_dict()
        field.update(uid=f"{uid}{run}", session_id=i, data_source="flan", extra_info={"persona_setting": SETTING[uid]})
        field["input_ids"] = torch.cat([field["prompts"], field["responses"]])
        field["attention_mask"] = torch.ones_like(field["input_ids"])
        field["position_ids"] = torch.arange(field["input_ids"].numel())
        field["old_log_probs"] = torch.zeros(n)  # written by the old-log-prob step before advantages
        fields.append(field)
        keys.append(f"{uid}{run}_{i}_0")
        tags.append(
            {
                "status": "success",
                "prompt_len": 3,
                "response_len": n,
                "seq_len": 3 + n,
                "global_steps": 1,
                # weight versions that generated the row, as verl's replay buffer tags it (async: may lag, span)
                "min_global_steps": POLICY_STEPS[i][0],
                "max_global_steps": POLICY_STEPS[i][1],
            }
        )
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    return KVBatchMeta(partition_id=partition, keys=keys, tags=tags)


def glue_trainer(ppo_config, tokenizer) -> PersonaDualSyncTrainer:
    """The trainer object with only what the advantage step reads (its Ray workers are not needed)."""
    dual_grpo = {"beta": 2.0, "unknown_mode_advantage": "group"}  # the table's prefix-less row: r - group mean
    config = OmegaConf.merge(
        ppo_config,
        {
            "algorithm": {"adv_estimator": ESTIMATOR, "dual_grpo": dual_grpo},
            "data": {"max_response_length": MAX_RESPONSE},
        },
    )
    trainer = object.__new__(PersonaDualSyncTrainer)
    trainer.config = config
    trainer.tokenizer = tokenizer
    trainer.dual_grpo = DualGRPOConfig.from_algorithm(config.algorithm)
    trainer.settings = TrainerSettings.from_trainer(config.trainer)  # what PluginTrainer.__init__ sets
    trainer.mode_prefixes = resolve_prefixes(tokenizer, require_single_token=True)
    return trainer


@pytest.mark.ray
def test_advantage_step_through_transfer_queue(ray_tq, ppo_config, tokenizer, tmp_path):
    tq = ray_tq
    trainer = glue_trainer(ppo_config, tokenizer)
    trainer.settings = TrainerSettings(token_dump_dir=str(tmp_path / "dump"))
    trainer.global_steps, trainer.parameter_sync_step = 3, 1
    batch = put_rollouts(tq, trainer.mode_prefixes, "train")
    real_keys = list(batch.keys)
    batch = upsample_batch_to_divisible_size(batch, 8, tokenizer.eos_token_id)  # 12 rows -> 16
    assert len(batch) == 16
    perm = np.random.default_rng(0).permutation(len(batch)).tolist()
    batch.reorder(perm)

    rows = read_step_rows(batch, trainer.mode_prefixes)
    modes, plen = rows.modes, rows.prefix_len
    metrics: dict = {}
    batch = trainer._compute_advantage(batch, metrics)

    # Mode metrics of the step: padding rows excluded (hand-computed from ROWS).
    assert rows.valid.sum() == 12
    m = "personadual/train/"
    assert metrics[m + "all/all/count"] == 12
    assert metrics[m + "all/all/personalized_rate"] == pytest.approx(7 / 12)
    assert metrics[m + "all/all/unknown_rate"] == pytest.approx(1 / 12)
    assert metrics[m + "all/all/reward_general"] == pytest.approx(0.75)
    assert metrics[m + "all/all/reward_personalized"] == pytest.approx(3.0 / 7)
    assert metrics[m + "all/all/reward_gap"] == pytest.approx(3.0 / 7 - 0.75)
    assert metrics[m + "flan/aligned/personalized_rate"] == pytest.approx(0.6)
    assert metrics[m + "flan/aligned/reward_gap"] == pytest.approx(-0.5)
    assert metrics[m + "flan/unaligned/personalized_rate"] == 1.0
    assert m + "flan/unaligned/reward_general" not in metrics
    assert metrics[m + "all/none/count"] == 4
    # Per-mode lengths (ROWS' lengths: general 3, 4, 4, 1; personalized 2, 4, 1, 2, 3, 4, 2; limit 4)
    assert metrics[m + "all/all/length_general_mean"] == pytest.approx(3.0)
    assert metrics[m + "all/all/length_general_p95"] == pytest.approx(4.0)
    assert metrics[m + "all/all/length_general_clip_rate"] == pytest.approx(0.5)
    assert metrics[m + "all/all/length_personalized_mean"] == pytest.approx(18 / 7)
    assert metrics[m + "all/all/length_personalized_clip_rate"] == pytest.approx(2 / 7)

    got = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"]).to_padded_tensor()
    adv = got["advantages"]
    for row, key in enumerate(batch.keys):
        if key in real_keys:
            expected = torch.tensor(EXPECTED[real_keys.index(key)])
            assert modes[row] == ROWS[real_keys.index(key)][1]
            torch.testing.assert_close(adv[row, :4], expected, rtol=0, atol=1e-6, msg=f"row {key}")
            assert adv[row, 4:].abs().sum() == 0
        else:
            assert key.startswith("pad") and modes[row] == -1 and plen[row] == 0
            assert adv[row].abs().sum() == 0

    # The token dump of the step: each row's own mode and tokens, and the weight versions that generated it.
    dump = [json.loads(line) for line in (tmp_path / "dump" / "3.jsonl").read_text().splitlines()]
    assert [r["key"] for r in dump] == list(batch.keys)
    for r in dump:
        if r["key"] in real_keys:
            i = real_keys.index(r["key"])
            assert (r["mode"], r["padding"], len(r["response_ids"])) == (ROWS[i][1], False, ROWS[i][2])
            assert r["policy_steps"] == list(POLICY_STEPS[i])
            assert r["advantages"] == pytest.approx(EXPECTED[i][: ROWS[i][2]], abs=1e-6)
        else:
            assert r["padding"] and r["mode"] == -1


def test_verl_compute_advantage_uses_the_registered_estimator(tokenizer, ppo_config):
    """verl's own compute_advantage dispatch (ray_trainer.py) reaches dual_grpo through the registry."""
    prefixes = resolve_prefixes(tokenizer)
    rows = SINGLE_TOKEN_ROWS
    length = 4
    responses = torch.full((len(rows), length), tokenizer.pad_token_id)
    mask = torch.zeros(len(rows), length)
    rewards = torch.zeros(len(rows), length)
    for i, (_, mode, n, r) in enumerate(rows):
        if n:
            responses[i, :n] = torch.tensor(response_ids(mode, n, prefixes))
            mask[i, :n] = 1
            rewards[i, n - 1] = r
    data = DataProto.from_dict(
        tensors={"responses": responses, "response_mask": mask, "token_level_rewards": rewards},
        non_tensors={"uid": np.array([u for u, *_ in rows], dtype=object)},
    )
    modes, plen = prefixes.modes_of(responses, mask)
    assert modes.tolist() == [m for _, m, *_ in rows]
    dual_grpo = {"unknown_mode_advantage": "group"}  # the table's prefix-less row: r - group mean
    config = OmegaConf.merge(ppo_config.algorithm, {"adv_estimator": ESTIMATOR, "dual_grpo": dual_grpo})
    with row_modes(modes, plen):
        out = compute_advantage(data, adv_estimator=ESTIMATOR, num_repeat=4, config=config)
    torch.testing.assert_close(out.batch["advantages"], torch.tensor(SINGLE_TOKEN_EXPECTED), rtol=0, atol=1e-6)


def test_validation_metrics_add_mode_rates_from_the_reward_fields(tokenizer, ppo_config):
    """verl's own validation metrics plus personadual/val/* from the reward's mode / persona_setting codes."""
    trainer = glue_trainer(ppo_config, tokenizer)
    infos = {
        "reward": [1.0, 0.0, 0.9, 0.1],
        "acc": [1.0, 0.0, 1.0, 0.0],
        "mode": [1.0, 0.0, -1.0, 1.0],
        "persona_setting": [2.0, 0.0, 1.0, -1.0],
    }
    metrics = trainer._val_metrics_update(
        ["flan", "flan", "mmlu_pro", "org/custom"], ["u1", "u2", "u3", "u4"], infos, []
    )
    assert metrics["val-core/flan/acc/mean@1"] == 0.5  # verl's own metric is still there
    m = "personadual/val/"
    assert metrics[m + "all/all/personalized_rate"] == 0.5
    assert metrics[m + "all/all/unknown_rate"] == 0.25
    assert metrics[m + "all/all/reward_personalized"] == pytest.approx(0.55)
    assert metrics[m + "flan/aligned/personalized_rate"] == 1.0
    assert metrics[m + "flan/none/reward_general"] == 0.0
    assert metrics[m + "mmlu_pro/unaligned/unknown_rate"] == 1.0
    assert metrics[m + "org_custom/unknown/count"] == 1  # foreign rows: sanitised source, unknown setting
    assert not any(k.endswith("reward_gap") for k in metrics if k.startswith(m))


def _val_infos(modes: list[float], settings: list[float], lengths: list[float]) -> dict[str, list[float]]:
    n = len(modes)
    return {
        "reward": [1.0] * n,
        "acc": [1.0] * n,
        "mode": modes,
        "persona_setting": settings,
        "response_length": lengths,
    }


def test_validation_lengths_and_no_collapse_when_the_mode_follows_the_persona(tokenizer, ppo_config, caplog):
    """General without a persona, personalized with an aligned one: what PersonaDual is for, no warning."""
    trainer = glue_trainer(ppo_config, tokenizer)
    trainer.global_steps = 5
    # none: 20 general; aligned: 19 personalized + 1 general. Lengths: general 1, 2, ..., 21; personalized 4 each
    modes = [0.0] * 20 + [1.0] * 19 + [0.0]
    settings = [0.0] * 20 + [2.0] * 20
    lengths = [float(x) for x in range(1, 21)] + [4.0] * 19 + [21.0]
    with caplog.at_level("WARNING", logger="verl_personadual.core.trainer"):
        metrics = trainer._val_metrics_update(
            ["flan"] * 40, [f"u{i}" for i in range(40)], _val_infos(modes, settings, lengths), []
        )
    m = "personadual/val/all/all/"
    assert metrics[m + "mode_collapse"] == 0.0
    assert not [r for r in caplog.records if "mode collapse" in r.getMessage()]
    assert metrics[m + "length_general_mean"] == pytest.approx(11.0)  # 1..21
    assert metrics[m + "length_general_p95"] == pytest.approx(20.0)  # 1 + 0.95 * 20
    assert metrics[m + "length_general_clip_rate"] == pytest.approx(18 / 21)  # >= MAX_RESPONSE (4): 4..21
    assert metrics[m + "length_personalized_mean"] == 4.0
    assert metrics[m + "length_personalized_clip_rate"] == 1.0


def test_validation_collapse_onto_one_mode_warns_naming_the_metric(tokenizer, ppo_config, caplog):
    """19 of 20 rows general in every setting (95 %): collapse; the warning names the metric and what to try."""
    trainer = glue_trainer(ppo_config, tokenizer)
    trainer.global_steps = 5
    modes = ([0.0] * 19 + [1.0]) * 3
    settings = [0.0] * 20 + [1.0] * 20 + [2.0] * 20
    with caplog.at_level("WARNING", logger="verl_personadual.core.trainer"):
        metrics = trainer._val_metrics_update(
            ["flan"] * 60, [f"u{i}" for i in range(60)], _val_infos(modes, settings, [2.0] * 60), []
        )
    assert metrics["personadual/val/all/all/mode_collapse"] == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if "mode collapse" in r.getMessage()]
    assert "general mode" in warning
    # every setting's rate, sorted (validation rows come back in any order)
    rates = ", ".join(f"personadual/val/all/{s}/personalized_rate" for s in ("aligned", "none", "unaligned"))
    assert f"(personadual/val/all/all/mode_collapse; {rates})" in warning
    assert "prefix_kl=mass" in warning and "entropy_coeff=0.001" in warning


def test_setting_name():
    assert [setting_name(v) for v in ("aligned", 0, 1.0, 2, -1, None, "Aligned", 7, 0.5)] == [
        "aligned",
        "none",
        "unaligned",
        "aligned",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]


def _recipe_config(tmp_path, model_dir, **dual_grpo):
    from verl_personadual.apps.recipes import compose as recipes

    overrides = recipes.build_overrides(
        stage="rl",
        backbone="qwen3_0p6b",
        model=str(model_dir),
        train_files=[str(tmp_path / "train.parquet")],
        val_files=[str(tmp_path / "val.parquet")],
        output_dir=str(tmp_path / "ckpt"),
        extra=[f"algorithm.dual_grpo.{k}={v}" for k, v in dual_grpo.items()],
    )
    return recipes.compose("rl", overrides)


def test_constructed_from_the_recipe_it_runs_verls_sync_paths(tmp_path, tiny_model_dir):
    """verl compares trainer_mode with the literal "sync": the glue must end up on the sync replay buffer."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    cfg = _recipe_config(tmp_path, tiny_model_dir, beta=3.0)
    OmegaConf.resolve(cfg)
    assert cfg.trainer.v1.trainer_mode == "persona_dual_sync"
    trainer = TRAINER_REGISTRY[cfg.trainer.v1.trainer_mode](config=cfg)  # what main_ppo's TaskRunnerV1 does
    assert trainer.trainer_mode == "sync"
    assert type(trainer.replay_buffer) is ReplayBuffer and not isinstance(trainer.replay_buffer, ReplayBufferAsync)
    assert trainer.dual_grpo.beta == 3.0
    trainer._init_tokenizer()  # verl's HFModelConfig loads the tokenizer from the model path
    assert trainer.mode_prefixes.ids == resolve_prefixes(trainer.tokenizer).ids
    assert trainer.mode_prefixes.single_token


@pytest.mark.parametrize("mode", ["colocate_async", "separate_async"])
def test_each_async_mode_runs_verls_paths_of_that_mode(tmp_path, tiny_model_dir, mode):
    """One key selects the mode; verl then sees its own mode name: the async replay buffer and the mode's section."""
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo.v1 import PPOTrainerColocateAsync, PPOTrainerSeparateAsync
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_personadual.core.names import TRAINER_MODES
    from verl_personadual.core.trainer import PersonaDualGlue

    cfg = _recipe_config(tmp_path, tiny_model_dir, beta=3.0)
    with open_dict(cfg):
        cfg.trainer.v1.trainer_mode = TRAINER_MODES[mode]
        cfg.trainer.v1.persona_dual = {"replay_poll_interval_s": 0.25}
        if mode == "separate_async":  # verl's own checks: a rollout pool and a GPU checkpoint engine
            cfg.trainer.v1.separate_async.parameter_sync_step = 2
            cfg.actor_rollout_ref.actor.ppo_mini_batch_size = cfg.data.train_batch_size // 2
            cfg.actor_rollout_ref.rollout.nnodes = 1
            cfg.actor_rollout_ref.rollout.n_gpus_per_node = 4
            cfg.actor_rollout_ref.rollout.checkpoint_engine.backend = "nccl"
    OmegaConf.resolve(cfg)
    trainer = TRAINER_REGISTRY[TRAINER_MODES[mode]](config=cfg)
    verl_cls = {"colocate_async": PPOTrainerColocateAsync, "separate_async": PPOTrainerSeparateAsync}[mode]
    assert isinstance(trainer, verl_cls) and isinstance(trainer, PersonaDualGlue)
    assert trainer.trainer_mode == mode == cfg.trainer.v1.trainer_mode
    assert type(trainer.replay_buffer) is ReplayBufferAsync
    assert trainer.replay_buffer.poll_interval == 0.25
    assert trainer.parameter_sync_step == (2 if mode == "separate_async" else 1)
    assert trainer.dual_grpo.beta == 3.0
    trainer._init_tokenizer()
    assert trainer.mode_prefixes.ids == resolve_prefixes(trainer.tokenizer).ids


def test_separate_async_on_cpu_needs_the_gloo_checkpoint_engine_and_gets_the_cpu_detach_worker(
    tmp_path, tiny_model_dir
):
    """On trainer.device=cpu a GPU weight transfer (nccl) is refused naming the key and the CPU engine; with the
    gloo engine the trainer is built and maps verl's actor / reference roles to the CPU DetachActorWorker."""
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo.utils import Role
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_personadual.core.cpu.workers import CPUDetachActorWorker
    from verl_personadual.core.names import CPU_CHECKPOINT_ENGINE

    cfg = _recipe_config(tmp_path, tiny_model_dir)
    with open_dict(cfg):
        cfg.trainer.device = "cpu"
        cfg.trainer.v1.trainer_mode = "persona_dual_separate_async"
        cfg.trainer.v1.separate_async.parameter_sync_step = 1
        cfg.actor_rollout_ref.actor.ppo_mini_batch_size = cfg.data.train_batch_size
        cfg.actor_rollout_ref.hybrid_engine = False
        cfg.actor_rollout_ref.rollout.nnodes = 1
        cfg.actor_rollout_ref.rollout.n_gpus_per_node = 1
        cfg.actor_rollout_ref.rollout.checkpoint_engine.backend = "nccl"
    OmegaConf.resolve(cfg)
    with pytest.raises(ValueError, match="actor_rollout_ref.rollout.checkpoint_engine.backend=gloo") as err:
        TRAINER_REGISTRY["persona_dual_separate_async"](config=cfg.copy())
    assert "trainer.v1.trainer_mode=persona_dual_separate_async on trainer.device=cpu" in str(err.value)
    assert "not 'nccl'" in str(err.value)
    cfg.actor_rollout_ref.rollout.checkpoint_engine.backend = CPU_CHECKPOINT_ENGINE
    trainer = TRAINER_REGISTRY["persona_dual_separate_async"](config=cfg)
    trainer._init_resource_pool_mgr()
    mapping = trainer.role_worker_mapping
    assert set(mapping) == {Role.Actor, Role.RefPolicy}  # hybrid_engine=false: no rollout on the training ranks
    for role in mapping:
        assert mapping[role].__ray_actor_class__ is CPUDetachActorWorker, role


def test_trainer_refuses_a_tokenizer_without_mode_tokens(tmp_path, text_tokenizer_dir):
    from conftest import build_tiny_model
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_personadual.core.modes import PrefixResolutionError

    model_dir = build_tiny_model(tmp_path / "text_model", text_tokenizer_dir)
    trainer = TRAINER_REGISTRY["persona_dual_sync"](config=_recipe_config(tmp_path, model_dir))
    with pytest.raises(PrefixResolutionError, match="not dedicated tokens"):
        trainer._init_tokenizer()
    allowed = TRAINER_REGISTRY["persona_dual_sync"](
        config=_recipe_config(tmp_path, model_dir, require_mode_tokens=False)
    )
    allowed._init_tokenizer()
    assert not allowed.mode_prefixes.single_token


def test_one_mode_at_step_0_is_the_starting_checkpoint_not_a_collapse(tokenizer, ppo_config, caplog):
    """The validation before any update (step 0) of an SFT checkpoint that greedily picks one mode everywhere (the
    quickstart's): the metric says so, an info line explains it, no collapse warning."""
    trainer = glue_trainer(ppo_config, tokenizer)
    trainer.global_steps = 0
    modes = [0.0] * 60
    settings = [0.0] * 20 + [1.0] * 20 + [2.0] * 20
    with caplog.at_level("INFO", logger="verl_personadual.core.trainer"):
        metrics = trainer._val_metrics_update(
            ["flan"] * 60, [f"u{i}" for i in range(60)], _val_infos(modes, settings, [2.0] * 60), []
        )
    assert metrics["personadual/val/all/all/mode_collapse"] == 1.0
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "mode collapse" in r.getMessage()]
    (info,) = [r.getMessage() for r in caplog.records if "starting checkpoint" in r.getMessage()]
    assert info.startswith("step 0: the starting checkpoint's free validation picks the general mode")
