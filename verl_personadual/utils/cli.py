"""The argument parser and the ``type=`` checks of every command-line tool: a bad value is refused when parsed,
before any work, as one ``error:`` line (the convention of :mod:`verl_personadual.utils.errors`).

- :class:`Parser`: an ``argparse.ArgumentParser`` whose parse errors (a bad value, a missing or unknown option)
  raise :class:`~verl_personadual.utils.errors.UserError` instead of printing the usage and exiting, so
  ``run_cli`` prints ``error: --batch-size: must be an integer >= 1, got '0'`` and exits with status 2.
  Subparsers made with ``add_subparsers`` are of the same class.
- ``type=`` checks: :data:`count` (integer >= 1), :data:`non_negative` (integer >= 0: seeds, and counts where 0
  has a documented meaning), :data:`ratio` (number in [0, 1]), :data:`fraction` (number in (0, 1]),
  :data:`positive` (number > 0), :data:`non_negative_number` (number >= 0), and :func:`integer` / :func:`number`
  to build others. Numbers must be finite. Each message names the bound and the value given.
- :func:`existing_dir`: a path to an existing directory (as a ``Path``); :func:`existing_file`: to a file.
- :func:`torch_device` (a device this host has: ``cpu``, ``cuda[:N]`` with N below the visible GPU count, ``mps``)
  and :func:`torch_dtype` (``auto`` or a torch floating-point dtype name); torch is imported when one is parsed.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable, NoReturn

from verl_personadual.utils.errors import UserError

__all__ = [
    "Parser",
    "integer",
    "number",
    "count",
    "non_negative",
    "ratio",
    "fraction",
    "positive",
    "non_negative_number",
    "existing_dir",
    "existing_file",
    "torch_device",
    "torch_dtype",
]

_ARGUMENT = re.compile(r"^argument ([^:]+): ")


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UserError`: ``argument --x: msg`` becomes
    ``--x: msg`` (``--help`` still prints the usage and exits 0)."""

    def error(self, message: str) -> NoReturn:
        text = _ARGUMENT.sub(lambda m: f"{m[1]}: ", message)
        raise UserError(f"{text} (see {self.prog} --help)")


def integer(minimum: int, name: str) -> Callable[[str], int]:
    """A ``type=`` check: an integer >= ``minimum``; ``name`` is the check's name in ``--help`` errors."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    check.__name__ = name
    return check


def number(
    name: str,
    minimum: float = -math.inf,
    maximum: float = math.inf,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> Callable[[str], float]:
    """A ``type=`` check: a finite number in the interval ``minimum``..``maximum`` (each end closed unless
    ``open_min`` / ``open_max``)."""
    low = "(" if open_min else "["
    high = ")" if open_max else "]"
    bounds = f"a number in {low}{minimum:g}, {maximum:g}{high}"
    if math.isinf(maximum):
        bounds = f"a number {'>' if open_min else '>='} {minimum:g}" if math.isfinite(minimum) else "a finite number"

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (value > minimum if open_min else value >= minimum) and (
            value < maximum if open_max else value <= maximum
        )
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text!r}")
        return value

    check.__name__ = name
    return check


#: An integer >= 1 (a number of items, rows, steps, nodes, a batch size, a length).
count = integer(1, "count")
#: An integer >= 0 (a seed; a count where 0 means something documented).
non_negative = integer(0, "non_negative")
#: A share in [0, 1].
ratio = number("ratio", 0.0, 1.0)
#: A share in (0, 1] (a utilisation, an efficiency, a nucleus mass).
fraction = number("fraction", 0.0, 1.0, open_min=True)
#: A number > 0 (a rate, a strength).
positive = number("positive", 0.0, open_min=True)
#: A number >= 0 (a temperature, where 0 is greedy).
non_negative_number = number("non_negative_number", 0.0)


def existing_dir(text: str) -> Path:
    """A ``type=`` check: a path to an existing directory."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'not a directory' if path.exists() else 'no such directory'}")
    return path


def existing_file(text: str) -> Path:
    """A ``type=`` check: a path to an existing file."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'not a file' if path.exists() else 'no such file'}")
    return path


def torch_device(text: str) -> str:
    """A ``type=`` check: a torch device this host has (``cuda`` needs a visible GPU, ``cuda:N`` N of them)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= visible:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this host has {visible} CUDA device(s) visible to torch; use --device cpu"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this host; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: not a supported device (cpu, cuda, cuda:N, mps)")
    return text


def torch_dtype(text: str) -> str:
    """A ``type=`` check: ``auto`` or the name of a torch floating-point dtype (``bfloat16``, ``float32``, ...)."""
    import torch

    if text != "auto" and not (
        isinstance(getattr(torch, text, None), torch.dtype) and getattr(torch, text).is_floating_point
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not auto or a torch floating-point dtype (bfloat16, float16, float32)"
        )
    return text
