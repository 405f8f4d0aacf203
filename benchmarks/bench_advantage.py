"""Time the dual_grpo estimator against verl's own GRPO estimator on the same batches.

    python benchmarks/bench_advantage.py [--repeats 5] [--threads 1]

Batches: B rows x 1024 response tokens (B = 512 and 8192), 8 rollouts per prompt (4 per mode), response
lengths uniform in [1, 1024] (right-padded mask), a 0/1-ish reward at each row's last token. Both estimators
go through verl's registry (`get_adv_estimator_fn`). Prints the median seconds and the ratio dual/grpo
(target: <= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from verl.trainer.ppo.core_algos import get_adv_estimator_fn

from verl_personadual.core.advantage import row_modes


def make_batch(rows: int, length: int, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (rows,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(rows, length)
    rewards[torch.arange(rows), lengths - 1] = torch.randint(0, 2, (rows,), generator=gen).float()
    index = np.array([f"prompt-{i // n}" for i in range(rows)], dtype=object)
    modes = (np.arange(rows) % n >= n // 2).astype(np.int8)
    return rewards, mask, index, modes


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: single core)")
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 8192])
    parser.add_argument("--length", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    grpo = get_adv_estimator_fn("grpo")
    dual = get_adv_estimator_fn("dual_grpo")
    algo = {"dual_grpo": {}}
    print(f"{'batch':>14} {'verl grpo s':>12} {'dual_grpo s':>12} {'ratio':>7}")
    for rows in args.rows:
        rewards, mask, index, modes = make_batch(rows, args.length, n=8)
        plen = np.where(modes >= 0, 1, 0)
        t_grpo = median_seconds(lambda: grpo(rewards, mask, index=index), args.repeats)

        def run_dual():
            with row_modes(modes, plen):
                dual(rewards, mask, index=index, config=algo)

        t_dual = median_seconds(run_dual, args.repeats)
        print(f"{rows:>6}x{args.length:<7} {t_grpo:>12.4f} {t_dual:>12.4f} {t_dual / t_grpo:>7.3f}")


if __name__ == "__main__":
    main()
