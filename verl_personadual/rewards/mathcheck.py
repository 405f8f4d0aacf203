"""Math answer equivalence: a fast exact/numeric path, then ``math-verify`` in a guarded child process.

Why a child process: math-verify bounds its work with ``signal.alarm``, which raises in any thread but the
main one (verl's reward manager calls the reward from a thread pool), and some inputs (``9^{9^{9^9}}``) block
inside C code where no signal can interrupt them. So symbolic checks run in one long-lived child process per
parent process (``mathserver.py --serve``, started as a file: it imports only the standard library and
math-verify, not this package), one request at a time, under a wall-clock limit; a child that overruns is
killed (the pair counts as not equivalent) and a fresh one is started on the next request. Inside the child
math-verify's own signal timeouts are active as a first line.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction

__all__ = ["math_equal", "fast_math_equal", "MathVerifier", "DEFAULT_TIMEOUT_S", "MAX_MATH_CHARS"]

#: Default wall-clock limit of one symbolic check (seconds).
DEFAULT_TIMEOUT_S = 5.0
#: Answers longer than this (after normalisation) are never sent to math-verify: not equivalent.
MAX_MATH_CHARS = 300
_SERVER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mathserver.py")

_DELETE_RE = re.compile(r"\\displaystyle|\\left|\\right|\\[,;!: ]|\s+|\$|\\\(|\\\)|\\\[|\\\]")
_FRAC_WORD_RE = re.compile(r"\\[dt]frac")
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_FRACTION_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+)")


def _canon(text: str) -> str:
    """Whitespace, ``$``, spacing commands and ``\\left``/``\\right`` removed; ``\\dfrac``/``\\tfrac`` -> ``\\frac``;
    one trailing period removed."""
    out = _FRAC_WORD_RE.sub(r"\\frac", _DELETE_RE.sub("", text))
    return out[:-1] if out.endswith(".") else out


def _as_fraction(text: str) -> Fraction | None:
    """Exact value of a plain number (``-12``, ``1,000``, ``0.25``), ``a/b`` or ``\\frac{a}{b}``; else None."""
    if _NUMBER_RE.fullmatch(text):
        return Fraction(text.replace(",", ""))
    m = _FRACTION_RE.fullmatch(text)
    if m is None:
        return None
    if m.group(2) is not None:
        num, den, sign = int(m.group(2)), int(m.group(3)), -1 if m.group(1) == "-" else 1
    else:
        num, den, sign = int(m.group(4)), int(m.group(5)), 1
    return None if den == 0 else sign * Fraction(num, den)


def fast_math_equal(gold: str, pred: str) -> bool | None:
    """Decide without sympy when possible: True / False, or None when a symbolic check is needed."""
    g, p = _canon(gold), _canon(pred)
    if g == p:
        return True
    fg, fp = _as_fraction(g), _as_fraction(p)
    if fg is not None and fp is not None:
        return fg == fp
    if len(p) > MAX_MATH_CHARS or not p:
        return False
    return None


class MathVerifier:
    """A guarded math-verify child process (see the module docstring). Thread-safe; one request at a time."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self._proc = subprocess.Popen(
            # Run as a file in isolated mode: the child imports neither this package (whose import pulls
            # torch) nor the script's folder.
            [sys.executable, "-I", _SERVER_FILE, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self._proc

    def close(self) -> None:
        """Stop the child (a later request starts a new one)."""
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def equal(self, gold: str, pred: str) -> bool:
        """math-verify's verdict on ``pred`` against ``gold``; False on timeout or a dead child."""
        request = (json.dumps([gold, pred]) + "\n").encode()
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except OSError:
                self._kill()
                self.restarts += 1
                return False
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
            line = proc.stdout.readline() if ready else b""
            if not line:
                self._kill()
                self.restarts += 1
                return False
            return line.strip() == b"true"


_verifiers: dict[float, MathVerifier] = {}
_verifiers_lock = threading.Lock()


def _shared_verifier(timeout_s: float) -> MathVerifier:
    with _verifiers_lock:
        v = _verifiers.get(timeout_s)
        if v is None:
            v = _verifiers[timeout_s] = MathVerifier(timeout_s)
        return v


@atexit.register
def _close_all() -> None:
    for v in list(_verifiers.values()):
        v.close()


def math_equal(gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is ``pred`` mathematically equal to ``gold`` (LaTeX or plain)? Fast path first, then math-verify."""
    fast = fast_math_equal(gold, pred)
    if fast is not None:
        return fast
    return _shared_verifier(timeout_s).equal(gold, pred)
