"""What loading the plugin costs ``import verl``: time and verl modules loaded, plugin on vs off, as ratios.

    python benchmarks/bench_import.py [--repeats 5]

Each measurement is a fresh interpreter that times ``import verl`` (``time.perf_counter`` around the import) and
counts the ``verl.*`` modules in ``sys.modules`` afterwards. "on" is the default (verl loads its ``verl.plugins``
entry points), "off" is ``VERL_USE_EXTERNAL_PLUGINS=none``. The two alternate, ``--repeats`` times each, and the
medians are compared; one line per figure and a last line with the ratios. Every Ray worker pays this import too.
Ratios are measured in one run on one machine; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = (
    "import json, sys, time\n"
    "t = time.perf_counter()\n"
    "import verl\n"
    "t = time.perf_counter() - t\n"
    "print(json.dumps([t, sum(1 for m in sys.modules if m.startswith('verl.'))]))\n"
)

SETTINGS = {"on": {}, "off": {"VERL_USE_EXTERNAL_PLUGINS": "none"}}


def measure(extra_env: dict[str, str]) -> tuple[float, int]:
    """(seconds, verl modules) of one ``import verl`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_PLUGINS", "VERL_USE_EXTERNAL_MODULES")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env={**env, **extra_env}, check=True
    )
    seconds, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(seconds), int(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per setting (default 5)")
    args = parser.parse_args(argv)
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, env in SETTINGS.items():
            runs[name].append(measure(env))
    med = {name: (statistics.median(t for t, _ in r), statistics.median(m for _, m in r)) for name, r in runs.items()}
    for name, (seconds, modules) in med.items():
        print(f"import verl, plugin {name}: {seconds:.2f} s, {modules:.0f} verl modules (median of {args.repeats})")
    (t_on, m_on), (t_off, m_off) = med["on"], med["off"]
    print(f"plugin on / off: time {t_on / t_off:.2f}x, verl modules {m_on / m_off:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
