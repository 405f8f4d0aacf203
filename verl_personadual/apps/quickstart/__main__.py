"""``python -m verl_personadual.apps.quickstart``."""

import sys

from verl_personadual.apps.quickstart.cli import main

sys.exit(main())
