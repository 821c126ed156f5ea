"""Li et al. 2018's depth series (landscape.experiment.li2018): train and measure every run into one record each.

    nice -n 10 python experiments/li2018_depth.py --only resnet_   # resumable; one process per --only part
    python -m landscape.experiment.report                          # RESULTS.md's li2018 tables and the figures

Writes RECORDS/<cell>_seed<s>.json (config, per-epoch metrics, the surface grid, the non-convexity map, the
per-run keys; committed) and RECORDS/config.json; the training runs (checkpoints) go to RUNS (not committed).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from landscape.cli import run_cli
from landscape.experiment.li2018 import LiConfig, run_li
from landscape.experiment.store import ROOT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/li2018", help="training runs (checkpoints; default runs/li2018)")
    ap.add_argument("--records", default=str(ROOT / "records" / "li2018_depth"), help="the committed records")
    ap.add_argument("--only", default=None, help="run only the cells whose name contains this (e.g. resnet_, _110)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0-4)")
    args = ap.parse_args(argv)
    cfg = LiConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(int(s) for s in args.seeds.split(",")))
    run_li(args.runs, args.records, cfg, only=args.only, log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
