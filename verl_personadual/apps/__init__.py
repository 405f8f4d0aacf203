"""Layer 4, apps: every command line (recipes, quickstart, eval CLI, data builders, tools). May import every
layer; nothing below imports it.
"""
