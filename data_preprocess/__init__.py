"""Data preparation for verl-personadual.

RL data (``python -m data_preprocess.build_rl --help``): UltraMedical, FLAN and AlignX items with PersonaHub
(unaligned) or LLM-generated (aligned) personas, written as verl 0.9.1 RL parquet plus a manifest. One module
per source (``ultramedical``, ``flan``, ``alignx``, ``personahub``, ``overlap`` for the evaluation question lists),
``personas`` for persona assignment, ``common`` for the shared item type, loading and bad-input policy.
"""
