"""Every recipe composed against verl 0.9.1's real Hydra config and checked with verl's own validation.

No GPU: recipes are composed exactly as ``python -m verl.trainer.main_ppo`` / ``verl.trainer.sft_trainer``
would compose them (same config directory, same overrides), then validated the way verl validates them.
The paper's Table 6 values are written here independently of the YAMLs and compared value by value.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from verl_personadual.apps.recipes import compose as R
from verl_personadual.apps.recipes import launch as recipes_launch
from verl_personadual.apps.recipes import validate as recipes_validate
from verl_personadual.core import names, plugin
from verl_personadual.core.config import DualGRPOConfig
from verl_personadual.core.modes import Mode

# Paper, Table 6 (RL), as verl 0.9.1 keys. The "linear" schedule is checked separately (verl has none).
# Sizes (batch, lengths) hold for the GPU backbones; the CPU backbone shrinks them and keeps the rest.
PAPER_RL_SIZES = {
    "data.train_batch_size": 64,
    "data.max_prompt_length": 2048,
    "data.max_response_length": 1024,
    "actor_rollout_ref.rollout.prompt_length": 2048,
    "actor_rollout_ref.rollout.response_length": 1024,
}
PAPER_RL = {
    **PAPER_RL_SIZES,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.1,
    "trainer.total_epochs": 5,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.04,
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.rollout.temperature": 0.6,
    "actor_rollout_ref.rollout.n": 8,
    "algorithm.dual_grpo.beta": 2.0,
}
# Paper, Table 6 (SFT).
PAPER_SFT = {
    "optim.lr": 5e-5,
    "optim.lr_scheduler_type": "cosine",
    "optim.lr_warmup_steps_ratio": 0.01,
    "trainer.total_epochs": 1,
    "data.train_batch_size": 16,
    "data.max_length": 4096,
    "engine.dtype": "bfloat16",
}
#: What each CPU backbone changes of PAPER_SFT (sizes for a tiny model; the toy's measured step size).
CPU_SFT = {
    "cpu_tiny": {"data.max_length": 512, "data.train_batch_size": 4},
    "cpu_toy": {
        "data.max_length": 128,
        "data.train_batch_size": 32,
        "optim.lr": 1e-3,
        "optim.lr_scheduler_type": "constant",
        "trainer.total_epochs": 2,
    },
}
#: What each CPU backbone changes of PAPER_RL besides PAPER_RL_SIZES (the quickstart's toy settings).
CPU_RL = {
    "cpu_tiny": {},
    "cpu_toy": {
        "actor_rollout_ref.actor.optim.lr": 3e-4,
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.0,
        "actor_rollout_ref.actor.kl_loss_coef": 0.2,
        "actor_rollout_ref.rollout.n": 4,
    },
}
EIGHT_B = ["qwen3_8b", "llama31_8b"]
SMALL = "qwen3_0p6b"
CPUS = sorted(CPU_SFT)


def test_cpu_backbones_are_the_ones_named_cpu(run_files):
    """tests/apps/test_recipes_gpu.py tells GPU backbones by name: every cpu_* backbone, and only those, runs on CPU."""
    for stage in ("sft", "rl"):
        for backbone in R.backbones(stage):
            device = composed(stage, backbone, run_files).trainer.device
            assert (device == "cpu") is backbone.startswith("cpu_") is (backbone in CPUS), (stage, backbone)


#: Ablation -> the DualGRPO switches it sets (None: not a DualGRPO run, or not yet supported).
ABLATION_SWITCHES = {
    "none": {"inter_mode": True, "prefix_forcing": True},
    "no_dual_adv": {"inter_mode": False, "baseline": "group", "prefix_forcing": True},
    "no_dual_adv_intra": {"inter_mode": False, "baseline": "mode", "prefix_forcing": True},
    "no_prefix_forcing": {"inter_mode": True, "prefix_forcing": False},
    "no_dual_adv_no_prefix_forcing": {"inter_mode": False, "baseline": "group", "prefix_forcing": False},
}
SINGLE_MODE = {"general_only": Mode.GENERAL, "personalized_only": Mode.PERSONALIZED}
RL_CASES = [(b, a) for b in R.backbones("rl") for a in R.ablations()]


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("recipe_run")
    return {k: str(d / f"{k}.parquet") for k in ("train", "val", "sft")} | {"out": str(d / "out")}


@functools.cache
def _composed(stage: str, backbone: str, ablation: str, files: tuple[tuple[str, str], ...], model: str) -> DictConfig:
    f = dict(files)
    val = [f["val"]] if stage == "rl" else []
    train = [f["train"] if stage == "rl" else f["sft"]]
    overrides = R.build_overrides(stage, backbone, model, train, val, ablation, f["out"])
    return R.compose(stage, overrides)


def composed(stage: str, backbone: str, run_files: dict[str, str], ablation: str = R.NO_ABLATION, model: str = "/m"):
    """A fresh copy of the composed recipe (composition is cached; tests may mutate their copy)."""
    return _composed(stage, backbone, ablation, tuple(sorted(run_files.items())), model).copy()


def leaf_keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a plain nested dict (an empty dict is a leaf)."""
    out = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        out += leaf_keys(value, dotted + ".") if isinstance(value, dict) and value else [dotted]
    return out


