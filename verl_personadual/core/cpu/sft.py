"""verl's SFT trainer on CPU: ``python -m verl_personadual.core.cpu.sft [hydra args]``.

The same as ``python -m verl.trainer.sft_trainer`` (same packaged config, same Hydra arguments, verl's
``SFTTrainer`` unchanged), except that torch.distributed is started on ``gloo``: verl's ``run_sft`` asks for
``cpu:gloo,<device>:<ccl>``, which torch refuses on the CPU platform ("Duplicate device type cpu"). Run it as
one process (the default: rank 0 of 1 on 127.0.0.1) or under ``torchrun --nproc_per_node N`` (ranks from the
environment). ``python -m verl_personadual.recipes sft --backbone cpu_tiny ...`` launches it for you.
"""

from __future__ import annotations

import os
import socket
from importlib import resources
from typing import Any

import hydra

__all__ = ["main", "run_sft_on_gloo"]

_VERL_CONFIG_DIR = str(resources.files("verl.trainer.config"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sft_on_gloo(config: Any) -> None:
    """verl's ``run_sft`` with a gloo process group (single process when no torchrun rank is set)."""
    import torch.distributed as dist
    from verl.trainer.sft_trainer import SFTTrainer

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group("gloo")
    try:
        SFTTrainer(config=config).fit()
    finally:
        dist.destroy_process_group()


@hydra.main(config_path=_VERL_CONFIG_DIR, config_name="sft_trainer_engine", version_base=None)
def main(config: Any) -> None:
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    run_sft_on_gloo(config)


if __name__ == "__main__":
    main()
