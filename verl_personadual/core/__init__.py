"""Layer 1, core: what verl loads through the ``verl.plugins`` entry point (``core.plugin``): the ``dual_grpo``
advantage estimator, the prefix-forcing agent loops, the trainer glue and metrics, the persona-aware rewards,
the CPU backend, plus the mode prefixes, names and prompt templates everything else shares. Imports utils only.
"""