def verl_base(stage: str) -> DictConfig:
    """verl's own packaged config for the stage, composed on its own."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer" if stage == "rl" else "sft_trainer_engine")


# --- layout and schema ---------------------------------------------------------------------------------------


def test_recipe_layout():
    assert R.backbones("rl") == R.backbones("sft") == sorted(EIGHT_B + [SMALL, *CPUS])
    assert R.ablations() == sorted([*ABLATION_SWITCHES, *SINGLE_MODE, "grpo"])
    for stage in R.STAGES.values():
        primary = yaml.safe_load((R.CONFIG_DIR / f"{stage.config_name}.yaml").read_text())
        assert primary["hydra"]["searchpath"] == ["pkg://verl.trainer.config"]
        verl_defaults = "ppo_trainer" if stage.name == "rl" else "sft_trainer_engine"
        assert primary["defaults"][:2] == [verl_defaults, "_self_"]


@pytest.mark.parametrize("stage", sorted(R.STAGES))
def test_every_recipe_key_exists_in_verl_schema(stage: str):
    """Hydra lets a YAML add keys silently; verl would then ignore a typo. Only our namespace may be new."""
    base = verl_base(stage)
    files = [R.CONFIG_DIR / f"{R.STAGES[stage].config_name}.yaml"]
    files += sorted((R.CONFIG_DIR / R.STAGES[stage].backbone_group).glob("*.yaml"))
    if stage == "rl":
        files += sorted((R.CONFIG_DIR / R.ABLATION_GROUP).glob("*.yaml"))
    ours = R.ADDED_KEY_PREFIXES
    checked = 0
    for path in files:
        body = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("hydra", "defaults")}
        for key in leaf_keys(body):
            if key.startswith(ours):
                continue
            parent, _, last = key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            present = isinstance(node, DictConfig) and last in list(node.keys())
            assert present, f"{path.name}: {key} is not in verl's config"
            checked += 1
    assert checked > (40 if stage == "rl" else 20)


def test_namespace_keys_are_dualgrpo_fields():
    known = {f for f in DualGRPOConfig.__dataclass_fields__}
    for path in [R.CONFIG_DIR / "persona_dual_rl.yaml", *sorted((R.CONFIG_DIR / R.ABLATION_GROUP).glob("*.yaml"))]:
        section = ((yaml.safe_load(path.read_text()) or {}).get("algorithm") or {}).get(names.CONFIG_NAMESPACE, {})
        unknown = set(section) - known
        assert not unknown, f"{path.name}: {unknown}"


# --- Stage 2 (RL) ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone,ablation", RL_CASES)
def test_rl_recipe_passes_verl_validation_and_keeps_paper_values(backbone, ablation, run_files):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = composed("rl", backbone, run_files, ablation)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert need_reference_policy(cfg) is True and need_critic(cfg) is False
    for key, value in PAPER_RL.items():
        if backbone in CPUS and key in PAPER_RL_SIZES:
            continue
        assert OmegaConf.select(cfg, key) == CPU_RL.get(backbone, {}).get(key, value), key
    # Schedule: the paper's "linear" -> linear warm-up then constant (verl's FSDP optimizer has no linear decay).
    assert cfg.actor_rollout_ref.actor.optim.lr_scheduler_type == "constant"
    assert cfg.actor_rollout_ref.actor.kl_loss_type == "low_var_kl"
    assert cfg.data.train_files == run_files["train"] and cfg.data.val_files == run_files["val"]
    assert cfg.actor_rollout_ref.model.path == "/m"
    assert cfg.trainer.default_local_dir == run_files["out"]
    assert cfg.trainer.experiment_name == R.experiment_name("rl", backbone, ablation)
    assert cfg.trainer.use_v1 is True
    assert cfg.reward.custom_reward_function.path == names.REWARD_FN_PATH
    assert cfg.reward.custom_reward_function.name == names.REWARD_FN_NAME
    # The forced agent loop refuses rollout correction on its placeholder log-probs: the recipes leave it off.
    assert cfg.algorithm.rollout_correction.rollout_is is None and cfg.algorithm.rollout_correction.rollout_rs is None
    assert cfg.algorithm.rollout_correction.bypass_mode is False


@pytest.mark.parametrize("backbone", EIGHT_B)
def test_8b_recipes_exact_sizes(backbone, run_files):
    cfg = composed("rl", backbone, run_files)
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (1, 8)
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 64
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 2


def test_small_recipe_is_one_gpu_with_offload(run_files):
    cfg = composed("rl", SMALL, run_files)
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (1, 1)
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert cfg.actor_rollout_ref.actor.fsdp_config.param_offload is True
    assert cfg.actor_rollout_ref.actor.fsdp_config.optimizer_offload is True
    assert cfg.actor_rollout_ref.ref.fsdp_config.param_offload is True
    sft = composed("sft", SMALL, run_files)
    assert sft.trainer.n_gpus_per_node == 1 and sft.engine.param_offload and sft.engine.optimizer_offload


@pytest.mark.parametrize("ablation", sorted(ABLATION_SWITCHES))
def test_dual_grpo_recipes_select_plugin_names_and_switches(ablation, run_files):
    cfg = composed("rl", "qwen3_8b", run_files, ablation)
    assert cfg.algorithm.adv_estimator == names.ESTIMATOR
    assert cfg.trainer.v1.trainer_mode == names.TRAINER_MODE
    expected = DualGRPOConfig(**ABLATION_SWITCHES[ablation])
    assert DualGRPOConfig.from_algorithm(cfg.algorithm) == expected
    recipes_validate.validate("rl", cfg)


def test_grpo_baseline_is_verl_grpo_without_forcing(run_files):
    cfg = composed("rl", "qwen3_8b", run_files, "grpo")
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False  # PersonaDual has no std normalisation either
    assert cfg.trainer.v1.trainer_mode == names.TRAINER_MODE
    assert DualGRPOConfig.from_algorithm(cfg.algorithm).prefix_forcing is False
    recipes_validate.validate("rl", cfg)


@pytest.mark.parametrize("ablation", sorted(SINGLE_MODE))
def test_single_mode_baselines_select_one_forced_mode(ablation, run_files):
    """G-SFT-RL / P-SFT-RL: `algorithm.dual_grpo.only_mode` forces every training rollout into one mode."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = composed("rl", "qwen3_8b", run_files, ablation)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    recipes_validate.validate("rl", cfg)
    dual = DualGRPOConfig.from_algorithm(cfg.algorithm)
    assert dual.single_mode is SINGLE_MODE[ablation] and dual.prefix_forcing is True
    assert cfg.algorithm.adv_estimator == names.ESTIMATOR


