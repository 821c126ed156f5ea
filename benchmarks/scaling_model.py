"""docs/scaling.md's cost and memory model of SLQ and top-k on FSDP, fitted to the measured runs, as tables.

    python benchmarks/scaling_model.py                      # the tables of docs/scaling.md
    python benchmarks/scaling_model.py --check docs/scaling.md

Reads the measured runs of benchmarks/fsdp_scaling.py (records/fsdp_scaling/*.jsonl: CPU gloo at 1 and 2 ranks;
GPU rows when a GPU session adds them), fits the two constants the model takes from measurement (α, the cost of
one finite-difference product in gradient passes, and ℓ, the latency of one of the solvers' small all_reduces),
and evaluates the model (docs/scaling.md) at 1B, 7B and 70B parameters over N GPUs with the hardware
assumptions stated there.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "records" / "fsdp_scaling"
BEGIN, END = "<!-- scaling_model:begin (benchmarks/scaling_model.py) -->", "<!-- scaling_model:end -->"

# Hardware assumptions (H100 SXM; docs/scaling.md says where each comes from). Replace by GPU rows when measured.
FLOPS = 400e12            # sustained bf16 FLOP/s per GPU (about 40% of the 989 TFLOP/s dense peak)
NVLINK = 450e9            # bytes/s per GPU within a node of 8
NETWORK = 50e9            # bytes/s per GPU across nodes (400 Gb/s InfiniBand)
LATENCY = 30e-6           # seconds per small NCCL all_reduce (a few float64 numbers)
RNG = 75e6                # Rademacher entries per second drawn on the host (measured here, loaded CPU)
TOKENS = 65_536           # measurement set: 32 sequences of 2,048 tokens
ITERS, VECTORS = 80, 4    # SLQ
TOP_PRODUCTS = 40         # a top-1 solve (top_eigenpairs) from cold, typical
SIZES = {"1B": 1.0e9, "7B": 7.0e9, "70B": 70.0e9}
GPUS = (8, 64, 512)


def fit() -> dict:
    """α = t_product / t_gradient and ℓ = (t_slq − products·t_product) / all_reduces, per measured run."""
    rows = [json.loads(line) for path in sorted(RECORDS.glob("*.jsonl")) for line in path.read_text().splitlines()
            if line.strip()]
    out = []
    for r in rows:
        if r.get("failed"):
            continue
        alpha = r["t_product"] / r["t_gradient"]
        latency = (r["t_slq"] - r["slq_products"] * r["t_product"]) / max(1, r["slq_all_reduces"])
        out.append({"ranks": r["ranks"], "device": r["device"], "params": r["dim"], "t_gradient": r["t_gradient"],
                    "t_product": r["t_product"], "alpha": alpha, "latency": latency, "loadavg": r["loadavg"],
                    "all_reduces_per_step": r["slq_all_reduces"] / r["iters"], "vectors": r["vectors"]})
    return {"runs": out, "alpha": max(r["alpha"] for r in out),
            "all_reduces_per_vector_step": max(r["all_reduces_per_step"] / r["vectors"] for r in out)}


def gradient_seconds(params: float, gpus: int) -> tuple[float, float]:
    """(compute, communication) seconds of one FSDP gradient pass over TOKENS tokens on `gpus` GPUs: 6·P·T
    FLOPs split over the GPUs; two all-gathers of bf16 parameters and one reduce-scatter of float32 gradients,
    8·P·(N−1)/N bytes per GPU."""
    compute = 6 * params * TOKENS / (gpus * FLOPS)
    link = NVLINK if gpus <= 8 else NETWORK
    return compute, 8 * params * (gpus - 1) / gpus / link


def tables() -> str:
    f = fit()
    lines = ["Measured runs (records/fsdp_scaling/):", "",
             "| ranks | device | parameters | t_gradient s | t_product s | α = product / gradient | "
             "solver all_reduce latency ℓ | load |", "|---|---|---|---|---|---|---|---|"]
    for r in f["runs"]:
        lines.append(f"| {r['ranks']} | {r['device']} | {r['params']:,} | {r['t_gradient']:.3f} | {r['t_product']:.3f} "
                     f"| {r['alpha']:.2f} | {1e3 * r['latency']:.1f} ms | {r['loadavg']:.1f} |")
    alpha, per = f["alpha"], f["all_reduces_per_vector_step"]
    lines += ["", f"Fitted: α = {alpha:.2f} (the larger of the runs), {per:.1f} all_reduces per step and vector.",
              "", "SLQ (80 steps × 4 vectors) and top-1 (40 products) on FSDP, model evaluated (per GPU, "
              "bf16 compute, float32 vectors):", "",
              "| model | GPUs | gradient pass s (compute + comm) | SLQ min | top-1 min | vector draw s | "
              "shard MiB/vector | SLQ basis GiB/GPU: full / selective r=8 | top-1 basis GiB/GPU |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, params in SIZES.items():
        for n in GPUS:
            compute, comm = gradient_seconds(params, n)
            grad = compute + comm
            product = alpha * grad
            steps = ITERS * VECTORS
            slq = (steps * product + ITERS * VECTORS * per * LATENCY) / 60
            top = TOP_PRODUCTS * product / 60
            shard = params / n * 4
            full = VECTORS * (ITERS + 5) * shard / 2**30
            selective = VECTORS * (8 + 7) * shard / 2**30
            top_basis = (3 * 20 + 2 + 3) * shard / 2**30
            lines.append(f"| {name} | {n} | {grad:.2f} ({compute:.2f} + {comm:.2f}) | {slq:.0f} | {top:.1f} | "
                         f"{params / RNG:.0f} | {shard / 2**20:,.0f} | {full:,.0f} / {selective:,.0f} | "
                         f"{top_basis:,.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", type=Path)
    args = p.parse_args()
    if args.check is None:
        print(tables(), end="")
        return
    text = args.check.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    if block != tables().strip():
        raise SystemExit(f"{args.check}: the scaling_model block differs from the records; regenerate it")
    assert math.isfinite(fit()["alpha"])


if __name__ == "__main__":
    main()
