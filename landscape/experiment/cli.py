"""The `python -m landscape.experiment` command line: parse, validate, build, run, print the headline table.

    python -m landscape.experiment experiments/orhan2018.toml                  # quick profile, runs/orhan2018
    python -m landscape.experiment experiments/oh2025.toml --profile full --device cuda --only 'vit*'
    python -m landscape.experiment experiments/liu2020.toml --list             # validate, build, list cells

Bad input (config, profile, --only, --out) is one line on stderr and exit 2, before any training; a
signal stops at the next step boundary (exit 128 + signum; rerun the same command to resume).
Config schema: `landscape.experiment.config`; outputs: `landscape.experiment.runner` and docs/formats.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from landscape.cli import Interrupted, Parser, cpu_threads, interrupts
from landscape.experiment.config import build_models, load_experiment
from landscape.experiment.runner import run_experiment
from landscape.experiment.summary import claims_table, headline_table


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m landscape.experiment`.

    Returns:
        The parser (one-line usage errors, exit 2).
    """
    p = Parser(prog="python -m landscape.experiment", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="experiment TOML (experiments/NAME.toml)")
    p.add_argument("--profile", default="quick", help="profile to run: quick (default) or full")
    p.add_argument("--out", help="output directory (default runs/NAME, or runs/NAME-PROFILE for other profiles)")
    p.add_argument("--only", metavar="GLOB", help="run only the cells whose name matches (fnmatch), e.g. 'res*'")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default: the profile's)")
    p.add_argument("--list", action="store_true",
                   help="validate the profile, build every cell's model, list the runs and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="progress bar over the runs on stderr (default: when stderr is a terminal)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m landscape.experiment CONFIG`: run, resume, list or report an experiment grid.

    Args:
        argv: the command-line arguments (None: sys.argv[1:]).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    exp = load_experiment(args.config, args.profile)
    counts = build_models(exp)
    if args.list:
        for run in exp.runs:
            print(f"{run.path}\t{run.train.model}\t{counts[run.cell]:,} parameters\t{run.label}")
        return 0
    out = Path(args.out or (f"runs/{exp.name}" if exp.profile == "quick" else f"runs/{exp.name}-{exp.profile}"))
    t0 = time.perf_counter()
    try:
        with interrupts("raise"), cpu_threads(exp.threads):
            summary = run_experiment(exp, out, only=args.only, device=args.device, progress=args.progress)
    except Interrupted:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        raise
    print(headline_table(summary, exp.headline))
    if summary["claims"]:
        print("\n" + claims_table(summary["claims"]))
    print(f"{out}: {len(summary['cells'])} cells, wall time {time.perf_counter() - t0:.0f} s")
    return 0
