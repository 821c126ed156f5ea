"""`python -m landscape.experiment CONFIG [--profile P] [--out DIR] [--only GLOB] [--list]`: see
`landscape.experiment.cli`."""

import sys

from landscape.cli import run_cli
from landscape.experiment.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
