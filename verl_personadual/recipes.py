"""``python -m verl_personadual.recipes``: run a recipe (``verl_personadual.apps.recipes.cli``)."""

import sys

from verl_personadual.apps.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main())