def test_plugin_registers_the_names_the_recipes_select(run_files):
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.v1 import get_trainer_cls

    from verl_personadual.core.advantage import compute_dual_grpo_advantage
    from verl_personadual.core.rewards import compute_score
    from verl_personadual.core.trainer import PersonaDualSyncTrainer

    assert plugin.REGISTERING_MODULES  # imported above: registration is an import side effect
    cfg = composed("rl", "qwen3_8b", run_files)
    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator) is compute_dual_grpo_advantage
    assert get_trainer_cls(cfg.trainer.v1.trainer_mode) is PersonaDualSyncTrainer
    for name in (names.AGENT_LOOP_FORCED, names.AGENT_LOOP_FREE):
        assert name in _agent_loop_registry
    reward_fn = get_custom_reward_fn(cfg)  # verl's own loader, pkg:// path included
    assert reward_fn.args[0] is compute_score


# --- extra keys under algorithm.dual_grpo: what verl does with them --------------------------------------------


def test_dual_grpo_namespace_survives_verl_validation_as_dictconfig(run_files):
    """main_ppo validates, then hands `config.algorithm` (a DictConfig) to the estimator untouched."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = composed("rl", "qwen3_8b", run_files, "no_dual_adv")
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert isinstance(cfg.algorithm, DictConfig)
    expected = DualGRPOConfig(inter_mode=False, baseline="group").as_dict()
    assert OmegaConf.to_container(cfg.algorithm.dual_grpo) == expected


def test_algo_dataclass_conversion_rejects_the_namespace(run_files):
    """verl never converts `algorithm` on the v1 path; if anything did, the extra key would fail loudly."""
    from verl.trainer.config import AlgoConfig
    from verl.utils.config import omega_conf_to_dataclass

    cfg = composed("rl", "qwen3_8b", run_files)
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'dual_grpo'"):
        omega_conf_to_dataclass(cfg.algorithm)
    with pytest.raises(ConfigKeyError, match="dual_grpo"):
        omega_conf_to_dataclass(cfg.algorithm, AlgoConfig)
    section = OmegaConf.to_container(cfg.algorithm)
    section.pop(names.CONFIG_NAMESPACE)
    assert omega_conf_to_dataclass(OmegaConf.create(section)).adv_estimator == names.ESTIMATOR


def test_namespace_overrides_need_no_plus_and_typos_fail(run_files):
    cfg = composed("rl", "qwen3_8b", run_files)
    base = ["rl_backbone=qwen3_8b", f"data.train_files={run_files['train']}"]
    assert R.compose("rl", base + ["algorithm.dual_grpo.beta=1.5"]).algorithm.dual_grpo.beta == 1.5
    with pytest.raises(ConfigCompositionException, match="betta"):
        R.compose("rl", base + ["algorithm.dual_grpo.betta=1.5"])
    assert cfg.algorithm.dual_grpo.beta == 2.0


def test_linear_decay_is_not_available_in_verl_fsdp_optimizer():
    """Why the RL recipes use constant-after-warm-up: verl 0.9.1 rejects "linear" for the FSDP optimizer."""
    from verl.workers.config import FSDPOptimizerConfig

    with pytest.raises(AssertionError):
        FSDPOptimizerConfig(lr=1e-6, lr_scheduler_type="linear")
    assert FSDPOptimizerConfig(lr=1e-6, lr_scheduler_type="constant").lr_scheduler_type == "constant"


# --- Stage 1 (SFT) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", R.backbones("sft"))
def test_sft_recipe_converts_like_verl_sft_trainer_and_keeps_paper_values(backbone, run_files, tiny_model_dir):
    cfg = composed("sft", backbone, run_files, model=str(tiny_model_dir))
    recipes_validate.validate("sft", cfg)
    for key, value in PAPER_SFT.items():
        value = CPU_SFT.get(backbone, {}).get(key, value)
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.data.train_files == run_files["sft"] and cfg.data.val_files is None
    assert cfg.data.messages_key == "messages"
    assert "hf_model" in cfg.checkpoint.save_contents
    assert cfg.trainer.experiment_name == R.experiment_name("sft", backbone)
    from verl.utils.config import omega_conf_to_dataclass

    # The model section as SFTTrainer._build_config converts it (needs a model on disk: the tiny one).
    cfg.model.override_config = {"attn_implementation": "sdpa"}
    model = omega_conf_to_dataclass(cfg.model)
    assert model.tokenizer is not None and model.enable_gradient_checkpointing is (backbone not in CPUS)


@pytest.mark.parametrize("backbone", R.backbones("rl"))
def test_chat_template_kwargs_agree_between_sft_and_rl(backbone, run_files):
    sft, rl = composed("sft", backbone, run_files), composed("rl", backbone, run_files)
    assert OmegaConf.to_container(sft.data.apply_chat_template_kwargs) == OmegaConf.to_container(
        rl.data.apply_chat_template_kwargs
    )
    assert sft.data.enable_thinking_default is None


#: A chat template written for this test that reproduces the two Qwen3 behaviours that matter here (it is not
#: Qwen3's template): the last assistant turn after a user turn gets an empty think block, and the generation
#: prompt gets one when ``enable_thinking`` is false.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and loop.last and loop.index0 > 0 %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
SFT_MESSAGES = [
    {"role": "user", "content": "I am a nurse. My question is: which vitamin deficiency causes scurvy?"},
    {"role": "assistant", "content": f'{Mode.GENERAL.prefix} Vitamin C. {{"answer": "B"}}'},
]


def _sft_item(tmp_path: Path, tokenizer, data_cfg: dict) -> tuple[list[int], list[int]]:
    """input_ids and loss_mask of one SFT row as verl's own MultiTurnSFTDataset builds them."""
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    path = tmp_path / "sft.parquet"
    pd.DataFrame({"messages": [SFT_MESSAGES]}).to_parquet(path)
    item = MultiTurnSFTDataset([str(path)], tokenizer, data_cfg)[0]
    return item["input_ids"].tolist(), item["loss_mask"].tolist()


