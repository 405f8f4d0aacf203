"""math-verify equivalence of one (gold, pred) pair, and the child-process loop ``mathcheck`` talks to.

Imports only the standard library and math-verify (``mathcheck`` starts this file by path in isolated mode).
math-verify's signal timeouts work here because the checks run in the main thread.

Protocol of ``--serve`` (one JSON line each way): request ``[gold, pred]``, reply ``true`` or ``false``; the
loop ends at end of input.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache

#: math-verify's own (signal-based) timeouts, seconds.
PARSE_TIMEOUT_S = 2
VERIFY_TIMEOUT_S = 2


def _wrap(text: str) -> str:
    """Delimit a bare answer as inline math so math-verify's LaTeX extraction reads it whole."""
    t = text.strip()
    return t if t.startswith("$") or "\\boxed" in t else f"${t}$"


@lru_cache(maxsize=4096)
def _parsed(text: str) -> list:
    from math_verify import parse

    return parse(_wrap(text), parsing_timeout=PARSE_TIMEOUT_S)


def verify_pair(gold: str, pred: str) -> bool:
    """True when math-verify shows ``pred`` equal to ``gold``; any failure means False. Main thread only."""
    from math_verify import verify

    try:
        return bool(verify(_parsed(gold), _parsed(pred), timeout_seconds=VERIFY_TIMEOUT_S))
    except Exception:
        return False


def serve() -> None:
    """The child loop (see the module docstring)."""
    out, sys.stdout = sys.stdout, sys.stderr  # stray prints must not corrupt the protocol
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            ok = verify_pair(str(gold), str(pred))
        except ValueError:
            ok = False
        out.write("true\n" if ok else "false\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m verl_personadual.rewards.mathserver",
        description="Math answer equivalence with math-verify. Give GOLD and PRED to check one pair, or --serve "
        "to run the child loop used by the reward (JSON lines [gold, pred] on stdin, true/false lines out).",
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
