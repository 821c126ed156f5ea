"""Wall time with 1 and W gloo ranks on CPU: training epochs of 20 × 128 FC nets, and an SLQ spectrum.

    python benchmarks/distributed_scaling.py                    # both tasks, 1 and 2 ranks
    python benchmarks/distributed_scaling.py --task train --ranks 1 2 4 --epochs 6 --kinds residual
    python benchmarks/distributed_scaling.py --task slq --slq-depth 8 --slq-width 64

Each configuration starts its ranks as fresh processes with torchrun's environment contract (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), one torch thread per rank, and runs `landscape.train.train`
on 4,000 MNIST-1D samples with global batch 128 (each rank 128 / W of every batch). The first epoch
is warm-up; the median of the others is reported, with the gradient all_reduce size per step.
On a machine with fewer free cores than ranks the ranks share cores and the numbers say so
(the `loadavg` field records the load around the run). Prints one JSON line per configuration.

The SLQ task trains one residual FC net (`--slq-depth` × `--slq-width`, 2 epochs), then runs
`torchrun --nproc_per_node W -m landscape.hessian CKPT` on the same 4,000 samples (80 iterations ×
4 probes, no top-k) for each W, and reports the CLI's own `seconds`, the all_reduce volume per
data pass (k vectors of n parameters, float32, plus the packed sample count; one per
Lanczos iteration) and how far the density and λmax of W ranks are from one process's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rank_main(args: argparse.Namespace) -> None:
    """One rank: train, then rank 0 prints the run's history as one JSON line."""
    sys.path.insert(0, str(ROOT))
    from landscape import distributed
    from landscape.train import train

    cfg = {"model": "fc", "model_config": {"kind": args.kind, "depth": 20, "width": 128}, "n_samples": 4000,
           "batch_size": 128, "epochs": args.epochs, "optimizer": "adam", "lr": 1e-3, "device": "cpu",
           "threads": 1, "progress": False}
    result = train(cfg)
    n_params = sum(p.numel() for p in result["model"].parameters())
    if distributed.is_main():
        print(json.dumps({"history": result["history"], "n_params": n_params,
                          "world_size": result["world_size"]}), flush=True)
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cache: str) -> dict:
    """This environment without rank variables, one thread per rank, the shared data cache, the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "LANDSCAPE_CACHE": cache, "PYTHONPATH": str(ROOT)}


def _run(world: int, kind: str, epochs: int, cache: str) -> dict:
    port = str(_free_port())
    env = _env(cache)
    argv = [sys.executable, __file__, "--rank-main", "--kind", kind, "--epochs", str(epochs)]
    procs = []
    for r in range(world):
        rank_env = env if world == 1 else {**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(argv, env=rank_env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def _slq(args: argparse.Namespace, cache: str) -> None:
    """SLQ wall time with each world size in args.ranks, on one trained checkpoint."""
    from landscape.train import train

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp, "run")
        train({"model": "fc", "model_config": {"kind": "residual", "depth": args.slq_depth,
                                               "width": args.slq_width},
               "n_samples": 4000, "batch_size": 128, "epochs": 2, "optimizer": "adam", "lr": 1e-3,
               "device": "cpu", "threads": 1, "progress": False, "out": str(run)})
        env = _env(cache)
        base = None
        for world in args.ranks:
            out = Path(tmp, f"slq{world}")
            load_before = os.getloadavg()[0]
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            str(world), "-m", "landscape.hessian", str(run / "checkpoint.pt"), "--iters", "80",
                            "--vectors", "4", "--top-k", "0", "--batch-size", "500", "--device", "cpu",
                            "--no-progress", "--out", str(out)], env=env, check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            spec = json.loads((out / "spectrum.json").read_text())
            base = base or spec
            density = [abs(a - b) for a, b in zip(spec["density"], base["density"])]
            print(json.dumps({
                "benchmark": "distributed_slq", "model": f"fc-residual-{args.slq_depth}x{args.slq_width}",
                "n_params": spec["n_params"], "data": "mnist1d-4000", "batch_size": 500, "iters": 80, "probes": 4,
                "world_size": world, "backend": "gloo" if world > 1 else "none", "threads_per_rank": 1,
                "slq_seconds": round(spec["seconds"], 3), "process_wall_seconds": round(wall, 2),
                "speedup_vs_first": round(base["seconds"] / spec["seconds"], 3),
                "allreduce_mb_per_pass": round((4 * spec["n_params"] + 8) * 4 / 2**20, 3) if world > 1 else 0.0,
                "lambda_max": spec["lambda_max"],
                "lambda_max_rel_diff_vs_first": abs(spec["lambda_max"] - base["lambda_max"]) / abs(base["lambda_max"]),
                "density_max_abs_diff_vs_first": max(density), "cpu_count": os.cpu_count(),
                "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["train", "slq", "both"], default="both", help="what to time (default both)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="world sizes to time (default 1 2)")
    p.add_argument("--slq-depth", type=int, default=8, help="hidden layers of the SLQ task's FC net (default 8)")
    p.add_argument("--slq-width", type=int, default=64, help="width of the SLQ task's FC net (default 64)")
    p.add_argument("--kinds", nargs="+", default=["residual", "plain"], help="FC kinds (default residual plain)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run, the first is warm-up (default 5)")
    p.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="residual", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_main:
        _rank_main(args)
        return 0
    with tempfile.TemporaryDirectory() as cache:
        sys.path.insert(0, str(ROOT))
        os.environ["LANDSCAPE_CACHE"] = cache
        from landscape.data import load_data

        load_data(n_samples=4000)                      # generate MNIST-1D once, outside the timings
        if args.task in ("slq", "both"):
            _slq(args, cache)
        for kind in args.kinds if args.task in ("train", "both") else ():
            base = None
            for world in args.ranks:
                load_before = os.getloadavg()[0]
                res = _run(world, kind, args.epochs, cache)
                seconds = [h["seconds"] for h in res["history"][1:]]
                median = statistics.median(seconds)
                base = base or median
                print(json.dumps({
                    "benchmark": "distributed_scaling", "model": f"fc-{kind}-20x128", "data": "mnist1d-4000",
                    "global_batch": 128, "world_size": world, "backend": "gloo" if world > 1 else "none",
                    "threads_per_rank": 1, "epoch_seconds_median": round(median, 4),
                    "epoch_seconds": [round(s, 4) for s in seconds], "speedup_vs_first": round(base / median, 3),
                    "steps_per_epoch": 32, "allreduce_mb_per_step": round(res["n_params"] * 4 / 2**20, 3)
                    if world > 1 else 0.0, "final_train_loss": round(res["history"][-1]["train_loss"], 5),
                    "cpu_count": os.cpu_count(), "loadavg": [round(load_before, 2),
                                                             round(os.getloadavg()[0], 2)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
