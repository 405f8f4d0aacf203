"""FPPS (Sun et al. 2026, "When Personalization Misleads"), the model side: a hidden-state steering baseline.

``layers`` picks the layer L (logit-lens answer perplexity with / without the persona, Δ, per-group ranks fused
by RRF), ``probe`` fits p̂ = σ(W·h_L + b) on last-prompt-token states and builds the steering vector s_f,
``steer`` generates greedily with FPPS-H / FPPS-S / FPPS-M applied at layer L, ``model_io`` holds the shared model
access (layer L = output of decoder block ``model.model.layers[L]``, 0-based). Inputs are token ids built by the
caller. These modules import only torch, numpy, scikit-learn and the standard library; the model is any
transformers decoder-only causal LM with ``model.model.layers``, ``model.model.norm`` and ``model.lm_head``.
"""
