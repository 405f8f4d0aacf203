"""Analyses over finished eval runs (mode probabilities, multi-turn, lexical, mixed personas); they use the
harness in ``verl_personadual.eval``, never the reverse.
"""
