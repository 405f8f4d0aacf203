"""``python -m verl_personadual.eval --help``."""

import sys

from verl_personadual.eval.cli import main

sys.exit(main())
