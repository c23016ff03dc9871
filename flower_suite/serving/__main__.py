"""``python -m flower_suite.serving MODEL_PT ...`` (see :mod:`flower_suite.serving.cli`)."""

import sys

from flower_suite.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
