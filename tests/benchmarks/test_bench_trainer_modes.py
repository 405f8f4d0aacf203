"""The arithmetic of ``benchmarks/bench_trainer_modes.py``: step arrival times from verl's console lines ->
prompts/s over steps 2..N, and the summary over interleaved repeats (hand-computed expectations)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_trainer_modes", ROOT / "benchmarks" / "bench_trainer_modes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclasses of the script look their module up there
    spec.loader.exec_module(module)
    return module


# (arrival time in s, line) as the quickstart's timeline records one RL run's output
LOG = [
    (90.0, "(TaskRunner pid=7) Training Progress:   0%|          | 0/4"),
    (100.0, "(TaskRunner pid=7) step:1 - actor/pg_loss:0.125 - timing_s/gen:3.5"),
    (101.5, "(TaskRunner pid=7) local_global_step:1 - saved"),
    (104.0, "(TaskRunner pid=7) step:2 - actor/pg_loss:0.100 - timing_s/gen:0.7"),
    (108.0, "(TaskRunner pid=7) step:3 - actor/pg_loss:0.090 - timing_s/gen:0.8"),
    (108.5, "(TaskRunner pid=7) step:3 - actor/pg_loss:0.090 - timing_s/gen:0.8"),
    (113.0, "(TaskRunner pid=7) step:4 - actor/pg_loss:0.080 - timing_s/gen:0.6"),
    (114.0, "(TaskRunner pid=7) Training Progress: 100%|##########| 4/4"),
]


def test_prompts_per_second_over_steps_2_to_n_from_the_log_lines():
    bench = _bench()
    arrivals = bench.step_arrivals(LOG)
    # each step's first line; "local_global_step:1 - " is no step line
    assert arrivals == {1: 100.0, 2: 104.0, 3: 108.0, 4: 113.0}
    # steps 2..4: 3 steps x 8 prompts in 113 - 100 = 13 s
    assert bench.throughput(arrivals, batch=8) == pytest.approx(24 / 13)
    # a later step 0 line (validation before training) does not move the start: it is step 1's arrival
    assert bench.throughput({0: 95.0, **arrivals}, batch=8) == pytest.approx(24 / 13)


def test_throughput_needs_step_1_and_a_later_step():
    bench = _bench()
    with pytest.raises(ValueError, match=r"step 1 and a later step, got steps \[1\]"):
        bench.throughput({1: 100.0}, batch=8)
    with pytest.raises(ValueError, match=r"got steps \[2, 3\]"):
        bench.throughput({2: 104.0, 3: 108.0}, batch=8)


def test_spread_over_interleaved_repeats():
    bench = _bench()
    sync, colo = bench.spread({"sync": [2.0, 4.0, 3.0], "colocate_async": [3.0, 4.0, 4.5]})
    assert sync == bench.ModeSpread("sync", 3.0, 2.0, 4.0, 1.0, 1.0, 1.0)
    # mean 11.5 / 3; ratio of means (11.5 / 3) / 3; per-repeat ratios 3/2, 4/4, 4.5/3 -> 1.0..1.5
    assert colo.mode == "colocate_async"
    assert (colo.mean, colo.low, colo.high) == pytest.approx((11.5 / 3, 3.0, 4.5))
    assert colo.ratio_of_means == pytest.approx(11.5 / 9)
    assert (colo.pair_ratio_low, colo.pair_ratio_high) == pytest.approx((1.0, 1.5))


def test_spread_without_the_base_mode_or_with_uneven_repeats():
    bench = _bench()
    (only,) = bench.spread({"colocate_async": [3.0, 5.0]})
    assert only == bench.ModeSpread("colocate_async", 4.0, 3.0, 5.0, None, None, None)
    with pytest.raises(ValueError, match="same, non-zero number of repeats"):
        bench.spread({"sync": [2.0, 4.0], "colocate_async": [3.0]})
