"""``python -m data_preprocess.multiturn`` from a source checkout: the same as
``python -m verl_personadual.apps.build_multiturn``."""

import sys

from verl_personadual.apps.build_multiturn import main

if __name__ == "__main__":
    sys.exit(main())
