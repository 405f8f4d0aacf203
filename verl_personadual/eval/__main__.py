"""``python -m verl_personadual.eval --help``."""

import sys

from verl_personadual.apps.eval_cli import main

sys.exit(main())
