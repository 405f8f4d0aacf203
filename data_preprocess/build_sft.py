"""``python -m data_preprocess.build_sft`` from a source checkout: the same as
``python -m verl_personadual.apps.build_sft``."""

import sys

from verl_personadual.apps.build_sft import main

if __name__ == "__main__":
    sys.exit(main())
