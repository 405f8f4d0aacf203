"""math-verify equivalence of one (gold, pred) pair, and the child-process loop ``mathcheck`` talks to.

Imports only the standard library and math-verify (``mathcheck`` starts this file by path in isolated mode).

The time limit of a check is CPU time of this process (an ``ITIMER_PROF`` interval timer around the whole
check, parse of both sides included), so a busy machine slows a check down but does not change its verdict.
The timer's signal is handled in the main thread, between Python bytecodes: a check stuck inside one C call is
not interrupted here, which is why the parent also kills a child that does not answer in time.

Protocol of ``--serve`` (one line each way):

1. start-up: the child imports math-verify and runs one warm-up check, then writes ``ready`` (or
   ``error <message>`` and exits when math-verify cannot be used);
2. requests: ``[gold, pred, limit_s]`` as JSON, reply ``true`` or ``false`` (over the limit, unparsable or
   not equal: ``false``). The loop ends at end of input.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from functools import lru_cache

#: CPU-time limit of one check when none is given (seconds).
DEFAULT_LIMIT_S = 5.0


class _Overrun(BaseException):
    """Raised by the interval timer; a BaseException so that math-verify's ``except Exception`` cannot eat it."""


def _on_timer(signum: int, frame: object) -> None:
    raise _Overrun


def _wrap(text: str) -> str:
    """Delimit a bare answer as inline math so math-verify's LaTeX extraction reads it whole."""
    t = text.strip()
    return t if t.startswith("$") or "\\boxed" in t else f"${t}$"


@lru_cache(maxsize=4096)
def _parsed(text: str) -> list:
    from math_verify import parse

    return parse(_wrap(text), parsing_timeout=None)


def verify_pair(gold: str, pred: str, limit_s: float = DEFAULT_LIMIT_S) -> bool:
    """True when math-verify shows ``pred`` equal to ``gold`` within ``limit_s`` CPU seconds; any failure or
    overrun means False. Main thread only (it uses a signal)."""
    from math_verify import verify

    signal.signal(signal.SIGPROF, _on_timer)
    try:
        try:
            signal.setitimer(signal.ITIMER_PROF, limit_s)
            return bool(verify(_parsed(gold), _parsed(pred), timeout_seconds=None))
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except (_Overrun, Exception):  # an overrun may also land in the inner finally: the timer has fired then
        return False


def _warm_up() -> None:
    """Import math-verify and run every lazy import / table build a first check would pay for."""
    import logging

    import math_verify  # noqa: F401

    logging.disable(logging.WARNING)  # math-verify warns that its own timeouts are off: ours is the timer
    verify_pair("\\frac{1}{2}", "0.5")
    verify_pair("x^2+1", "1+x^{2}")
    verify_pair("\\sqrt{4}", "2")


def serve() -> None:
    """The child loop (see the module docstring)."""
    out, sys.stdout = sys.stdout, sys.stderr  # stray prints must not corrupt the protocol
    try:
        _warm_up()
    except Exception as err:  # report why this child cannot check anything, then stop
        out.write(f"error {type(err).__name__}: {err}".replace("\n", " ") + "\n")
        out.flush()
        return
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            gold, pred, limit_s = json.loads(line)
            ok = verify_pair(str(gold), str(pred), float(limit_s))
        except (ValueError, TypeError):
            ok = False
        out.write("true\n" if ok else "false\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m verl_personadual.core.rewards.mathserver",
        description="Math answer equivalence with math-verify. Give GOLD and PRED to check one pair, or --serve "
        "to run the child loop used by the reward (see the module docstring for the protocol).",
    )
    parser.add_argument("--serve", action="store_true", help="run the child loop on stdin/stdout")
    parser.add_argument("gold", nargs="?", help="gold answer, LaTeX or plain, e.g. '\\frac{1}{2}'")
    parser.add_argument("pred", nargs="?", help="predicted answer, e.g. 0.5")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
    elif args.gold is None or args.pred is None:
        parser.error("give GOLD and PRED, or --serve")
    else:
        print("equal" if verify_pair(args.gold, args.pred) else "not equal")


if __name__ == "__main__":
    main()
