"""Launching a composed recipe: verl's entry-point command line, the environment it runs in (plugin loading,
thread counts) and the output paths it will write.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import psutil
from omegaconf import DictConfig, OmegaConf

from verl_personadual.apps.recipes.compose import CONFIG_DIR, STAGES, quote
from verl_personadual.core.names import CPU_DEVICE, CPU_ROLLOUT
from verl_personadual.data.preflight import PreflightError

#: transfer_queue's torch threads for its puts and gets unless TQ_NUM_THREADS is set (transfer_queue/client.py).
TQ_DEFAULT_THREADS = 8


#: torch threads of every process of a CPU run on the ``hf_cpu`` path (its trainer, Ray workers and rollout server)
#: unless OMP_NUM_THREADS is set: the tiny models' operations are too small to gain from more, and on a machine
#: that other processes keep busy, torch's default (one thread per physical core) makes every operation wait for
#: its slowest thread (benchmarks/bench_cpu_path.py: README "Where a CPU run's time goes").
CPU_TORCH_THREADS = 1


#: Environment for launched runs: verl imports the plugin without swallowing errors (see plugin.py).
RUN_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_personadual.core.plugin"}


#: Hydra's run directory of a launched command, under ``trainer.default_local_dir`` (see :func:`launch_command`).
HYDRA_RUN_SUBDIR = "hydra"


#: Module that runs verl's SFT trainer on CPU.
CPU_SFT_MODULE = "verl_personadual.core.cpu.sft"


def run_env(cfg: DictConfig) -> dict[str, str]:
    """Environment variables of a launched run of ``cfg``: :data:`RUN_ENV`, plus ``VERL_PLATFORM=cpu`` when it runs
    on CPU (verl then never probes for an accelerator), plus ``TQ_NUM_THREADS`` = the physical cores when there are
    fewer than transfer_queue's default of 8 threads (else it clamps to them itself, with a warning on every
    put / get: hundreds of lines per run) and the variable is not set already, plus ``OMP_NUM_THREADS`` =
    :data:`CPU_TORCH_THREADS` for a CPU run whose rollout (if any) is ``hf_cpu`` and the variable is not set already
    (Ray's workers inherit it; the vLLM rollout sets its own threads)."""
    env = dict(RUN_ENV)
    rollout = OmegaConf.select(cfg, "actor_rollout_ref.rollout.name", default=CPU_ROLLOUT)
    if "OMP_NUM_THREADS" not in os.environ and cfg.trainer.device == CPU_DEVICE and rollout == CPU_ROLLOUT:
        env["OMP_NUM_THREADS"] = str(CPU_TORCH_THREADS)
    cores = psutil.cpu_count(logical=False)
    if "TQ_NUM_THREADS" not in os.environ and cores and cores < TQ_DEFAULT_THREADS:
        env["TQ_NUM_THREADS"] = str(cores)
    if cfg.trainer.device == CPU_DEVICE:
        env["VERL_PLATFORM"] = CPU_DEVICE
    return env


def launch_command(
    stage: str, cfg: DictConfig, overrides: Sequence[str], rdzv_endpoint: str | None = None
) -> list[str]:
    """The command that runs the composed recipe with verl (torchrun for SFT, main_ppo for RL).

    SFT on CPU (``trainer.device=cpu``): ``verl_personadual.core.cpu.sft``, verl's SFT trainer on a gloo process group.
    SFT on one node: ``torchrun --standalone``. On ``trainer.nnodes > 1`` nodes: torchrun with the c10d
    rendezvous at ``rdzv_endpoint`` (``HOST:PORT`` of one of the nodes), to be started with the same arguments
    on every node; the run id is the experiment name. RL: ``main_ppo``, which places its workers on the Ray
    cluster itself (start the cluster first for several nodes, see recipes/README.md).

    Hydra's run directory (``.hydra/`` with the composed config, and the job's log file) is
    ``<trainer.default_local_dir>/hydra`` unless an override sets ``hydra.run.dir``: nothing lands in the working
    directory.

    Raises:
        PreflightError: multi-node SFT without ``rdzv_endpoint``.
    """
    spec = STAGES[stage]
    run_dir = (
        []
        if any(o.startswith("hydra.run.dir=") for o in overrides)
        else [f"hydra.run.dir={quote(f'{cfg.trainer.default_local_dir}/{HYDRA_RUN_SUBDIR}')}"]
    )
    hydra_args = ["--config-path", str(CONFIG_DIR), "--config-name", spec.config_name, *run_dir, *overrides]
    if stage == "sft" and cfg.trainer.device == CPU_DEVICE:
        return [sys.executable, "-m", CPU_SFT_MODULE, *hydra_args]
    if stage == "sft":
        gpus = f"--nproc_per_node={cfg.trainer.n_gpus_per_node}"
        if cfg.trainer.nnodes == 1:
            launcher = ["torchrun", "--standalone", "--nnodes=1", gpus]
        elif rdzv_endpoint is None:
            raise PreflightError(
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
        return {
            "checkpoints": f"none: trainer.save_freq={save_freq}, so verl saves no checkpoint (set it > 0 to keep "
            "the trained model)"
        }
    return {
        "checkpoints": root,
        "actor shards (convert with verl.model_merger, see recipes/README.md)": f"{root}/global_step_<N>/actor",
    }
