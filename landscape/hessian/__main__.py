"""`python -m landscape.hessian CKPT ...`: the Hessian CLI (`landscape.hessian.cli.main`)."""

from landscape import distributed
from landscape.cli import run_cli
from landscape.hessian.cli.main import main

if __name__ == "__main__":
    distributed.exit_process(run_cli(main))
