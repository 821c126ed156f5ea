"""Peak memory of GGN (and Hessian) products on a Pythia-160M-size GPT-NeoX built from its config.

hessian-eigenthings 1.0.0a6 reports fitting the GGN of Pythia-160M in 10.17 GB on an A100 (its README's
validation table); this builds the same architecture from a config (12 layers, hidden 768, 12 heads,
intermediate 3072, vocabulary 50,304, rotary on 25% of each head; no download), B × T random tokens of
seed 0, and reports for each operator the peak device memory of building it and of one product with k
vectors (`torch.cuda.max_memory_allocated` after a reset; on a CPU the growth of the process's peak RSS, which
reads 0 when an earlier step already reached it), with the parameter bytes beside it. One JSON line per
operator.

    python benchmarks/lm_memory.py --device cuda                     # B = 16, T = 256 (the GPU check)
    python benchmarks/lm_memory.py --layers 1 --hidden 32 --heads 2 --vocab 64 --batch 2 --seq 16   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch

from landscape.hessian import GGNOperator, HessianOperator

REFERENCE = {"source": "hessian-eigenthings 1.0.0a6 README", "model": "Pythia-160M", "ggn_peak_gb": 10.17,
             "device": "A100"}


def peak(fn, device: torch.device) -> tuple[object, int, float]:
    """(fn(), peak bytes above what was allocated before, seconds)."""
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - before, time.perf_counter() - t0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    return out, 1024 * (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before), time.perf_counter() - t0


def main() -> None:
    import transformers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--operators", nargs="+", default=["ggn", "hessian"])
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(num_hidden_layers=args.layers, hidden_size=args.hidden,
                                     num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                                     vocab_size=args.vocab, rotary_pct=0.25, max_position_embeddings=2048,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPTNeoXForCausalLM(cfg).to(device).eval()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids.to(device)}]
    n = sum(q.numel() for q in model.parameters())
    base = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "params": n, "param_bytes": n * 4, "batch": args.batch, "seq": args.seq,
            "k": args.k, "loadavg": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d")}
    for name in args.operators:
        cls = GGNOperator if name == "ggn" else HessianOperator
        op, build_bytes, build_s = peak(lambda cls=cls: cls(model, None, batches), device)
        V = torch.randn(op.dim, args.k, generator=torch.Generator().manual_seed(1)).to(device, op.dtype)
        _, product_bytes, product_s = peak(lambda op=op, V=V: op.matmat(V), device)
        print(json.dumps({**base, "operator": name, "backend": op.backend, "build_peak_bytes": build_bytes,
                          "build_seconds": build_s, "product_peak_bytes": product_bytes, "product_seconds": product_s,
                          "peak_gb": max(build_bytes, product_bytes) / 1e9 + n * 4 / 1e9,
                          "reference": REFERENCE}), flush=True)
        del op


if __name__ == "__main__":
    main()
