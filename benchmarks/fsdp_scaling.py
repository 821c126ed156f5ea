"""FSDP curvature on W ranks: the cost terms of docs/scaling.md's model, measured (a GPT-2 config, 1 and 2 ranks).

    python benchmarks/fsdp_scaling.py                       # CPU: W = 1 and 2 gloo ranks (torchrun), JSON lines
    python benchmarks/fsdp_scaling.py --ranks 1 --device cuda --layers 12 --width 768 --heads 12 --vocab 50257 \
        --seq 256 --batch 8                                 # the GPU check's 1-GPU FSDP smoke row

Each configuration runs `torchrun --nproc_per_node W` of this file (`--worker`): a GPT-2 from a config (GELU,
smooth: finite differences stay in their Taylor regime), sharded by `landscape.distributed.shard_model`, each
rank holding its 1/W share of one global batch of `--batch` × `--seq` random tokens (seed 0). Rank 0 prints
one JSON line with what the model of docs/scaling.md is fitted to:

- t_gradient: seconds of one gradient pass (forward + backward with FSDP's all-gathers and reduce-scatter);
- t_product: seconds per vector of `matmat` with k vectors (2 gradient passes each, plus the perturbation);
- t_build: the operator's construction (power iterations and the step scan);
- slq: seconds of an SLQ run (--iters × --vectors) and of its top-1 refinement, with the number of the
  solvers' all-reduces (inner products and norms completed across ranks) and their float64 payload;
- local_dim / dim, and the peak memory (CUDA max allocated; on a CPU the process's peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One rank of a W-rank run (under torchrun)."""
    sys.path.insert(0, str(ROOT))
    import transformers

    from landscape import distributed
    from landscape.hessian import slq_density, top_eigenpairs
    from landscape.hessian.operators.fsdp import FSDPHessianOperator

    device = distributed.setup(args.device)
    rank, world = distributed.rank(), distributed.world_size()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads, vocab_size=args.vocab,
                                  n_positions=args.seq, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).to(device).eval()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    mine = ids.tensor_split(world)[rank].to(device)
    distributed.shard_model(model)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        distributed.barrier()
        return time.perf_counter()

    t0 = sync()
    op = FSDPHessianOperator(model, None, [{"input_ids": mine}])
    t_build = sync() - t0
    calls = {"n": 0, "numbers": 0}
    reduce = op.layout.all_reduce

    def counted(partial):
        calls["n"] += 1
        calls["numbers"] += partial.numel()
        return reduce(partial)

    op.layout.all_reduce = counted
    t0 = sync()
    for _ in range(args.reps):
        op.gradient()
    t_gradient = (sync() - t0) / args.reps
    V = torch.randn(op.dim, args.k, generator=torch.Generator().manual_seed(1)).to(device)
    t0 = sync()
    op.matmat(V)
    t_product = (sync() - t0) / args.k
    calls.update(n=0, numbers=0)
    t0 = sync()
    sd = slq_density(op, iters=args.iters, vectors=args.vectors, seed=2)
    t_slq = sync() - t0
    slq_calls = dict(calls)
    calls.update(n=0, numbers=0)
    t0 = sync()
    top = top_eigenpairs(op, 1, tol=1e-3, max_matmats=30, seed=3)
    t_top = sync() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if distributed.is_main():
        print(json.dumps({
            "ranks": world, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d"), "layers": args.layers, "width": args.width, "batch": args.batch,
            "seq": args.seq, "dim": op.layout.dim, "local_dim": op.dim, "t_build": t_build, "t_gradient": t_gradient,
            "t_product": t_product, "k": args.k, "iters": args.iters, "vectors": args.vectors, "t_slq": t_slq,
            "slq_products": args.iters * args.vectors, "slq_all_reduces": slq_calls["n"],
            "slq_all_reduce_numbers": slq_calls["numbers"], "t_top1": t_top, "top1_products": top.n_products,
            "top1_all_reduces": calls["n"], "lambda_max": float(top.eigenvalues[0]), "slq_lambda_max": sd.lambda_max,
            "fd": op.info()["finite_difference"], "peak_bytes_rank0": peak}), flush=True)
    distributed.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--vectors", type=int, default=2)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    forwarded = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "ranks")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for w in args.ranks:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               str(w), __file__, "--worker", *forwarded], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"ranks": w, "failed": True, "exit": proc.returncode,
                              "stderr": proc.stderr[-1500:]}), flush=True)
            continue
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