def _rl_prompt(tokenizer, rl_cfg: DictConfig) -> list[int]:
    """The RL prompt ids as verl's agent loop builds them (continuous-token builder, the recipe's kwargs)."""
    from verl.utils.tokenizer.continuous_token_wiring import (
        create_continuous_token_builder,
    )

    kwargs = OmegaConf.to_container(rl_cfg.data.apply_chat_template_kwargs)
    return create_continuous_token_builder(tokenizer, chat_template_kwargs=kwargs).build_initial_tokens(
        SFT_MESSAGES[:1]
    )


@pytest.mark.parametrize("template", ["plain", "think"])
def test_sft_trains_the_mode_token_where_the_rl_prompt_ends(template, tmp_path, tokenizer_dir, run_files):
    """SFT (verl's dataset, the recipe's data section) trains the mode token right where the RL prompt ends."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if template == "think":
        tok.chat_template = THINK_TEMPLATE
    sft, rl = composed("sft", "qwen3_8b", run_files), composed("rl", "qwen3_8b", run_files)
    ids, mask = _sft_item(tmp_path, tok, OmegaConf.to_container(sft.data, resolve=True))
    pos = ids.index(tok.convert_tokens_to_ids(Mode.GENERAL.prefix))
    assert mask[pos] == 1 and mask[pos - 1] == 0
    assert ids[:pos] == _rl_prompt(tok, rl)


def test_enable_thinking_false_would_mask_the_mode_token_in_sft(tmp_path, tokenizer_dir, run_files):
    """Why the Qwen3 recipes pass no `enable_thinking`: with false, verl's SFT dataset masks the mode token.

    verl templates each message alone (an assistant message alone gets no think block) but masks the length
    of the generation prompt, which `enable_thinking=false` lengthens by the empty think block.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = THINK_TEMPLATE
    data = OmegaConf.to_container(composed("sft", "qwen3_8b", run_files).data, resolve=True)
    data["apply_chat_template_kwargs"] = {"enable_thinking": False}
    ids, mask = _sft_item(tmp_path, tok, data)
    assert mask[ids.index(tok.convert_tokens_to_ids(Mode.GENERAL.prefix))] == 0
    data["apply_chat_template_kwargs"] = {}
    data["ignore_input_ids_mismatch"] = False
    with pytest.raises(AssertionError, match="ignore_input_ids_mismatch"):
        _sft_item(tmp_path, tok, data)


