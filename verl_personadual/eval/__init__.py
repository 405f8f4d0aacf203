"""Evaluation harness: seven benchmarks x three persona settings x decoding modes, tables and plots.

Modules: ``benchmarks`` (loaders by hub id or local file, seeded sampling), ``personas`` (the saved eval set with
a persona per setting), ``generate`` (vLLM / transformers backends, prompt ids, forced prefixes), ``run`` (one
resumable run), ``store`` (append-only predictions JSONL, atomic writes), ``report`` (tables and plots),
``baselines`` (prompt styles, the router), ``cli`` (``python -m verl_personadual.eval``).
"""
