"""Seconds per MNIST-1D epoch (4,000 samples, batch 128, Adam) of the 20 × 128 FC nets of each kind on CPU.

    . /work/venv/bin/activate && python benchmarks/train_epoch.py                 # 1 and 2 threads, 3 epochs
    python benchmarks/train_epoch.py --threads 1 --epochs 5 --nets plain,residual

Two timings per net and thread count, each in a fresh subprocess (threads are set once per process):
- "train": the epoch seconds `landscape.train.train` records in its history (the whole epoch as a user
  runs it: shuffled batches, forward, cross-entropy, backward, Adam step, running metrics, and the
  evaluation on the 1,000 test samples; no checkpoint written). The first epoch is a warm-up; the
  median of the others is reported.
- "loop": the bare step alone (zero_grad, forward, cross-entropy, backward, Adam step) over one
  epoch's 32 batches, median of `--epochs` epochs after one warm-up: the floor the trainer adds to.
Nets: kind plain, residual, hyper, dense_orthogonal, and kind plain with connect="ortho_feature".
Prints one JSON line per measurement; with --repeat ≥ 2 a "median" line per net and thread count follows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NETS = {
    "plain": {"kind": "plain"},
    "residual": {"kind": "residual"},
    "hyper": {"kind": "hyper"},
    "dense_orthogonal": {"kind": "dense_orthogonal"},
    "ortho_feature": {"kind": "plain", "connect": "ortho_feature"},
}


def measure(net: str, threads: int, epochs: int, depth: int, width: int) -> dict:
    """Both timings for one net in this process."""
    import torch
    import torch.nn.functional as F

    from landscape.data import load_data
    from landscape.models import build
    from landscape.train import train

    torch.set_num_threads(threads)
    config = {"depth": depth, "width": width, **NETS[net]}
    res = train(
        {
            "model": "fc",
            "model_config": config,
            "epochs": epochs + 1,
            "batch_size": 128,
            "optimizer": "adam",
            "lr": 1e-3,
            "device": "cpu",
            "threads": threads,
            "progress": False,
        }
    )
    train_s = statistics.median(r["seconds"] for r in res["history"][1:])

    data = load_data("mnist1d", "train")
    model = build("fc", in_dim=data.X.shape[1], n_classes=data.n_classes, seed=0, **config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs + 1):
        t = time.perf_counter()
        for X, y in data.batches(128, shuffle=True, generator=gen):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X), y).backward()
            opt.step()
        times.append(time.perf_counter() - t)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "train_epoch_s": train_s,
        "loop_epoch_s": statistics.median(times[1:]),
        "params": n_params,
        "samples": len(data.X),
        "torch": torch.__version__,
    }


def _child_env() -> dict:
    """The environment with the repository root first on PYTHONPATH, so children import this landscape."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {','.join(NETS)}")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all nets; medians reported (default 1)")
    p.add_argument("--depth", type=int, default=20, help="blocks (default 20)")
    p.add_argument("--width", type=int, default=128, help="units per block (default 128)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(measure(a.worker, a.threads[0], a.epochs, a.depth, a.width)))
        return
    nets = [n for n in a.nets.split(",") if n]
    unknown = sorted(set(nets) - set(NETS))
    if unknown:
        p.error(f"unknown nets: {', '.join(unknown)}")
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.repeat):
        for t in a.threads:
            for net in nets:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    net,
                    "--threads",
                    str(t),
                    "--epochs",
                    str(a.epochs),
                    "--depth",
                    str(a.depth),
                    "--width",
                    str(a.width),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
                if out.returncode != 0:
                    rec = {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
                else:
                    rec = json.loads(out.stdout.strip().splitlines()[-1])
                    runs.setdefault((net, t), []).append(rec)
                print(
                    json.dumps({"net": net, "threads": t, "run": r, "load_avg": os.getloadavg()[0], **rec}), flush=True
                )
    if a.repeat < 2:
        return
    for (net, t), recs in runs.items():
        med = {k: statistics.median(x[k] for x in recs) for k in ("train_epoch_s", "loop_epoch_s")}
        print(json.dumps({"net": net, "threads": t, "what": "median", "runs": len(recs), **med}), flush=True)


if __name__ == "__main__":
    main()
