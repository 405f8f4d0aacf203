"""``python -m data_preprocess.build_rl`` from a source checkout: the same as
``python -m verl_personadual.apps.build_rl``."""

import sys

from verl_personadual.apps.build_rl import main

if __name__ == "__main__":
    sys.exit(main())
