"""Validating a composed recipe before launch: data layout against the config, SFT rows too long for
``max_length``, batch sizes that the data cannot fill, the checkpoint's mode tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from verl_personadual.apps.recipes.compose import (
    NO_ABLATION,
    build_overrides,
    compose_checked,
)
from verl_personadual.core.config import DualGRPOConfig
from verl_personadual.core.cpu.vllm_settings import check_cpu_vllm_rollout
from verl_personadual.data.preflight import (
    PreflightError,
    check_mode_tokens,
    check_rl_parquet,
    check_sft_parquet,
    known_agent_loops,
)
from verl_personadual.utils.atomic import write_json


def check_rl_layout(cfg: DictConfig) -> None:
    """Checks of the composed RL config that verl itself makes only once workers are running (or never).

    Raises ``PreflightError`` naming the keys, for:

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
        raise PreflightError(f"{where} do not split into sequence-parallel groups of {sp}")
    dp = n_gpus // sp
    mini = actor.ppo_mini_batch_size * rollout.n
    if mini % dp:
        raise PreflightError(
            f"actor.ppo_mini_batch_size x rollout.n = {actor.ppo_mini_batch_size} x {rollout.n} = {mini} sequences "
            f"do not split evenly over {dp} data-parallel ranks ({where})"
        )
    step = data.train_batch_size * rollout.n
    if step % n_gpus:
        raise PreflightError(
            f"data.train_batch_size x rollout.n = {data.train_batch_size} x {rollout.n} = {step} sequences "
            f"do not split evenly over {where}"
        )
    replica = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    if n_gpus % replica:
        raise PreflightError(f"{where} do not split into vLLM replicas of {replica} GPUs (tensor x data x pipeline)")
    longest = data.max_prompt_length + data.max_response_length
    switches = {
        "actor.use_dynamic_bsz": actor.use_dynamic_bsz,
        "rollout.log_prob_use_dynamic_bsz": rollout.log_prob_use_dynamic_bsz,
        "ref.log_prob_use_dynamic_bsz": ref.log_prob_use_dynamic_bsz,
    }
    if len(set(switches.values())) != 1:
        raise PreflightError(
            f"dynamic batching must be on or off for actor, rollout log-prob and ref together: {switches}"
        )
    if actor.use_dynamic_bsz:
        budgets = {
            "actor.ppo_max_token_len_per_gpu": actor.ppo_max_token_len_per_gpu,
            "rollout.log_prob_max_token_len_per_gpu": rollout.log_prob_max_token_len_per_gpu,
            "ref.log_prob_max_token_len_per_gpu": ref.log_prob_max_token_len_per_gpu,
        }
        small = {k: v for k, v in budgets.items() if v < longest}
        if small:
            raise PreflightError(f"token budgets below one full sequence (prompt + response = {longest}): {small}")
    if rollout.max_model_len is None or rollout.max_model_len < longest:
        raise PreflightError(
            f"actor_rollout_ref.rollout.max_model_len={rollout.max_model_len} must be >= data.max_prompt_length + "
            f"data.max_response_length = {longest} (set it together with the data lengths)"
        )


def check_step_counts(cfg: DictConfig) -> None:
    """``trainer.total_epochs`` >= 1 and ``trainer.total_training_steps`` null or >= 1 (both stages); raises
    ``PreflightError`` naming the key.

    verl takes both as they are (``trainer/ppo/v1/trainer_base.py:767-771``, ``trainer/sft_trainer.py:181-184``):
    0 epochs or a step count below 1 runs no training step, and the learning-rate schedule is sized with it.
    """
    counts = {"trainer.total_epochs": (cfg.trainer.total_epochs, False)}
    counts["trainer.total_training_steps"] = (cfg.trainer.get("total_training_steps"), True)
    for key, (value, null_ok) in counts.items():
        if value is None and null_ok:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            allowed = (
                "null (from the data and trainer.total_epochs) or an integer >= 1" if null_ok else "an integer >= 1"
            )
            raise PreflightError(f"{key} must be {allowed}, got {value!r}")


