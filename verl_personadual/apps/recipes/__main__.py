"""``python -m verl_personadual.apps.recipes``."""

import sys

from verl_personadual.apps.recipes.cli import main

sys.exit(main())
