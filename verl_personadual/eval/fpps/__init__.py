"""FPPS (Sun et al. 2026, "When Personalization Misleads"): a hidden-state steering baseline.

Model side (importing only torch, numpy, scikit-learn and the standard library; the model is any transformers
decoder-only causal LM with ``model.model.layers``, ``model.model.norm`` and ``model.lm_head``; inputs are token ids
built by the caller): ``layers`` picks the layer L (logit-lens answer perplexity with / without the persona, Δ,
per-group ranks fused by RRF), ``probe`` fits p̂ = σ(W·h_L + b) on last-prompt-token states and builds the steering
vector s_f, ``steer`` generates greedily with FPPS-H / FPPS-S / FPPS-M applied at layer L, ``model_io`` holds the
shared model access (layer L = output of decoder block ``model.model.layers[L]``, 0-based).

Harness side (importing the eval harness, never its analyses): ``fit`` (``eval fpps-fit``: calibration answers,
groups, layer, probe, s_f, the γ / τ grid) writes an ``artifact`` that ``generator`` (``eval run --system
fpps_h | fpps_s | fpps_m --fpps DIR``) runs through the harness as a Table 1 baseline.
"""