def check_sft_layout(cfg: DictConfig) -> None:
    """The SFT global batch must split evenly over the data-parallel ranks; raises ``PreflightError`` if not.

    verl's SFT trainer gives each rank ``data.train_batch_size // dp`` rows without checking
    (``verl/trainer/sft_trainer.py:240-241``): a remainder silently shrinks the batch, and more ranks than
    rows make it 0.
    """
    n_gpus = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    sp = cfg.engine.get("ulysses_sequence_parallel_size", 1) or 1
    dp = n_gpus // sp
    if n_gpus % sp or cfg.data.train_batch_size % dp:
        raise PreflightError(
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

    from verl_personadual.utils.atomic import atomic_write

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
    write_json(Path(f"{out_path}.manifest.json"), manifest)
    return out_path


@contextlib.contextmanager
def _verl_checks() -> Iterator[None]:
    """verl's config checks in the block: the ValueError or AssertionError they raise for a bad config becomes a
    PreflightError with the same message (an assertion's prefixed ``verl rejects the composed config:``)."""
    try:
        yield
    except AssertionError as err:  # verl checks some settings with assert
        raise PreflightError(f"verl rejects the composed config: {err}") from None
    except ValueError as err:
        raise PreflightError(str(err)) from err


def validate(stage: str, cfg: DictConfig) -> None:
    """verl's own checks for the stage, then ours; raises on the first problem.

    RL: ``verl.utils.config.validate_config`` exactly as ``main_ppo.main`` calls it (it converts the actor
    section to its dataclass and checks batch divisibility), the rollout and checkpoint-engine dataclass
    conversions verl's workers do, the DualGRPO namespace, what the training rows' forced-mode agent loop accepts
    (``DualGRPOConfig.check_forced_rollout``: ``rollout.n`` even and >= 2, ...), and ``check_rl_layout``. SFT: the
    dataclass conversions of ``SFTTrainer._build_config`` that need no model on disk (engine, optim, checkpoint,
    profiler) and ``check_sft_layout``. Both: ``check_step_counts``.
    """
    from verl.utils.config import omega_conf_to_dataclass

    if stage == "rl":
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config

        with _verl_checks():
            validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
            omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
            omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout.checkpoint_engine)
        dual_grpo = DualGRPOConfig.from_algorithm(cfg.algorithm)
        dual_grpo.check_forced_rollout(int(cfg.actor_rollout_ref.rollout.n), cfg.algorithm.get("rollout_correction"))
        check_rl_layout(cfg)
        check_cpu_vllm_rollout(cfg)
    else:
        with _verl_checks():
            for section in ("engine", "optim", "checkpoint", "profiler"):
                omega_conf_to_dataclass(cfg[section])
        check_sft_layout(cfg)
    check_step_counts(cfg)


#: What to do about an SFT base model without dedicated mode tokens.
SFT_MODE_TOKENS_HINT = (
    "add them with `python -m verl_personadual.apps.add_mode_tokens`, or train on plain-text prefixes with "
    "--text-prefixes "
    "(the RL stage then needs algorithm.dual_grpo.require_mode_tokens=false)"
)


def check_inputs(
    stage: str,
    model: str,
    cfg: DictConfig,
    train_files: Sequence[str],
    val_files: Sequence[str],
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


def check_batch_fits(
    stage: str,
    cfg: DictConfig,
    train_files: Sequence[str],
    val_files: Sequence[str],
    dropped: Mapping[str, int] | None = None,
) -> None:
    """verl drops the last partial batch: fewer training rows than ``data.train_batch_size`` means no training step
    (SFT then divides by zero), and for SFT, whose validation uses that batch size too, no validation batch
    (``val/loss`` nan). ``dropped``: ``{"train": k, "val": k}``, rows the run leaves out of the files
    (``--drop-overlong``)."""
    batch = int(cfg.data.train_batch_size)
    dropped = dropped or {}
    checks = [("--train-files", train_files, "train", "no training step would run")]
    if stage == "sft" and val_files:
        checks.append(("--val-files", val_files, "val", "validation would have no batch (val/loss nan)"))
    for flag, paths, split, effect in checks:
        rows = _rows(paths, flag) - dropped.get(split, 0)
        if rows == 0:
            raise PreflightError(f"{flag}: no rows" + (" left without the over-long ones" if split in dropped else ""))
        if rows < batch:
            raise PreflightError(
                f"{flag}: {rows} rows, fewer than data.train_batch_size={batch}; verl drops partial batches, so "
                f"{effect}: give more rows or a smaller batch (`-- data.train_batch_size=N`, N <= {rows})"
            )


def configure(
    args: argparse.Namespace, extra: Sequence[str], train_files: Sequence[str], val_files: Sequence[str]
) -> tuple[list[str], DictConfig, str]:
    """Overrides, the composed and validated recipe, and what verl's validation printed; every failure is a
    one-line PreflightError or ConfigError."""
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


def compose_and_validate(stage: str, overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The composed recipe (:func:`compose_checked`) after :func:`validate`, and what verl's validation printed
    (kept off stdout). Every failure is one line: a PreflightError or ConfigError from our or verl's checks."""
    cfg = compose_checked(stage, overrides)
    progress = io.StringIO()
    with contextlib.redirect_stdout(progress):
        validate(stage, cfg)
    return cfg, progress.getvalue()