# --- the CLI ---------------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "verl_personadual.recipes", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_cli_help_explains_itself():
    out = _cli("rl", "--help")
    assert out.returncode == 0
    for word in ("--dry-run", "--ablation", "--backbone", "no_dual_adv", "qwen3_8b", "llama31_8b"):
        assert word in out.stdout


@pytest.mark.parametrize("stage", ["rl", "sft"])
def test_cli_dry_run_prints_the_composed_config_and_starts_nothing(stage, run_files, tmp_path, tiny_model_dir):
    # the CLI checks the model and the files (their columns and rows, and that they hold a batch): 64 rows (the RL
    # batch) that carry both the RL and the SFT columns
    files = {k: str(tmp_path / Path(v).name) for k, v in run_files.items()}
    prompt = [{"role": "user", "content": "Is it true?"}]
    row = {
        "data_source": "toy",
        "prompt": prompt,
        "reward_model": {"style": "rule", "ground_truth": "true"},
        "extra_info": {"task_family": "free_text", "persona_setting": "none"},
        "agent_name": "personadual_forced",
        "messages": [*prompt, {"role": "assistant", "content": '[General_mode] {"answer": "true"}'}],
    }
    for key in ("train", "val", "sft"):
        pd.DataFrame([row] * 64).to_parquet(files[key])
    cli_files = ["--train-files", files["train" if stage == "rl" else "sft"]]
    cli_files += ["--val-files", files["val"]] if stage == "rl" else []
    ablation = ["--ablation", "no_prefix_forcing"] if stage == "rl" else []
    out_dir = tmp_path / "ckpt"
    args = [
        "--backbone",
        "llama31_8b",
        "--model",
        str(tiny_model_dir),
        *cli_files,
        *ablation,
        "--output-dir",
        str(out_dir),
    ]
    out = _cli(stage, *args, "--dry-run", "--", "trainer.save_freq=7")
    assert out.returncode == 0, out.stderr[-3000:]
    printed = OmegaConf.create(out.stdout)
    expected = composed(
        stage, "llama31_8b", files, "no_prefix_forcing" if stage == "rl" else "none", str(tiny_model_dir)
    )
    expected.trainer.default_local_dir = str(out_dir)
    expected.trainer.save_freq = 7
    assert printed == OmegaConf.create(OmegaConf.to_container(expected, resolve=True))
    module = R.STAGES[stage].verl_module
    assert f"-m {module} --config-path {R.CONFIG_DIR}" in out.stderr
    assert "dry run: nothing started" in out.stderr and str(out_dir) in out.stderr
    assert not out_dir.exists()


