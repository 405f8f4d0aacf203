"""``python -m verl_personadual.check``: the plugin self-check (``verl_personadual.apps.check``)."""

import sys

from verl_personadual.apps.check import main

if __name__ == "__main__":
    sys.exit(main())
