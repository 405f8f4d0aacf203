"""``python -m verl_personadual.quickstart``: the quickstart (``verl_personadual.apps.quickstart.cli``)."""

import sys

from verl_personadual.apps.quickstart.cli import main

if __name__ == "__main__":
    sys.exit(main())
