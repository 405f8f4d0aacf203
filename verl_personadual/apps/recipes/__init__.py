"""The recipes: Hydra YAMLs over verl's own trainer configs (``config/``, package data), composed
(``compose``), checked (``validate``) and launched as verl's entry points (``launch``); ``cli`` is
``python -m verl_personadual.recipes``.
"""
