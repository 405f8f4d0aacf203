"""Run a PersonaDual recipe: compose it against verl's real Hydra config, validate it, print it, launch it.

The recipes are Hydra YAMLs in ``recipes/config`` that inherit verl's packaged trainer configs
(``ppo_trainer`` for Stage 2, ``sft_trainer_engine`` for Stage 1). This module composes them exactly as
verl's entry points would (same config directory, same overrides), runs verl's own validation, and then
either prints the composed config (``--dry-run``) or starts verl::

    python -m verl_personadual.recipes sft --backbone qwen3_8b --model M --train-files sft.parquet [--dry-run]
    python -m verl_personadual.recipes rl  --backbone qwen3_8b --model SFT_HF --train-files train.parquet \\
        --val-files val.parquet [--ablation no_dual_adv] [--dry-run] [-- extra.hydra=overrides ...]

Before composing, the CLI checks that ``--model`` and every data file exist (``preflight``); a Hydra override that
cannot apply (an unknown key, a ``+`` on an existing one, bad syntax) and a config verl's validation rejects are
reported in one line (:func:`explain_composition_error`), with the known keys and the closest one; exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil
from omegaconf import DictConfig, OmegaConf

from verl_personadual.config import DualGRPOConfig
from verl_personadual.cpu.vllm_settings import check_cpu_vllm_rollout
from verl_personadual.errors import run_cli, user_errors
from verl_personadual.names import CPU_DEVICE, ESTIMATOR
from verl_personadual.preflight import (
    PreflightError,
    check_files,
    check_mode_tokens,
    check_model,
    check_rl_parquet,
    check_sft_parquet,
    closest,
    known_agent_loops,
)

__all__ = [
    "ADDED_KEY_PREFIXES",
    "CONFIG_DIR",
    "STAGES",
    "OverlongRows",
    "Stage",
    "ablations",
    "backbones",
    "build_overrides",
    "check_rl_layout",
    "check_sft_layout",
    "compose",
    "drop_overlong_rows",
    "explain_composition_error",
    "find_overlong_rows",
    "launch_command",
    "main",
    "sft_token_lengths",
    "split_overrides",
    "validate",
]

#: The recipes' Hydra config directory (``recipes/config`` at the repository root).
CONFIG_DIR: Path = Path(__file__).resolve().parents[1] / "recipes" / "config"

#: Config group of the ablation switches (Stage 2 only).
ABLATION_GROUP = "ablation"
#: The ablation that changes nothing: full DualGRPO.
NO_ABLATION = "none"

#: transfer_queue's torch threads for its puts and gets unless TQ_NUM_THREADS is set (transfer_queue/client.py).
TQ_DEFAULT_THREADS = 8

#: Environment for launched runs: verl imports the plugin without swallowing errors (see plugin.py).
RUN_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_personadual.plugin"}

#: Hydra's run directory of a launched command, under ``trainer.default_local_dir`` (see :func:`launch_command`).
HYDRA_RUN_SUBDIR = "hydra"

#: Module that runs verl's SFT trainer on CPU.
CPU_SFT_MODULE = "verl_personadual.cpu.sft"


def run_env(cfg: DictConfig) -> dict[str, str]:
    """Environment variables of a launched run of ``cfg``: :data:`RUN_ENV`, plus ``VERL_PLATFORM=cpu`` when it runs
    on CPU (verl then never probes for an accelerator), plus ``TQ_NUM_THREADS`` = the physical cores when there are
    fewer than transfer_queue's default of 8 threads (else it clamps to them itself, with a warning on every
    put / get: hundreds of lines per run) and the variable is not set already."""
    env = dict(RUN_ENV)
    cores = psutil.cpu_count(logical=False)
    if "TQ_NUM_THREADS" not in os.environ and cores and cores < TQ_DEFAULT_THREADS:
        env["TQ_NUM_THREADS"] = str(cores)
    if cfg.trainer.device == CPU_DEVICE:
        env["VERL_PLATFORM"] = CPU_DEVICE
    return env


#: Dotted key prefixes the recipe YAMLs add to verl's YAML config on purpose (Hydra merges new keys from config
#: files): the plugin's namespaces (DualGRPO switches, trainer settings), ``ray.init`` keyword arguments (verl
#: passes ``ray_kwargs.ray_init`` to ``ray.init`` as is), Hugging Face config overrides (passed to the model's
#: config as is), and ``mixed_precision`` of verl's FSDP engine config (a dataclass field verl's YAML omits).
ADDED_KEY_PREFIXES: tuple[str, ...] = (
    "algorithm.dual_grpo.",
    "trainer.v1.persona_dual.",
    "ray_kwargs.ray_init.",
    "actor_rollout_ref.model.override_config.",
    "model.override_config.",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.",
    "actor_rollout_ref.ref.fsdp_config.mixed_precision.",
    "engine.mixed_precision.",
)

#: Overrides that make ``main_ppo`` join a running Ray cluster instead of starting a local one (multi-node RL).
#: ``address=auto`` fails when no cluster is running, rather than starting a one-node cluster that then waits
#: forever for the other nodes' GPUs.
RAY_CLUSTER_OVERRIDES = ("+ray_kwargs.ray_init.address=auto",)

#: Override values made only of these characters need no quoting in Hydra's override grammar.
_PLAIN = re.compile(r"[A-Za-z0-9_./:-]+")


@dataclass(frozen=True)
class Stage:
    """One training stage: its primary recipe, its backbone config group and the verl module that runs it."""

    name: str
    config_name: str
    backbone_group: str
    verl_module: str
    experiment_suffix: str


STAGES: dict[str, Stage] = {
    "sft": Stage("sft", "persona_dual_sft", "sft_backbone", "verl.trainer.sft_trainer", "sft"),
    "rl": Stage("rl", "persona_dual_rl", "rl_backbone", "verl.trainer.main_ppo", "dual_grpo"),
}


def _group_options(group: str) -> list[str]:
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"recipe configs not found at {CONFIG_DIR}: run from a source checkout installed with `pip install -e .`"
        )
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def backbones(stage: str) -> list[str]:
    """Backbone names available for ``stage`` (one YAML each in its backbone group)."""
    return _group_options(STAGES[stage].backbone_group)


def ablations() -> list[str]:
    """Stage 2 ablation names (one YAML each in ``recipes/config/ablation``)."""
    return _group_options(ABLATION_GROUP)


def experiment_name(stage: str, backbone: str, ablation: str = NO_ABLATION) -> str:
    """``<backbone>_<stage>[_<ablation>]``, e.g. ``qwen3_8b_dual_grpo_no_dual_adv``."""
    parts = [backbone, STAGES[stage].experiment_suffix] + ([] if ablation == NO_ABLATION else [ablation])
    return "_".join(parts)


def _quote(value: str) -> str:
    """A path as a Hydra override value: as is when plain, else quoted so ``=``, ``,`` or spaces stay literal."""
    if "'" in value or "\\" in value:
        raise ValueError(f"paths with quotes or backslashes are not supported in overrides: {value!r}")
    return value if _PLAIN.fullmatch(value) else f"'{value}'"


def _files(paths: Sequence[str]) -> str:
    quoted = [_quote(str(Path(p).expanduser().resolve())) for p in paths]
    return quoted[0] if len(quoted) == 1 else "[" + ",".join(quoted) + "]"


def build_overrides(
    stage: str,
    backbone: str,
    model: str,
    train_files: Sequence[str],
    val_files: Sequence[str] = (),
    ablation: str = NO_ABLATION,
    output_dir: str | None = None,
    extra: Sequence[str] = (),
    nnodes: int | None = None,
) -> list[str]:
    """The Hydra overrides that select a recipe and fill in its run arguments (``extra`` last, so it wins).

    ``model`` is a local directory (made absolute) or a hub id (kept as is). ``nnodes`` (default: the
    backbone's, 1) sets ``trainer.nnodes``; for the RL stage with ``nnodes > 1`` it also makes ``main_ppo``
    join the running Ray cluster (``RAY_CLUSTER_OVERRIDES``).
    """
    spec = STAGES[stage]
    if backbone not in backbones(stage):
        raise ValueError(f"unknown {stage} backbone {backbone!r}; available: {backbones(stage)}")
    if stage == "sft" and ablation != NO_ABLATION:
        raise ValueError("ablations apply to the RL stage only")
    if stage == "rl" and ablation not in ablations():
        raise ValueError(f"unknown ablation {ablation!r}; available: {ablations()}")
    if not train_files:
        raise ValueError("at least one training file is required")
    if stage == "rl" and not val_files:
        raise ValueError("the RL stage needs validation files (free-mode evaluation)")
    if nnodes is not None and nnodes < 1:
        raise ValueError(f"nnodes must be >= 1, got {nnodes}")
    name = experiment_name(stage, backbone, ablation)
    model_path = str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model
    out = Path(output_dir).expanduser().resolve() if output_dir else Path.cwd() / "checkpoints" / "persona_dual" / name
    model_key = "actor_rollout_ref.model.path" if stage == "rl" else "model.path"
    overrides = [f"{spec.backbone_group}={backbone}"]
    if stage == "rl":
        overrides.append(f"{ABLATION_GROUP}={ablation}")
    overrides += [
        f"{model_key}={_quote(model_path)}",
        f"data.train_files={_files(train_files)}",
        f"data.val_files={_files(val_files) if val_files else 'null'}",
        f"trainer.experiment_name={name}",
        f"trainer.default_local_dir={_quote(str(out))}",
    ]
    if nnodes is not None:
        overrides.append(f"trainer.nnodes={nnodes}")
        if stage == "rl" and nnodes > 1:
            overrides += RAY_CLUSTER_OVERRIDES
    return overrides + list(extra)


def compose(stage: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``stage``'s recipe with verl's packaged configs on the search path, as verl's CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=STAGES[stage].config_name, overrides=list(overrides))


def check_rl_layout(cfg: DictConfig) -> None:
    """Checks of the composed RL config that verl itself makes only once workers are running (or never).

    Raises ``ValueError`` naming the keys, for:

    - GPU count vs batches: ``actor.ppo_mini_batch_size x rollout.n`` must split evenly over the actor's data
      parallel ranks (``verl/workers/engine_workers.py:267``), and ``data.train_batch_size x rollout.n`` over
      all GPUs (``verl/utils/config.py:123-127`` checks it only without dynamic batching); the GPUs must split
      into whole vLLM replicas of ``tensor x data x pipeline`` parallel GPUs (``engine_workers.py:662``).
    - dynamic batching switched on for actor, rollout log-prob and ref together (verl asserts only actor vs
      rollout, ``engine_workers.py:616``), with every token budget >= prompt + response
      (``verl/utils/seqlen_balancing.py:384``).
    - ``rollout.max_model_len`` >= prompt + response; vLLM would otherwise cut responses short
      (``verl/workers/rollout/vllm_rollout/vllm_async_server.py:593``).
    """
    arr, data, trainer = cfg.actor_rollout_ref, cfg.data, cfg.trainer
    actor, rollout, ref = arr.actor, arr.rollout, arr.ref
    n_gpus = trainer.n_gpus_per_node * trainer.nnodes
    where = f"{trainer.nnodes} node(s) x {trainer.n_gpus_per_node} GPUs = {n_gpus} GPUs"
    sp = actor.get("ulysses_sequence_parallel_size", 1) or 1
    if n_gpus % sp:
        raise ValueError(f"{where} do not split into sequence-parallel groups of {sp}")
    dp = n_gpus // sp
    mini = actor.ppo_mini_batch_size * rollout.n
    if mini % dp:
        raise ValueError(
            f"actor.ppo_mini_batch_size x rollout.n = {actor.ppo_mini_batch_size} x {rollout.n} = {mini} sequences "
            f"do not split evenly over {dp} data-parallel ranks ({where})"
        )
    step = data.train_batch_size * rollout.n
    if step % n_gpus:
        raise ValueError(
            f"data.train_batch_size x rollout.n = {data.train_batch_size} x {rollout.n} = {step} sequences "
            f"do not split evenly over {where}"
        )
    replica = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    if n_gpus % replica:
        raise ValueError(f"{where} do not split into vLLM replicas of {replica} GPUs (tensor x data x pipeline)")
    longest = data.max_prompt_length + data.max_response_length
    switches = {
        "actor.use_dynamic_bsz": actor.use_dynamic_bsz,
        "rollout.log_prob_use_dynamic_bsz": rollout.log_prob_use_dynamic_bsz,
        "ref.log_prob_use_dynamic_bsz": ref.log_prob_use_dynamic_bsz,
    }
    if len(set(switches.values())) != 1:
        raise ValueError(f"dynamic batching must be on or off for actor, rollout log-prob and ref together: {switches}")
    if actor.use_dynamic_bsz:
        budgets = {
            "actor.ppo_max_token_len_per_gpu": actor.ppo_max_token_len_per_gpu,
            "rollout.log_prob_max_token_len_per_gpu": rollout.log_prob_max_token_len_per_gpu,
            "ref.log_prob_max_token_len_per_gpu": ref.log_prob_max_token_len_per_gpu,
        }
        small = {k: v for k, v in budgets.items() if v < longest}
        if small:
            raise ValueError(f"token budgets below one full sequence (prompt + response = {longest}): {small}")
    if rollout.max_model_len is None or rollout.max_model_len < longest:
        raise ValueError(
            f"actor_rollout_ref.rollout.max_model_len={rollout.max_model_len} must be >= data.max_prompt_length + "
            f"data.max_response_length = {longest} (set it together with the data lengths)"
        )


def check_sft_layout(cfg: DictConfig) -> None:
    """The SFT global batch must split evenly over the data-parallel ranks; raises ``ValueError`` if not.

    verl's SFT trainer gives each rank ``data.train_batch_size // dp`` rows without checking
    (``verl/trainer/sft_trainer.py:240-241``): a remainder silently shrinks the batch, and more ranks than
    rows make it 0.
    """
    n_gpus = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    sp = cfg.engine.get("ulysses_sequence_parallel_size", 1) or 1
    dp = n_gpus // sp
    if n_gpus % sp or cfg.data.train_batch_size % dp:
        raise ValueError(
            f"data.train_batch_size={cfg.data.train_batch_size} does not split evenly over {dp} data-parallel ranks "
            f"({cfg.trainer.nnodes} node(s) x {cfg.trainer.n_gpus_per_node} GPUs, sequence parallel {sp})"
        )


@dataclass(frozen=True)
class OverlongRows:
    """The rows of one SFT parquet file that are longer than ``data.max_length`` tokens.

    Attributes:
        path: the file.
        rows: rows in the file.
        max_length: the limit (the recipe's ``data.max_length``).
        over: ``(row index in the file, token count)`` of each longer row, in file order.
    """

    path: str
    rows: int
    max_length: int
    over: tuple[tuple[int, int], ...]

    def describe(self, limit: int = 5) -> str:
        """``PATH: K of N rows (row i: L tokens, ...)``, listing at most ``limit`` rows."""
        shown = ", ".join(f"row {i}: {n} tokens" for i, n in self.over[:limit])
        more = f", ... {len(self.over) - limit} more" if len(self.over) > limit else ""
        return f"{self.path}: {len(self.over)} of {self.rows} rows ({shown}{more})"


def sft_token_lengths(cfg: DictConfig, path: str) -> list[int]:
    """Token count of every row of ``path`` exactly as verl's SFT trainer will tokenize it.

    Runs verl's own code: the tokenizer and processor that ``HFModelConfig`` builds from ``cfg.model``
    (tokenizer path, custom chat template), and the dataset class of ``verl.trainer.sft_trainer.create_sft_dataset``
    (``MultiTurnSFTDataset`` unless ``data.custom_cls``) with the recipe's ``data`` section, except that nothing
    is truncated or padded. verl's per-message vs. whole-conversation template check runs on every row as well, so
    a template mismatch (``data.ignore_input_ids_mismatch``) also fails here, before launch.
    """
    from verl.trainer.sft_trainer import create_sft_dataset
    from verl.utils.config import omega_conf_to_dataclass

    model = omega_conf_to_dataclass(cfg.model)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(max_length=sys.maxsize, pad_mode="no_padding", truncation="error")
    dataset = create_sft_dataset([path], OmegaConf.create(data), model.tokenizer, model.processor)
    return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]


def find_overlong_rows(cfg: DictConfig) -> dict[str, list[OverlongRows]]:
    """``{"train": [...], "val": [...]}``: one ``OverlongRows`` per file of ``data.train_files`` / ``data.val_files``.

    verl's SFT dataset raises on the first row over ``data.max_length`` when ``data.truncation`` is ``error``
    (``verl/utils/dataset/multiturn_sft_dataset.py:391,406``), which stops the run mid-epoch.
    """
    out: dict[str, list[OverlongRows]] = {}
    for split, files in (("train", cfg.data.train_files), ("val", cfg.data.val_files)):
        paths = [] if files is None else [files] if isinstance(files, str) else list(files)
        out[split] = []
        for path in paths:
            lengths = sft_token_lengths(cfg, path)
            over = tuple((i, n) for i, n in enumerate(lengths) if n > cfg.data.max_length)
            out[split].append(OverlongRows(str(path), len(lengths), int(cfg.data.max_length), over))
    return out


def drop_overlong_rows(found: OverlongRows, out_path: Path) -> Path:
    """Write ``found.path`` without its over-long rows to ``out_path`` (parquet, schema kept) and a manifest next to it.

    The manifest ``<out_path>.manifest.json`` names the source file, the limit, and each dropped row with its
    token count. Both are written atomically. Returns ``out_path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from verl_personadual.atomic import atomic_write, atomic_write_text

    table = pq.read_table(found.path)
    if table.num_rows != found.rows:
        raise ValueError(f"{found.path} has {table.num_rows} rows, but {found.rows} were checked: it changed")
    dropped = {i for i, _ in found.over}
    kept = table.take(pa.array([i for i in range(table.num_rows) if i not in dropped], type=pa.int64()))
    atomic_write(out_path, lambda tmp: pq.write_table(kept, tmp))
    manifest = {
        "source": found.path,
        "max_length": found.max_length,
        "rows": found.rows,
        "kept": kept.num_rows,
        "dropped": [{"row": i, "tokens": n} for i, n in found.over],
    }
    atomic_write_text(Path(f"{out_path}.manifest.json"), json.dumps(manifest, indent=2) + "\n")
    return out_path


def validate(stage: str, cfg: DictConfig) -> None:
    """verl's own checks for the stage, then ours; raises on the first problem.

    RL: ``verl.utils.config.validate_config`` exactly as ``main_ppo.main`` calls it (it converts the actor
    section to its dataclass and checks batch divisibility), the rollout and checkpoint-engine dataclass
    conversions verl's workers do, the DualGRPO namespace, and ``check_rl_layout``. SFT: the dataclass
    conversions of ``SFTTrainer._build_config`` that need no model on disk (engine, optim, checkpoint, profiler)
    and ``check_sft_layout``.
    """
    from verl.utils.config import omega_conf_to_dataclass

    if stage == "rl":
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config

        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout.checkpoint_engine)
        if cfg.algorithm.adv_estimator == ESTIMATOR:
            DualGRPOConfig.from_algorithm(cfg.algorithm)
        check_rl_layout(cfg)
        check_cpu_vllm_rollout(cfg)
    else:
        for section in ("engine", "optim", "checkpoint", "profiler"):
            omega_conf_to_dataclass(cfg[section])
        check_sft_layout(cfg)


def launch_command(
    stage: str, cfg: DictConfig, overrides: Sequence[str], rdzv_endpoint: str | None = None
) -> list[str]:
    """The command that runs the composed recipe with verl (torchrun for SFT, main_ppo for RL).

    SFT on CPU (``trainer.device=cpu``): ``verl_personadual.cpu.sft``, verl's SFT trainer on a gloo process group.
    SFT on one node: ``torchrun --standalone``. On ``trainer.nnodes > 1`` nodes: torchrun with the c10d
    rendezvous at ``rdzv_endpoint`` (``HOST:PORT`` of one of the nodes), to be started with the same arguments
    on every node; the run id is the experiment name. RL: ``main_ppo``, which places its workers on the Ray
    cluster itself (start the cluster first for several nodes, see recipes/README.md).

    Hydra's run directory (``.hydra/`` with the composed config, and the job's log file) is
    ``<trainer.default_local_dir>/hydra`` unless an override sets ``hydra.run.dir``: nothing lands in the working
    directory.

    Raises:
        ValueError: multi-node SFT without ``rdzv_endpoint``.
    """
    spec = STAGES[stage]
    run_dir = [] if any(o.startswith("hydra.run.dir=") for o in overrides) else [
        f"hydra.run.dir={_quote(f'{cfg.trainer.default_local_dir}/{HYDRA_RUN_SUBDIR}')}"]
    hydra_args = ["--config-path", str(CONFIG_DIR), "--config-name", spec.config_name, *run_dir, *overrides]
    if stage == "sft" and cfg.trainer.device == CPU_DEVICE:
        return [sys.executable, "-m", CPU_SFT_MODULE, *hydra_args]
    if stage == "sft":
        gpus = f"--nproc_per_node={cfg.trainer.n_gpus_per_node}"
        if cfg.trainer.nnodes == 1:
            launcher = ["torchrun", "--standalone", "--nnodes=1", gpus]
        elif rdzv_endpoint is None:
            raise ValueError(
                f"multi-node SFT (trainer.nnodes={cfg.trainer.nnodes}) needs --rdzv-endpoint HOST:PORT, and the same "
                "command started on every node (see recipes/README.md)"
            )
        else:
            launcher = [
                "torchrun",
                f"--nnodes={cfg.trainer.nnodes}",
                gpus,
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={rdzv_endpoint}",
                f"--rdzv_id={cfg.trainer.experiment_name}",
            ]
        return [*launcher, "-m", spec.verl_module, *hydra_args]
    return [sys.executable, "-m", spec.verl_module, *hydra_args]


def output_paths(stage: str, cfg: DictConfig) -> dict[str, str]:
    """Where a run of the composed recipe writes its checkpoints and the model the next step uses. verl's SFT
    trainer always saves the last step; its RL trainer saves nothing unless ``trainer.save_freq`` is positive, and
    then no folder is named."""
    root = str(cfg.trainer.default_local_dir)
    if stage == "sft":
        return {"checkpoints": root, "hf_model (input of the RL stage)": f"{root}/global_step_<last>/huggingface"}
    save_freq = int(cfg.trainer.save_freq)
    if save_freq <= 0:
        return {"checkpoints": f"none: trainer.save_freq={save_freq}, so verl saves no checkpoint (set it > 0 to keep "
                               "the trained model)"}
    return {
        "checkpoints": root,
        "actor shards (convert with verl.model_merger, see recipes/README.md)": f"{root}/global_step_<N>/actor",
    }


_CANNOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_ALREADY_THERE = re.compile(r"Could not append to config\. An item is already at '([^']+)'")


def _unknown_key_message(stage: str, key: str, overrides: Sequence[str], err_text: str) -> str:
    """One line for an override that cannot apply to ``key``: when a component of ``key`` does not exist, the
    deepest existing section, its keys and the closest one (read from the recipe composed without that override)."""
    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        node: object = compose(stage, rest)
    except Exception:  # another override fails too: name this key without the list
        return f"unknown config key {key!r} (prefix it with '+' only to add a key the config does not define)"
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return f"cannot set {key!r}: {'.'.join(parts[:depth])} is a value, not a section"
        if part not in node:
            break
        node = node[part]
    else:  # the key exists: the value is what does not fit
        detail = [line.strip() for line in err_text.splitlines()[1:] if line.strip()]
        return f"cannot set {key!r}: {detail[0] if detail else 'Hydra refused the value'}"
    section = ".".join(parts[:depth]) or "<top level>"
    known = sorted(str(k) for k in node.keys())
    guess = closest(parts[depth], known)
    hint = f"; did you mean {'.'.join(parts[:depth] + [guess])!r}?" if guess else ""
    return f"unknown config key {key!r}; known keys under {section}: {', '.join(known)}{hint}"


def explain_composition_error(stage: str, overrides: Sequence[str], err: Exception) -> str:
    """One line for a Hydra composition error of ``overrides`` (module docstring)."""
    text = str(err)
    found = _CANNOT_OVERRIDE.search(text)
    if found:
        return _unknown_key_message(stage, found.group(1), overrides, text)
    found = _ALREADY_THERE.search(text)
    if found:
        return f"{found.group(1)} already exists in the recipe: drop the '+' ({found.group(1)}=VALUE)"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines() if line.strip()]
    return f"cannot apply the overrides: {' '.join(lines) or type(err).__name__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verl_personadual.recipes",
        description=(
            "Compose a PersonaDual recipe against verl's real Hydra config, validate it with verl's own checks, "
            "then start verl (or, with --dry-run, print the fully composed config and the command, and exit). "
            "Before an SFT run, every row of the data is tokenized as verl's SFT trainer will, and rows longer "
            "than data.max_length stop the launch (or are dropped with --drop-overlong). "
            "Arguments after `--` are extra Hydra overrides, e.g. `-- trainer.n_gpus_per_node=4`."
        ),
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{sft,rl}")
    for stage, help_text in (("sft", "Stage 1: SFT on both modes"), ("rl", "Stage 2: DualGRPO (or an ablation)")):
        p = sub.add_parser(stage, help=help_text, description=help_text)
        p.add_argument("--backbone", required=True, choices=backbones(stage), help="recipe backbone")
        p.add_argument(
            "--model",
            required=True,
            help="model to train: SFT = base checkpoint with mode tokens; RL = the SFT stage's huggingface/ dir",
        )
        p.add_argument("--train-files", required=True, nargs="+", help="training parquet file(s)")
        p.add_argument(
            "--val-files", nargs="+", default=[], required=stage == "rl", help="validation parquet file(s)"
        )
        if stage == "rl":
            p.add_argument("--ablation", default=NO_ABLATION, choices=ablations(), help="ablation / baseline")
        p.add_argument(
            "--output-dir", default=None, help="checkpoint directory (default: ./checkpoints/persona_dual/<experiment>)"
        )
        p.add_argument(
            "--nnodes",
            type=int,
            default=None,
            help=(
                "nodes (default: the backbone's, 1). Above 1: run this once, on the head node of a running Ray "
                "cluster; it sets trainer.nnodes and joins the cluster (ray_kwargs.ray_init.address=auto)"
                if stage == "rl"
                else "nodes (default: the backbone's, 1). Above 1: run the same command on every node, with "
                "--rdzv-endpoint"
            ),
        )
        if stage == "sft":
            p.add_argument(
                "--rdzv-endpoint",
                default=None,
                metavar="HOST:PORT",
                help="multi-node SFT: torchrun's c10d rendezvous address, the same on every node (e.g. node0:29400)",
            )
            p.add_argument(
                "--text-prefixes",
                action="store_true",
                help=(
                    "the model has no dedicated mode tokens: train on the prefixes as plain text (the RL stage then "
                    "needs `-- algorithm.dual_grpo.require_mode_tokens=false`); default: refuse such a model"
                ),
            )
            p.add_argument(
                "--drop-overlong",
                action="store_true",
                help=(
                    "train on copies of the data files without the rows longer than data.max_length (written "
                    "under <output-dir>/sft_data/ with a manifest of the dropped rows) instead of refusing to start"
                ),
            )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print the composed config and command; start nothing (the SFT data length check does not run)",
        )
    return parser


