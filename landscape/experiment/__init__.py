"""Experiment grids (cells × seeds): train each run, measure its checkpoints, summarize and judge the claims.

    python -m landscape.experiment experiments/orhan2018.toml        # quick profile into runs/orhan2018

A run is one cell (an architecture and setting) with one seed. It trains with `landscape.train`, keeps
`ckpt_epochNNN.pt` at the measurement epochs (epoch 0 = initialization) and measures each: the Hessian
spectrum by SLQ, the exact spectrum of small nets, and the probes on the measurement set. The modules, one
job each:

    config    the TOML schema; `load_experiment` / `resolve` a profile into runs; the declared claims
    measure   one checkpoint's spectrum, exact spectrum and probes
    runner    `run_one`, `run_experiment`: train, keep checkpoints, measure, write; resumable
    keys      the result keys of one run (norm preservation, transition point, ...) from plain records
    summary   per-cell statistics over seeds, the headline table, the claims' paired intervals and verdicts
    results   what the notebooks import: open a finished grid (`finished_grid.Grid`: runs, tables, claims, curves)
    cli       `python -m landscape.experiment`

File formats: docs/formats.md; command line: docs/cli.md.
"""

from landscape.experiment.config import (
    DATA_SHAPES,
    Experiment,
    Run,
    build_models,
    load_experiment,
    parse_epochs,
    resolve,
)
from landscape.experiment.keys import measurement_keys, probe_keys, step_keys, train_keys, transition_point
from landscape.experiment.measure import measure_epoch, measure_exact, measure_spectrum
from landscape.experiment.runner import run_experiment, run_one
from landscape.experiment.summary import claims_table, headline_table, summarize

__all__ = ["DATA_SHAPES", "Experiment", "Run", "build_models", "claims_table", "headline_table", "load_experiment",
           "measure_epoch", "measure_exact", "measure_spectrum", "measurement_keys", "parse_epochs", "probe_keys",
           "resolve", "run_experiment", "run_one", "step_keys", "summarize",
           "train_keys", "transition_point"]


def main(argv=None) -> int:
    """`python -m landscape.experiment` (see `landscape.experiment.cli`).

    Args:
        argv: the command-line arguments (None: sys.argv[1:]).

    Returns:
        The exit status.
    """
    from landscape.experiment.cli import main as cli_main

    return cli_main(argv)
