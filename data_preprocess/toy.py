"""``python -m data_preprocess.toy`` from a source checkout: the same as
``python -m verl_personadual.apps.build_toy``."""

import sys

from verl_personadual.apps.build_toy import main

if __name__ == "__main__":
    sys.exit(main())
