"""Curvature products in gradients, eager and compiled (`compile=True`), for each backend, on a GPT-2 from a config.

For a GPT-2 config (byte vocabulary unless --vocab; random tokens of seed 0, eval mode, the model's own causal-LM
loss) this measures one gradient (eager and torch.compile'd) and, per backend, the seconds per vector of
`HessianOperator` / `GGNOperator` products at k vectors per data pass (eager and compile=True), each also as a
ratio to the gradient of the same mode. Compilation time is reported separately (the first call). One JSON
line per measurement, then curvlinops' published figures as reference rows.

    python benchmarks/compiled_products.py                                   # CPU: 2 x 64 wide, batch 8 x 64
    python benchmarks/compiled_products.py --device cuda --layers 12 --width 768 --heads 12 --vocab 50257 \
        --batch 8 --seq 256                                                  # GPT-2-small (gpu_check.sh)
    python benchmarks/compiled_products.py --reps 1 --k 1 --no-compile --layers 1 --width 16 --heads 2  # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch.func import functional_call, grad

from landscape.hessian import GGNOperator, HessianOperator

PUBLISHED = [
    {"model": "ResNet-18 / CIFAR-10, batch 512", "hvp_over_gradient_eager": 7.87, "hvp_over_gradient_compiled": 2.25},
    {"model": "nanoGPT-124M", "hvp_over_gradient_eager": 4.53, "hvp_over_gradient_compiled": 2.90},
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> tuple[float, float]:
    """(first call's seconds: compilation included, median of `reps` further calls)."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def build(args: argparse.Namespace, device: torch.device):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads, vocab_size=args.vocab,
                                  n_positions=args.seq, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).to(device).eval()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(device)
    return model, {"input_ids": ids}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4], help="vectors per data pass")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["hessian:func", "hessian:double_backward",
                                                    "hessian:finite_difference", "ggn:double_backward"])
    p.add_argument("--no-compile", action="store_true", help="eager only (the dry run)")
    args = p.parse_args()
    device = torch.device(args.device)
    model, batch = build(args, device)
    n = sum(q.numel() for q in model.parameters())
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "params": n, "batch": args.batch,
            "seq": args.seq, "layers": args.layers, "width": args.width, "loadavg": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d")}
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(ps):
        return functional_call(model, ps, (), {**batch, "labels": batch["input_ids"], "use_cache": False}).loss

    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    gradient = {}
    for mode in modes:
        fn = grad(loss) if mode == "eager" else torch.compile(grad(loss))
        first, g = timed(lambda fn=fn: fn(params), device, args.reps)
        gradient[mode] = g
        print(json.dumps({**info, "measure": "gradient", "mode": mode, "seconds": g, "first_call": first,
                          "ratio": 1.0}), flush=True)
    for spec in args.backends:
        kind, backend = spec.split(":")
        cls = HessianOperator if kind == "hessian" else GGNOperator
        for mode in modes:
            if mode == "compiled" and backend == "finite_difference":
                continue
            op = cls(model, None, [batch], backend=backend, compile=mode == "compiled")
            for k in args.k:
                V = torch.randn(op.dim, k, generator=torch.Generator().manual_seed(1)).to(device, op.dtype)
                first, s = timed(lambda V=V, op=op: op.matmat(V), device, args.reps)
                print(json.dumps({**info, "measure": f"{kind}_{backend}", "mode": mode, "k": k, "seconds": s / k,
                                  "first_call": first, "ratio": s / k / gradient[mode],
                                  "compile": op.info()["compile"]}), flush=True)
    for row in PUBLISHED:
        print(json.dumps({**row, "measure": "published", "source": "curvlinops documentation (benchmarks)"}),
              flush=True)


if __name__ == "__main__":
    main()