@pytest.mark.parametrize("stage", ["rl", "sft"])
def test_verl_entry_point_composes_the_same_config(stage, run_files):
    """The command the CLI launches, run through verl's own hydra.main with `--cfg job` (print, do not run)."""
    f = run_files
    val = [f["val"]] if stage == "rl" else []
    train = [f["train" if stage == "rl" else "sft"]]
    overrides = R.build_overrides(stage, "qwen3_8b", "/m", train, val, R.NO_ABLATION, f["out"])
    cfg = R.compose(stage, overrides)
    command = recipes_launch.launch_command(stage, cfg, overrides)
    command = [sys.executable, *command[command.index("-m") :], "--cfg", "job"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert OmegaConf.to_container(OmegaConf.create(out.stdout)) == OmegaConf.to_container(cfg)


def test_paths_with_hydra_syntax_and_several_files_arrive_verbatim(tmp_path):
    odd = tmp_path / "my data, v=2" / "train.parquet"
    second = tmp_path / "more.parquet"
    overrides = R.build_overrides("rl", "qwen3_8b", str(tmp_path), [str(odd), str(second)], [str(odd)])
    cfg = R.compose("rl", overrides)
    assert list(cfg.data.train_files) == [str(odd), str(second)]
    assert cfg.data.val_files == str(odd)
    assert cfg.actor_rollout_ref.model.path == str(tmp_path)  # an existing directory: made absolute
    assert R.compose("sft", R.build_overrides("sft", "qwen3_8b", "Qwen/Qwen3-8B", [str(odd)])).model.path == (
        "Qwen/Qwen3-8B"  # not a local path: a hub id, kept as given
    )


def test_cli_rejects_what_it_cannot_run(run_files):
    with pytest.raises(ValueError, match="validation files"):
        R.build_overrides("rl", "qwen3_8b", "/m", [run_files["train"]])
    with pytest.raises(ValueError, match="RL stage only"):
        R.build_overrides("sft", "qwen3_8b", "/m", [run_files["sft"]], ablation="no_dual_adv")
    cfg = composed("sft", "qwen3_8b", run_files)
    cfg.trainer.nnodes = 2
    with pytest.raises(ValueError, match="multi-node"):
        recipes_launch.launch_command("sft", cfg, [])


def test_output_paths_name_no_folder_when_rl_saves_nothing(run_files):
    """`save_freq: -1` (cpu_tiny): verl's RL trainer writes no checkpoint, so none is announced; SFT always saves
    its last step, and a positive save_freq names the folder."""
    cfg = composed("rl", "cpu_tiny", run_files)
    assert cfg.trainer.save_freq == -1
    assert recipes_launch.output_paths("rl", cfg) == {
        "checkpoints": "none: trainer.save_freq=-1, so verl saves no checkpoint (set it > 0 to keep the trained model)"
    }
    toy = composed("rl", "cpu_toy", run_files)
    assert toy.trainer.save_freq > 0
    assert recipes_launch.output_paths("rl", toy) == {
        "checkpoints": run_files["out"],
        "actor shards (convert with verl.model_merger, see "
        "recipes/README.md)": f"{run_files['out']}/global_step_<N>/actor",
    }
    sft = composed("sft", "cpu_tiny", run_files)
    assert sft.trainer.save_freq == -1
    assert (
        recipes_launch.output_paths("sft", sft)["hf_model (input of the RL stage)"]
        == f"{run_files['out']}/global_step_<last>/huggingface"
    )


def test_launched_commands_keep_hydra_out_of_the_working_directory(run_files):
    """verl's hydra.main writes `.hydra/` and its log under hydra.run.dir (default: ./outputs/<date>/<time>): the
    launched command points it under the run's output directory, unless the user sets it."""
    for stage in ("rl", "sft"):
        cfg = composed(stage, "cpu_toy", run_files)
        command = recipes_launch.launch_command(stage, cfg, ["x=1"])
        assert command[command.index("--config-name") + 2 :] == [f"hydra.run.dir={run_files['out']}/hydra", "x=1"]
        own = recipes_launch.launch_command(stage, cfg, ["hydra.run.dir=/elsewhere"])
        assert [a for a in own if a.startswith("hydra.run.dir")] == ["hydra.run.dir=/elsewhere"]


def test_transfer_queue_threads_follow_the_physical_cores(run_files, monkeypatch):
    """transfer_queue warns on every put / get when its 8 threads exceed the physical cores: the run's environment
    sets TQ_NUM_THREADS to the core count on a smaller machine, and leaves a user's setting alone."""
    import psutil

    cfg = composed("rl", "cpu_toy", run_files)
    monkeypatch.delenv("TQ_NUM_THREADS", raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2)
    assert recipes_launch.run_env(cfg)["TQ_NUM_THREADS"] == "2"
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 32)
    assert "TQ_NUM_THREADS" not in recipes_launch.run_env(cfg)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2)
    monkeypatch.setenv("TQ_NUM_THREADS", "4")
    assert "TQ_NUM_THREADS" not in recipes_launch.run_env(cfg)


