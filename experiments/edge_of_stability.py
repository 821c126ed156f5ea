"""Edge of stability as Cohen et al. do it (landscape.experiment.eos): run the step-size sweep into records.

    nice -n 10 python experiments/edge_of_stability.py --only gd_   # resumable; one process per --only part
    python -m landscape.experiment.report                           # RESULTS.md's eos table and the figures

Writes RECORDS/<optimizer>_<net>_<loss>_lr<η>_seed<s>.json (the loss, accuracy, sharpness and edge ratio at
every measured step; committed) and RECORDS/config.json.
"""

from __future__ import annotations

import argparse
import sys

import torch

from landscape.cli import positive_int, run_cli
from landscape.experiment.eos import EosConfig, run_eos
from landscape.experiment.store import ROOT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(ROOT / "records" / "eos"), help="the committed records")
    ap.add_argument("--only", default=None, help="run only the cells whose file name contains this (gd_, adam_)")
    ap.add_argument("--threads", type=positive_int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_eos(args.records, EosConfig(), only=args.only, log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
