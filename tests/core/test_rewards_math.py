"""Math equivalence: the fast path, and the pool of warm math-verify children.

No assertion here depends on how fast the machine is: every limit is far above the cost it bounds (a warm check
costs milliseconds; limits are 1 s of CPU or more), and the paths that must time out use a child that never
answers or an expression that never finishes, whatever the limit.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from verl_personadual.core.prompts import format_answer
from verl_personadual.core.rewards import compute_score
from verl_personadual.core.rewards.mathcheck import (
    SERVER_FILE,
    WORKERS_ENV,
    MathPool,
    MathServerError,
    fast_math_equal,
    math_equal,
)
from verl_personadual.core.rewards.mathserver import verify_pair

#: Never finishes (a power tower), but stays interruptible by the child's CPU timer and small in memory.
ENDLESS = "9^{9^{9^{9}}}"
#: Seconds a test waits for a background request to reach a child before failing (a hang guard, not a deadline).
HANG_GUARD_S = 300.0
#: A child that says ready and then never answers anything.
SILENT_CHILD = [
    sys.executable,
    "-c",
    "import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\ntime.sleep(3600)",
]


def slow_start_child(delay_s: float) -> list[str]:
    """The real math child, sleeping ``delay_s`` before it starts (a slow machine's start-up)."""
    code = (
        f"import runpy, sys, time\ntime.sleep({delay_s})\nsys.argv = [{SERVER_FILE!r}, '--serve']\n"
        f"runpy.run_path({SERVER_FILE!r}, run_name='__main__')"
    )
    return [sys.executable, "-I", "-c", code]


@pytest.fixture
def pool():
    p = MathPool(size=2)
    yield p
    p.close()


def test_fast_path_decides_simple_pairs_without_sympy() -> None:
    assert fast_math_equal("\\frac{3}{4}", "0.75") is True
    assert fast_math_equal("-\\frac{3}{4}", "-3/4") is True
    assert fast_math_equal("$12$", " 12. ") is True
    assert fast_math_equal("12", "13") is False
    assert fast_math_equal("1,000", "1000") is True
    assert fast_math_equal("2", "\\sqrt{4}") is None
    assert fast_math_equal("2", "") is False
    assert fast_math_equal("2", "1" * 5000) is False  # too long to be an answer (and to convert)


def test_start_up_is_not_charged_to_the_first_request() -> None:
    # The child needs 4 s to start; the request's limit is 1 s (wall backstop 2 * 1 + 1 = 3 s). Were start-up
    # charged to the request, the first verdict would be "not equal"; it must be the true one.
    p = MathPool(size=1, command=slow_start_child(4.0))
    try:
        assert p.equal("2", "\\sqrt{4}", timeout_s=1.0) is True
        assert (p.starts, p.kills) == (1, 0)
    finally:
        p.close()


def test_warm_checks_with_per_request_limits(pool) -> None:
    assert pool.equal("2", "\\sqrt{4}", timeout_s=30.0) is True
    assert pool.equal("x^2+1", "1 + x^{2}", timeout_s=30.0) is True
    assert pool.equal("\\frac{1}{2}", "\\frac{1}{3}", timeout_s=30.0) is False
    # An endless check is stopped by its own (small) limit; the child survives and the next check, with a
    # generous limit, is right.
    assert pool.equal("5", ENDLESS, timeout_s=1.0) is False
    assert pool.equal("3", "\\sqrt{9}", timeout_s=30.0) is True
    assert pool.starts <= 2


def test_a_silent_child_is_killed_and_replaced_outside_the_next_request() -> None:
    p = MathPool(size=1, command=SILENT_CHILD)
    try:
        assert p.equal("2", "\\sqrt{4}", timeout_s=0.5) is False
        assert (p.starts, p.kills) == (1, 1)
        assert p.equal("2", "\\sqrt{4}", timeout_s=0.5) is False
        assert (p.starts, p.kills) == (2, 2)
    finally:
        p.close()


def test_one_endless_check_does_not_stall_the_others(pool) -> None:
    blocked: list[bool] = []
    worker = threading.Thread(target=lambda: blocked.append(pool.equal("5", ENDLESS, timeout_s=600.0)))
    worker.start()
    # wait until the endless request holds its child (on a busy machine the thread may start late, and a child
    # still starting when close() runs is not one close() can stop); the bound only guards against a hang
    deadline = time.monotonic() + HANG_GUARD_S
    while pool.busy < 1 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.busy == 1, "the endless request never reached a child"
    try:
        # The endless check holds one child for up to 600 s of CPU; the other child answers these meanwhile.
        others = [("2", "\\sqrt{4}"), ("\\pi", "3"), ("7", "\\sqrt{49}")]
        assert [pool.equal(gold, pred, 60.0) for gold, pred in others] == [True, False, True]
        assert worker.is_alive() and blocked == []
    finally:
        pool.close()  # kills the busy child too: its request answers "not equal"
        worker.join(60)
    assert blocked == [False]


def test_concurrent_callers_get_their_own_verdicts(pool) -> None:
    pairs = [("2", "\\sqrt{4}", True), ("2", "\\sqrt{5}", False), ("x+1", "1+x", True), ("\\pi", "3.14", False)] * 6
    with ThreadPoolExecutor(8) as ex:
        verdicts = list(ex.map(lambda p: pool.equal(p[0], p[1], 60.0), pairs))
    assert verdicts == [p[2] for p in pairs]
    assert pool.starts <= 2 and pool.kills == 0


def test_closed_pool_starts_new_children_on_demand(pool) -> None:
    assert pool.equal("2", "\\sqrt{4}", 30.0) is True
    pool.close()
    assert pool.equal("3", "\\sqrt{9}", 30.0) is True
    assert pool.starts == 2


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([sys.executable, "-c", "print('error ModuleNotFoundError: no math_verify', flush=True)"], "no math_verify"),
        ([sys.executable, "-c", "raise SystemExit(3)"], "exit status 3"),
        (["/nonexistent/python"], "cannot run"),
    ],
)
def test_a_child_that_cannot_start_is_an_error_not_a_verdict(command, message) -> None:
    p = MathPool(size=1, command=command)
    with pytest.raises(MathServerError, match=message):
        p.equal("2", "\\sqrt{4}")
    assert p.starts == 0


def test_pool_size_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert MathPool().size == 3
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(MathServerError, match=WORKERS_ENV):
        MathPool()


def test_in_process_verify_pair_and_shared_pool() -> None:
    assert verify_pair("\\frac{1}{2}", "0.5") is True
    assert verify_pair("5", ENDLESS, limit_s=1.0) is False
    assert math_equal("2", "\\sqrt{4}", 30.0) is True
    out = compute_score("math500", "So $x=\\sqrt{4}$.\n" + format_answer("\\sqrt{4}"), "2", {}, math_timeout_s=30.0)
    assert (out["score"], out["pred"]) == (1.0, "\\sqrt{4}")
