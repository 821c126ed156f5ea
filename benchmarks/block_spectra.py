"""Per-block spectra: one stacked product per Lanczos step for all blocks, against one Lanczos run per block.

    nice -n 10 python benchmarks/block_spectra.py --threads 1        # zoo vit1d and resnet1d, 128 MNIST-1D samples

For each model (random initialization, eval mode): `block_spectra(op, iters, vectors, exact_max=0)` (every block
by Lanczos, all blocks' vectors stacked into one product of the full operator per step), then the same blocks one
after another with `lanczos(RestrictedOperator(op, block))` (one product per block per step). Reported: seconds,
products of the full operator (data passes), vector products, the largest difference between the two runs' Ritz
values (they do the same arithmetic), and the peak RSS of the process. One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.data import load_data
from landscape.hessian import HessianOperator, lanczos
from landscape.hessian.blocks import RestrictedOperator, block_segments, block_spectra
from landscape.models import build


class Counting:
    """An operator that counts its products and their columns."""

    def __init__(self, op):
        self.op, self.dim, self.dtype, self.device = op, op.dim, op.dtype, op.device
        self.layout, self.model = op.layout, op.model
        self.calls = self.columns = 0

    def matmat(self, V):
        self.calls += 1
        self.columns += V.shape[1]
        return self.op.matmat(V)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit1d,resnet1d")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--vectors", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-cache", action="store_true", help="operator without kept graphs: every pass re-runs "
                    "the forward and backward of every batch (as for data that do not fit in memory)")
    ap.add_argument("--batch-size", type=int, default=None, help="batches of the measured samples")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data("mnist1d", "train")
    X, y = data.X[:args.samples], data.y[:args.samples]
    for name in args.models.split(","):
        model = build(name, seed=0).eval()
        data = (X, y) if args.batch_size is None else list(zip(X.split(args.batch_size), y.split(args.batch_size)))
        op = Counting(HessianOperator(model, F.cross_entropy, data, backend="double_backward",
                                      cache=not args.no_cache, merge_batches=False))
        found = block_segments(op)
        t0 = time.perf_counter()
        res = block_spectra(op, iters=args.iters, vectors=args.vectors, exact_max=0)
        batched = {"seconds": time.perf_counter() - t0, "passes": op.calls, "columns": op.columns}
        op.calls = op.columns = 0
        t0 = time.perf_counter()
        diff = 0.0
        for i, (block, (_, segs)) in enumerate(found.items()):
            alone = lanczos(RestrictedOperator(op, segs), iters=min(args.iters, sum(b - a for a, b in segs)),
                            vectors=args.vectors, seed=i)
            diff = max(diff, float(np.abs(alone.ritz()[0] - res.spectra[block].nodes).max()))
        separate = {"seconds": time.perf_counter() - t0, "passes": op.calls, "columns": op.columns}
        print(json.dumps({"model": name, "dim": op.dim, "blocks": len(found), "samples": args.samples,
                          "cache": not args.no_cache, "batch_size": args.batch_size,
                          "iters": args.iters, "vectors": args.vectors, "threads": torch.get_num_threads(),
                          "batched": batched, "separate": separate,
                          "speedup": separate["seconds"] / batched["seconds"], "max_ritz_difference": diff,
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
