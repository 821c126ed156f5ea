"""`python -m landscape.train`: run the training CLI (`landscape.train.cli`) and exit with its code."""

from landscape import distributed
from landscape.cli import run_cli
from landscape.train.cli import main

if __name__ == "__main__":
    distributed.exit_process(run_cli(main))
