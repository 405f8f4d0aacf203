"""``python -m verl_personadual.toy_table``: the toy Table 1 over seeds (``verl_personadual.apps.toy_table``)."""

import sys

from verl_personadual.apps.toy_table import main

if __name__ == "__main__":
    sys.exit(main())
