"""Math answer equivalence: a fast exact/numeric path, then ``math-verify`` in a pool of warm child processes.

Why child processes: math-verify bounds its work with signals, which work only in the main thread (verl's
reward manager calls the reward from a thread pool), and some inputs block inside one C call where no signal
can interrupt them. So symbolic checks run in ``mathserver.py --serve`` children (started as a file: they import
only the standard library and math-verify, not this package, whose import pulls torch).

Contract of :meth:`MathPool.equal` (``math_equal`` uses one pool per process):

- **The verdict does not depend on machine load.** A child is *ready* (math-verify imported, one warm-up check
  done, ``ready`` handshake received) before any request is sent to it: start-up and restarts are never charged
  to a request. The limit of a request is CPU time of the child (``mathserver``'s interval timer), so a busy
  machine slows a check down without changing its verdict.
- **The limit is per request** (``timeout_s``, default ``DEFAULT_TIMEOUT_S``): beyond it the check is "not
  equal". A child that has not answered after ``KILL_AFTER_FACTOR * timeout_s + KILL_GRACE_S`` seconds of wall
  time (a check stuck in one C call) is killed (counted in ``kills``) and the check is "not equal"; a killed or
  dead child is replaced by a later request, before that request's limit starts.
- **A slow expression stalls one child, not the batch.** The pool holds up to ``size`` children (default
  ``DEFAULT_POOL_SIZE``, or the ``PERSONADUAL_MATH_WORKERS`` environment variable), started on demand; each
  request takes an idle child or waits for one. Each child costs about 100 MB of memory. Thread-safe.
- A child that cannot start (math-verify missing or broken, or no ``ready`` within ``startup_timeout_s``) raises
  :class:`MathServerError`: an environment error, not a verdict.
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
from typing import Sequence

__all__ = [
    "math_equal",
    "fast_math_equal",
    "shared_pool",
    "MathPool",
    "MathServerError",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_POOL_SIZE",
    "STARTUP_TIMEOUT_S",
    "KILL_AFTER_FACTOR",
    "KILL_GRACE_S",
    "MAX_MATH_CHARS",
    "WORKERS_ENV",
]

#: Default limit of one symbolic check: seconds of the child's CPU time.
DEFAULT_TIMEOUT_S = 5.0
#: Children per pool unless ``WORKERS_ENV`` says otherwise.
DEFAULT_POOL_SIZE = 2
WORKERS_ENV = "PERSONADUAL_MATH_WORKERS"
#: Wall-clock seconds a starting child has to say ``ready`` (imports included; not charged to any request).
STARTUP_TIMEOUT_S = 120.0
#: A child silent for ``KILL_AFTER_FACTOR * timeout_s + KILL_GRACE_S`` wall seconds after a request is killed.
KILL_AFTER_FACTOR = 2.0
KILL_GRACE_S = 1.0
#: Answers longer than this (after normalisation) are never sent to math-verify: not equivalent.
MAX_MATH_CHARS = 300
SERVER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mathserver.py")

_DELETE_RE = re.compile(r"\\displaystyle|\\left|\\right|\\[,;!: ]|\s+|\$|\\\(|\\\)|\\\[|\\\]")
_FRAC_WORD_RE = re.compile(r"\\[dt]frac")
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_FRACTION_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+)")


class MathServerError(RuntimeError):
    """A math child cannot start: math-verify is missing or broken, or the child never said ``ready``."""


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
    if len(p) > MAX_MATH_CHARS or not p:
        return False
    fg = _as_fraction(g) if len(g) <= MAX_MATH_CHARS else None
    fp = _as_fraction(p)
    if fg is not None and fp is not None:
        return fg == fp
    return None


class _Child:
    """One warm ``mathserver --serve`` process; used by one thread at a time (the pool hands it out)."""

    def __init__(self, command: Sequence[str], startup_timeout_s: float) -> None:
        self.overran = False
        try:
            self.proc = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as err:
            raise MathServerError(f"cannot run math child {list(command)}: {err}") from err
        line = self._read_line(startup_timeout_s)
        if line != b"ready":
            self.close()
            why = "no reply" if line is None else line.decode("utf-8", "replace") or "exited"
            raise MathServerError(
                f"math child {list(command)} did not start within {startup_timeout_s:g} s: {why} "
                f"(exit status {self.proc.returncode})"
            )

    def _read_line(self, timeout_s: float) -> bytes | None:
        """The next line (stripped; b"" at end of output), or None when nothing came within ``timeout_s``."""
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            ready, _, _ = select.select([stdout], [], [], timeout_s)
            return stdout.readline().strip() if ready else None
        except (OSError, ValueError):  # the pool was closed under this request
            return b""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, request: bytes) -> bool:
        """Write one request; False when the child is gone."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(request)
            stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def receive(self, timeout_s: float) -> bool:
        """The verdict of the request just sent; False (and ``overran`` set on a timeout) when none comes."""
        line = self._read_line(KILL_AFTER_FACTOR * timeout_s + KILL_GRACE_S)
        if line is None:
            self.overran = True
            self.kill()
        return line == b"true"

    def kill(self) -> None:
        """Stop the process (safe from any thread; the pipes stay open for their user)."""
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Stop the process and close its pipes (only by the thread that holds the child)."""
        self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a broken stdin pipe fails its final flush
                    pass


def _size_from_env() -> int:
    raw = os.environ.get(WORKERS_ENV, "")
    if not raw:
        return DEFAULT_POOL_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise MathServerError(f"{WORKERS_ENV}={raw!r} must be a positive integer")
    return int(raw)


class MathPool:
    """Warm math-verify children serving concurrent checks (contract in the module docstring).

    Args:
        size: most children at once (default: ``PERSONADUAL_MATH_WORKERS`` or ``DEFAULT_POOL_SIZE``).
        startup_timeout_s: wall seconds a starting child has to become ready.
        command: the child's command line (default: this Python running ``mathserver.py --serve`` isolated).

    Attributes:
        starts: children started so far; kills: children killed for not answering in time.
    """

    def __init__(
        self,
        size: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        command: Sequence[str] | None = None,
    ) -> None:
        self.size = _size_from_env() if size is None else size
        if self.size < 1:
            raise ValueError(f"size must be at least 1, got {self.size}")
        self.startup_timeout_s = startup_timeout_s
        # Isolated mode: the child imports neither this package nor the script's folder.
        self.command = list(command) if command else [sys.executable, "-I", SERVER_FILE, "--serve"]
        self.starts = 0
        self.kills = 0
        self._cond = threading.Condition()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._starting = 0

    def equal(self, gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
        """math-verify's verdict on ``pred`` against ``gold`` within ``timeout_s``; False on overrun or a child
        that dies on this request. Waits for a free (possibly new) child first; raises MathServerError when a
        child cannot start."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        request = (json.dumps([gold, pred, timeout_s]) + "\n").encode()
        child = self._acquire()
        if not child.send(request):  # died while idle: replace it once, before the clock starts
            self._release(child)
            child = self._acquire()
            if not child.send(request):
                self._release(child)
                return False
        try:
            return child.receive(timeout_s)
        finally:
            self._release(child)

    @property
    def busy(self) -> int:
        """Children serving a request right now (children still starting are not counted)."""
        with self._cond:
            return len(self._children) - len(self._idle)

    def _acquire(self) -> _Child:
        with self._cond:
            while True:
                while self._idle:
                    child = self._idle.pop()
                    if child.alive:
                        return child
                    self._children.discard(child)
                    child.close()
                if len(self._children) + self._starting < self.size:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            child = _Child(self.command, self.startup_timeout_s)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            self.starts += 1
            self._children.add(child)
        return child

    def _release(self, child: _Child) -> None:
        with self._cond:
            if child.overran:
                self.kills += 1
            if child in self._children and child.alive:
                self._idle.append(child)
            else:
                self._children.discard(child)
                child.close()
            self._cond.notify()

    def close(self) -> None:
        """Stop every child (idle ones now, busy ones too: their requests answer False). A later request starts
        new children."""
        with self._cond:
            idle, busy = self._idle, self._children.difference(self._idle)
            self._idle, self._children = [], set()
            self._cond.notify_all()
        for child in idle:
            child.close()
        for child in busy:
            child.kill()


_pool: MathPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> MathPool:
    """This process's pool (created on first use; children start on demand)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = MathPool()
        return _pool


@atexit.register
def _close_shared() -> None:
    if _pool is not None:
        _pool.close()


def math_equal(gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is ``pred`` mathematically equal to ``gold`` (LaTeX or plain)? Fast path first, then the shared pool."""
    fast = fast_math_equal(gold, pred)
    if fast is not None:
        return fast
    return shared_pool().equal(gold, pred, timeout_s)
