"""The quickstart: the main job on CPU (``python -m verl_personadual.quickstart``); ``stages`` runs it,
``report`` summarises it, ``cli`` parses its arguments.
"""