def _sft_data_check(args: argparse.Namespace, cfg: DictConfig) -> dict[str, list[str]] | None:
    """Run ``find_overlong_rows``; return replacement ``{"train": files, "val": files}`` or ``None`` if all fit.

    Raises ``ValueError`` with the offending files and rows unless ``args.drop_overlong``.
    """
    with contextlib.redirect_stdout(sys.stderr):  # verl's dataset prints progress
        found = find_overlong_rows(cfg)
    bad = [f for files in found.values() for f in files if f.over]
    if not bad:
        return None
    if not args.drop_overlong:
        listing = "\n  ".join(f.describe() for f in bad)
        raise ValueError(
            f"SFT rows longer than data.max_length={cfg.data.max_length} tokens (verl's SFT trainer stops on the "
            f"first one, data.truncation=error):\n  {listing}\nPass --drop-overlong to train without them, or "
            f"rebuild the data with `python -m data_preprocess.build_sft --tokenizer MODEL --max-length "
            f"{cfg.data.max_length}`."
        )
    out_dir = Path(cfg.trainer.default_local_dir) / "sft_data"
    files: dict[str, list[str]] = {}
    for split, found_files in found.items():
        files[split] = []
        for i, f in enumerate(found_files):
            if f.over:
                target = out_dir / f"{split}{i}_{Path(f.path).stem}.max{f.max_length}.parquet"
                drop_overlong_rows(f, target)
                print(f"[persona_dual] dropped {f.describe()}; training on {target}", flush=True)
                files[split].append(str(target))
            else:
                files[split].append(f.path)
    return files


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(cli_args, hydra_overrides)``: the command line split at the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (verl's for a real run, 2 for a recipe or data problem: one
    ``error:`` line, ``run_cli``)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    argv, extra = split_overrides(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    with user_errors(ValueError):  # the recipe checks here and verl's validation raise ValueError on bad config
        check_model(args.model)
        check_files(args.train_files, "--train-files")
        check_files(args.val_files, "--val-files")
        train, val = args.train_files, args.val_files
        overrides, cfg, checks_log = _configure(args, extra, train, val)
        check_inputs(args.stage, args.model, cfg, train, val, text_prefixes=getattr(args, "text_prefixes", False))
        if args.stage == "sft" and not args.dry_run:
            replaced = _sft_data_check(args, cfg)
            if replaced is not None:
                train, val = replaced["train"], replaced["val"]
                overrides, cfg, checks_log = _configure(args, extra, train, val)
        _check_batch_fits(args.stage, cfg, train, val)
        sys.stderr.write(checks_log)  # verl's validation output, once every check passed
        command = launch_command(args.stage, cfg, overrides, getattr(args, "rdzv_endpoint", None))
    outputs = output_paths(args.stage, cfg)
    if args.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        print(f"# dry run: nothing started. The run would be:\n# {shlex.join(command)}", file=sys.stderr)
        for what, path in outputs.items():
            print(f"# {what}: {path}", file=sys.stderr)
        return 0
    print(f"[persona_dual] {args.stage}: running {shlex.join(command)}", flush=True)
    for what, path in outputs.items():
        print(f"[persona_dual] {what}: {path}", flush=True)
    return subprocess.call(command, env={**os.environ, **run_env(cfg)})


#: What to do about an SFT base model without dedicated mode tokens.
SFT_MODE_TOKENS_HINT = (
    "add them with `python -m verl_personadual.add_mode_tokens`, or train on plain-text prefixes with --text-prefixes "
    "(the RL stage then needs algorithm.dual_grpo.require_mode_tokens=false)"
)


def check_inputs(
    stage: str, model: str, cfg: DictConfig, train_files: Sequence[str], val_files: Sequence[str],
    text_prefixes: bool = False,
) -> None:
    """The inputs of a run, before verl or Ray starts (and in ``--dry-run``): every data file as the stage reads it
    (``preflight.check_rl_parquet`` / ``check_sft_parquet``, with the recipe's prompt / messages key) and the mode
    prefixes of the model's tokenizer as the run resolves them (RL: ``algorithm.dual_grpo.require_mode_tokens``;
    SFT: dedicated tokens unless ``text_prefixes``). Raises PreflightError naming file / row / column or model."""
    files = [("--train-files", f) for f in train_files] + [("--val-files", f) for f in val_files]
    if stage == "rl":
        agents = known_agent_loops()
        for flag, path in files:
            check_rl_parquet(path, flag, str(cfg.data.prompt_key), agents)
        tokenizer = cfg.actor_rollout_ref.model.get("tokenizer_path") or model
        check_mode_tokens(str(tokenizer), DualGRPOConfig.from_algorithm(cfg.algorithm).prefix_requirement)
    else:
        for flag, path in files:
            check_sft_parquet(path, flag, str(cfg.data.messages_key))
        if not text_prefixes:
            check_mode_tokens(model, True, hint=SFT_MODE_TOKENS_HINT)


def _rows(paths: Sequence[str], flag: str) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        try:
            total += pq.ParquetFile(Path(path).expanduser()).metadata.num_rows
        except Exception as err:  # pyarrow raises several types for a file that is not parquet
            raise PreflightError(f"{flag} {path}: not a readable parquet file ({type(err).__name__})") from None
    return total


def _check_batch_fits(stage: str, cfg: DictConfig, train_files: Sequence[str], val_files: Sequence[str]) -> None:
    """verl drops the last partial batch: fewer training rows than ``data.train_batch_size`` means no training step
    (SFT then divides by zero), and for SFT, whose validation uses that batch size too, no validation batch
    (``val/loss`` nan)."""
    batch = int(cfg.data.train_batch_size)
    checks = [("--train-files", train_files, "no training step would run")]
    if stage == "sft" and val_files:
        checks.append(("--val-files", val_files, "validation would have no batch (val/loss nan)"))
    for flag, paths, effect in checks:
        rows = _rows(paths, flag)
        if rows == 0:
            raise PreflightError(f"{flag}: no rows")
        if rows < batch:
            raise PreflightError(
                f"{flag}: {rows} rows, fewer than data.train_batch_size={batch}; verl drops partial batches, so "
                f"{effect}: give more rows or a smaller batch (`-- data.train_batch_size=N`, N <= {rows})"
            )


def _configure(
    args: argparse.Namespace, extra: Sequence[str], train_files: Sequence[str], val_files: Sequence[str]
) -> tuple[list[str], DictConfig, str]:
    """Overrides, the composed and validated recipe, and what verl's validation printed; every failure is a
    one-line PreflightError or ValueError."""
    overrides = build_overrides(
        stage=args.stage,
        backbone=args.backbone,
        model=args.model,
        train_files=train_files,
        val_files=val_files,
        ablation=getattr(args, "ablation", NO_ABLATION),
        output_dir=args.output_dir,
        extra=extra,
        nnodes=args.nnodes,
    )
    cfg, checks_log = compose_and_validate(args.stage, overrides)
    return overrides, cfg, checks_log


def compose_checked(stage: str, overrides: Sequence[str]) -> DictConfig:
    """:func:`compose`, with a Hydra composition error turned into a one-line PreflightError
    (:func:`explain_composition_error`: an unknown key with the known keys under its section and the closest)."""
    from hydra.errors import HydraException

    try:
        return compose(stage, overrides)
    except HydraException as err:
        raise PreflightError(explain_composition_error(stage, overrides, err)) from None


def compose_and_validate(stage: str, overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The composed recipe (:func:`compose_checked`) after :func:`validate`, and what verl's validation printed
    (kept off stdout). Every failure is one line: PreflightError, or ValueError from our or verl's checks."""
    cfg = compose_checked(stage, overrides)
    progress = io.StringIO()
    with contextlib.redirect_stdout(progress):
        try:
            validate(stage, cfg)
        except AssertionError as err:  # verl checks some settings with assert
            raise ValueError(f"verl rejects the composed config: {err}") from None
    return cfg, progress.getvalue()


if __name__ == "__main__":
    sys.exit(main())