#: The trainer-mode variants (recipes/config/trainer_mode/): training GPUs and rollout-pool GPUs per node, nodes.
TRAINER_MODE_VARIANTS = {
    "colocate_async": ("persona_dual_colocate_async", 8, None),
    "separate_async": ("persona_dual_separate_async", 4, (1, 4)),
    "separate_async_multinode": ("persona_dual_separate_async", 8, (1, 8)),
}


@pytest.mark.parametrize("backbone", ["qwen3_8b", "llama31_8b"])
@pytest.mark.parametrize("variant", sorted(TRAINER_MODE_VARIANTS))
def test_async_variants_of_the_8b_recipes_compose_validate_and_pass_verls_trainer_checks(
    variant, backbone, run_files, tiny_model_dir
):
    """`-- +trainer_mode=<variant>` over an 8B backbone: the recipe checks pass, and the registered trainer accepts
    the config (verl's separate_async asserts: batch = parameter_sync_step x mini-batch, a rollout pool, no naive
    weight transfer)."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    mode, trainer_gpus, pool = TRAINER_MODE_VARIANTS[variant]
    files = [run_files["train"]], [run_files["val"]]
    overrides = R.build_overrides("rl", backbone, str(tiny_model_dir), *files, R.NO_ABLATION, run_files["out"])
    cfg = R.compose("rl", overrides + [f"+trainer_mode={variant}"])
    recipes_validate.validate("rl", cfg)
    assert cfg.trainer.v1.trainer_mode == mode
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (1, trainer_gpus)
    if pool is not None:
        rollout = cfg.actor_rollout_ref.rollout
        assert (rollout.nnodes, rollout.n_gpus_per_node, rollout.checkpoint_engine.backend) == (*pool, "nccl")
        assert cfg.trainer.v1.separate_async.parameter_sync_step == 1  # the paper's one update per batch
        assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == cfg.data.train_batch_size == 64
    assert DualGRPOConfig.from_algorithm(cfg.algorithm) == DualGRPOConfig()  # the paper's DualGRPO, unchanged
    trainer = get_trainer_cls(mode)(config=cfg)
    assert trainer.trainer_mode == mode.removeprefix("persona_dual_")


def test_the_cpu_separate_async_variant_composes_validates_and_passes_verls_trainer_checks(run_files, tiny_model_dir):
    """`-- +trainer_mode=separate_async_cpu` over cpu_tiny: 1 training + 1 rollout rank (2 logical GPUs for Ray), no
    rollout on the training rank, the gloo weight transfer; the registered trainer accepts it (verl's asserts)."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    from verl_personadual.core.names import CPU_CHECKPOINT_ENGINE

    files = [run_files["train"]], [run_files["val"]]
    overrides = R.build_overrides("rl", "cpu_tiny", str(tiny_model_dir), *files, R.NO_ABLATION, run_files["out"])
    cfg = R.compose("rl", overrides + ["+trainer_mode=separate_async_cpu"])
    recipes_validate.validate("rl", cfg)
    rollout = cfg.actor_rollout_ref.rollout
    assert cfg.trainer.v1.trainer_mode == "persona_dual_separate_async"
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, rollout.nnodes, rollout.n_gpus_per_node) == (1, 1, 1, 1)
    assert cfg.ray_kwargs.ray_init.num_gpus == 2
    assert cfg.actor_rollout_ref.hybrid_engine is False
    assert rollout.checkpoint_engine.backend == CPU_CHECKPOINT_ENGINE
    assert cfg.trainer.v1.separate_async.parameter_sync_step == 1  # the paper's one update per batch
    assert DualGRPOConfig.from_algorithm(cfg.algorithm) == DualGRPOConfig()
    assert get_trainer_cls("persona_dual_separate_async")(config=cfg).trainer_mode == "separate_async"


def test_cpu_runs_use_one_torch_thread_unless_told(run_files, monkeypatch):
    """A CPU run on the hf_cpu path (SFT, or RL with rollout hf_cpu) gets OMP_NUM_THREADS=1 (its trainer and, through
    Ray, its workers and rollout server); a user's setting is kept, and neither a vLLM rollout nor a GPU run gets it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for stage in ("sft", "rl"):
        assert recipes_launch.run_env(composed(stage, "cpu_toy", run_files))["OMP_NUM_THREADS"] == "1"
        assert "OMP_NUM_THREADS" not in recipes_launch.run_env(composed(stage, "qwen3_8b", run_files))
    vllm = composed("rl", "cpu_toy", run_files)
    vllm.actor_rollout_ref.rollout.name = "vllm"
    assert "OMP_NUM_THREADS" not in recipes_launch.run_env(vllm)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert "OMP_NUM_THREADS" not in recipes_launch.run_env(composed("rl", "cpu_toy", run_files))
