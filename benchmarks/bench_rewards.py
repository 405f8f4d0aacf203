"""Reward throughput per task family on synthetic but realistic responses, pinned to one CPU core.

Each response is ~1 kB of step-by-step reasoning, then (by share) the prompt's JSON answer line (75%), a
"the answer is X" sentence (10%), a ``\\boxed{}`` answer (5%), several JSON objects (5%) or no answer (5%);
a third of them start with a plain-text mode prefix. Figures (responses per second of ``compute_score``,
single core, wall clock) are printed per family, next to two baselines measured in the same run:

- ``naive extraction``: json-parse every ``{...}`` span found by a regex, keep the last with the answer key;
- math: ``math_verify`` in process, without our fast path or child process, (a) on the answer we extract
  and (b) on the whole response (what a plain math-verify reward does); with the share judged correct.

Then the math checker itself (symbolic checks only, i.e. pairs the fast path cannot decide, default limit):

- first-call latency of a fresh pool (child start-up included; the verdict must still be right), and the
  start-up share of it;
- steady-state latency of a warm pool (median and 99th percentile of sequential checks);
- throughput of ``--mix-n`` checks (default 1,000) with one endless expression (``9^{9^{9^{9}}}``) mixed in,
  from 8 caller threads as verl's reward threads call it, for pool sizes 1 and 2, with whether every verdict
  was the expected one. This part runs on all the cores the process was given (the endless check burns one
  core for the whole limit; a pool of 2 lets the other checks use another).

Run: ``python benchmarks/bench_rewards.py [--n 10000] [--math-n 2000] [--mix-n 1000] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from verl_personadual.core.modes import PREFIX_TEXT
from verl_personadual.core.prompts import ANSWER_KEY, format_answer
from verl_personadual.core.rewards import compute_score, extract_answer
from verl_personadual.core.rewards.mathcheck import (
    DEFAULT_TIMEOUT_S,
    MathPool,
    fast_math_equal,
)

WORDS = (
    "the patient presents with fatigue and bleeding gums which suggests a deficiency of vitamin c because "
    "collagen synthesis requires ascorbate so we consider each option carefully and rule out the others "
    "first note that the question asks about the most likely cause given the persona and the context"
).split() + ["$\\frac{a}{b}$", "{x^2}", "\\{1,2\\}", "$x_{i}$", '{"step": 1}']

FAMILIES: dict[str, dict[str, Any]] = {
    "multiple_choice": dict(
        source="mmlu_pro",
        gold="C",
        good=["C", "(C)", "C. 6"],
        bad=["A", "B", "D"],
        extra={"choices": ["4", "5", "6", "7", "N/A"]},
    ),
    "option_text": dict(
        source="flan",
        gold="no",
        good=["no", "No."],
        bad=["yes", "it is not possible to tell"],
        extra={"choices": ["yes", "it is not possible to tell", "no"]},
    ),
    "free_text": dict(
        source="flan",
        gold="Barack Obama",
        good=["Barack Obama", "It was Barack Obama"],
        bad=["George Bush", "Bill Clinton"],
        extra={"task_family": "free_text"},
    ),
    "yes_no_maybe": dict(source="pubmedqa", gold="yes", good=["yes", "Yes, it does."], bad=["no", "maybe"], extra={}),
    "open_qa": dict(
        source="triviaqa",
        gold=["Jupiter", "Planet Jupiter"],
        good=["Jupiter", "planet jupiter"],
        bad=["Saturn", "Mars"],
        extra={},
    ),
    "preference": dict(source="alignx", gold="A", good=["A", "Response A"], bad=["B"], extra={}),
    "math": dict(
        source="math500",
        gold="\\frac{1}{2}",
        good=["\\frac{1}{2}", "0.5", "\\dfrac{1}{2}", "1/2"],
        bad=["\\frac{1}{3}", "2", "\\sqrt{2}", "x+1", "\\pi"],
        extra={},
    ),
}


def make_response(rng: random.Random, answer: str) -> str:
    reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(120, 220)))
    head = rng.choice(list(PREFIX_TEXT.values())) + " " if rng.random() < 1 / 3 else ""
    r = rng.random()
    if r < 0.75:
        tail = "\n" + format_answer(answer)
    elif r < 0.85:
        tail = f"\n\nSo, the answer is {answer}."
    elif r < 0.90:
        tail = f"\n\nThus $\\boxed{{{answer}}}$."
    elif r < 0.95:
        tail = "\n" + format_answer("A") + "\nOn reflection:\n" + format_answer(answer)
    else:
        tail = "\n\nI am not certain."
    return head + reasoning + tail


def workload(family: str, n: int, seed: int) -> list[tuple[str, Any, dict[str, Any], str]]:
    spec = FAMILIES[family]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        answer = rng.choice(spec["good"] if rng.random() < 0.5 else spec["bad"])
        rows.append((spec["source"], spec["gold"], spec["extra"], make_response(rng, answer)))
    return rows


def rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


_BRACES = re.compile(r"\{[^{}]*\}")


def naive_extract(text: str) -> str | None:
    """Baseline extractor: json-parse every brace span, keep the last one with the answer key."""
    found = None
    for span in _BRACES.findall(text):
        try:
            obj = json.loads(span)
        except ValueError:
            continue
        if isinstance(obj, dict) and ANSWER_KEY in obj:
            found = obj[ANSWER_KEY]
    return found


ENDLESS = "9^{9^{9^{9}}}"


def symbolic_pairs(n: int) -> list[tuple[str, str, bool]]:
    """``n`` distinct (gold, pred, expected) pairs the fast path cannot decide, half of them equal."""
    pairs = [(str(i), f"\\sqrt{{{i * i + i % 2}}}", i % 2 == 0) for i in range(2, n + 2)]
    assert all(fast_math_equal(g, p) is None for g, p, _ in pairs)
    return pairs


def math_checker_figures(mix_n: int, cores: set[int]) -> None:
    """First-call and steady-state latency of the math pool, and throughput with one endless expression."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    print(
        f"\nmath checker (symbolic checks only, limit {DEFAULT_TIMEOUT_S:g} s of child CPU per check, "
        f"{len(cores)} core(s))"
    )
    start = time.perf_counter()
    fresh = MathPool(size=1)
    verdict = fresh.equal("2", "\\sqrt{4}")
    first = time.perf_counter() - start
    start = time.perf_counter()
    fresh.equal("3", "\\sqrt{9}")
    second = time.perf_counter() - start
    fresh.close()
    print(
        f"  first call, fresh pool:  {first * 1000:8.1f} ms (child start-up included, not charged to the "
        f"limit; verdict {'right' if verdict else 'WRONG'}); next call {second * 1000:.1f} ms"
    )

    pool = MathPool(size=2)
    pool.equal("2", "\\sqrt{4}")  # warm
    latencies = []
    for gold, pred, _ in symbolic_pairs(200):
        start = time.perf_counter()
        pool.equal(gold, pred)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"  steady state, warm pool: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (n={len(latencies)})"
    )
    pool.close()

    pairs = symbolic_pairs(mix_n - 1)
    pairs.insert(len(pairs) // 2, ("5", ENDLESS, False))
    for size in (1, 2):
        pool = MathPool(size=size)
        with ThreadPoolExecutor(size) as ex:  # start and warm every child before the clock
            list(ex.map(lambda _: pool.equal("2", "\\sqrt{4}"), range(size)))
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            verdicts = list(ex.map(lambda p: pool.equal(p[0], p[1]), pairs))
        took = time.perf_counter() - start
        right = verdicts == [e for _, _, e in pairs]
        print(
            f"  {mix_n} checks, 1 endless, pool of {size}: {mix_n / took:8.1f} checks/s ({took:.1f} s; "
            f"verdicts {'all right' if right else 'WRONG'}; children killed {pool.kills})"
        )
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="responses per rule family (default 10000)")
    parser.add_argument("--math-n", type=int, default=2_000, help="responses for the math figures (default 2000)")
    parser.add_argument("--mix-n", type=int, default=1_000, help="checks in the math mix (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    args = parser.parse_args()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(cores)})  # one core; the math child inherits it

    print(f"{'family':<18}{'responses/s':>14}{'mean score':>12}")
    for family in FAMILIES:
        n = args.math_n if family == "math" else args.n
        rows = workload(family, n, args.seed)
        if family == "math":  # warm the math pool (child start-up is reported separately below)
            compute_score("math500", format_answer("\\sqrt{2}"), "\\frac{1}{2}")
        scores: list[float] = []
        per_s = rate(lambda: scores.extend(compute_score(s, r, g, e)["score"] for s, g, e, r in rows), n)
        print(f"{family:<18}{per_s:>14,.0f}{sum(scores) / n:>12.3f}")

    rows = workload("multiple_choice", args.n, args.seed)
    texts = [r for *_, r in rows]
    ours = rate(lambda: [extract_answer(t) for t in texts], args.n)
    naive = rate(lambda: [naive_extract(t) for t in texts], args.n)
    print(f"\nextraction only: ours {ours:,.0f}/s, naive json-every-brace {naive:,.0f}/s, ratio {ours / naive:.2f}x")

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its own timeouts are off

    from verl_personadual.core.rewards.mathserver import verify_pair

    math_rows = workload("math", args.math_n, args.seed)
    gold_text = FAMILIES["math"]["gold"]
    gold = parse(f"${gold_text}$")
    answers = [extract_answer(r).answer or "" for *_, r in math_rows]
    results: dict[str, list[bool]] = {"ours": [], "extracted": [], "whole": []}

    def ours_fn() -> None:
        results["ours"] = [compute_score(s, r, g, e)["correct"] == 1.0 for s, g, e, r in math_rows]

    def extracted_fn() -> None:
        results["extracted"] = [verify_pair(gold_text, a) for a in answers]

    def whole_fn() -> None:
        results["whole"] = [verify(gold, parse(r)) for *_, r in math_rows]

    print(f"\n{'math (n=' + str(args.math_n) + ')':<44}{'responses/s':>12}{'judged correct':>16}")
    for name, fn, label in [
        ("ours", ours_fn, "compute_score (fast path + guarded child)"),
        ("extracted", extracted_fn, "math-verify on our extracted answer"),
        ("whole", whole_fn, "math-verify on the whole response"),
    ]:
        per_s = rate(fn, args.math_n)
        print(f"{label:<44}{per_s:>12,.0f}{sum(results[name]) / args.math_n:>16.3f}")

    math_checker_figures(args.mix_n, cores)


if __name__ == "__main__":
    main()
