"""Edge of stability on the FC zoo (landscape.experiment.eos): run the grid, print the table, draw the figure.

    nice -n 10 python experiments/edge_of_stability.py --out runs/eos       # 3 nets × 2 η × 5 seeds, resumable
    python experiments/edge_of_stability.py --out runs/eos --plot-only     # table and figure from finished runs

Writes OUT/<net>_lr<η>_seed<s>.jsonl (monitor records + training loss), OUT/config.json, OUT/summary.json
(every statistic of landscape.experiment.eos.summarize_eos with its 95% interval and n) and
FIGURES/eos_fc_mnist1d.png/.pdf.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from landscape.cli import positive_int, prepare_out_dir, run_cli
from landscape.experiment.eos import LABELS, EosConfig, eos_table, load_eos, run_eos, summarize_eos
from landscape.io import write_json
from landscape.plots import plot_eos


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/eos")
    ap.add_argument("--figures", default="figures")
    ap.add_argument("--seeds", type=positive_int, default=EosConfig.seeds)
    ap.add_argument("--steps", type=positive_int, default=EosConfig.steps)
    ap.add_argument("--threads", type=positive_int, default=None)
    ap.add_argument("--only", default=None, help="run only this net (plain, residual, residual_preact)")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = prepare_out_dir(args.out)
    prepare_out_dir(args.figures)
    if not args.plot_only:
        run_eos(out, EosConfig(seeds=args.seeds, steps=args.steps), only=args.only,
                log=lambda s: print(s, file=sys.stderr, flush=True))
    runs = load_eos(out)
    rows = summarize_eos(runs)
    write_json(out / "summary.json", rows)
    print(eos_table(rows))
    panels = {f"{LABELS[net]}, η = {lr:g}": (2 / lr, seeds) for (net, lr), seeds in sorted(runs.items())}
    plot_eos(panels, Path(args.figures) / "eos_fc_mnist1d")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
