"""Layer 3, eval: the evaluation harness and its analyses.

Harness: ``generate`` (vLLM / transformers backends, prompt ids, forced prefixes), ``mode_choice`` (decoding
``free_constrained``), ``run`` (one resumable run), ``store`` (append-only predictions JSONL), ``judge``,
``baselines`` (prompt styles, the router), ``systems`` (the Table 1 systems registry), ``pools`` (finished runs),
``report`` (Table 1 and the run report), ``plots`` (public table / figure helpers). ``analyses/`` reads finished
runs. The benchmarks and eval sets are data (``verl_personadual.data.benchmarks``,
``verl_personadual.data.eval_sets``); the CLI is ``verl_personadual.apps.eval_cli`` (``python -m
verl_personadual.eval``). Imports data, core and utils only.
"""
