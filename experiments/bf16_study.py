"""What bf16 does to a Hessian spectrum: λmax, the trace and the SLQ density in bf16 against float64 and float32.

    python experiments/bf16_study.py run [--models lm resnet] [--seeds 0 1 2 3 4]   # records/bf16_study/
    python experiments/bf16_study.py report                                        # the tables, from the records
    python experiments/bf16_study.py report --check RESULTS.md                     # RESULTS.md's block is current

Declared before running (docs/methods.md §E.9): the primary metric is the relative error of λmax in bf16
(model weights in bf16, exact double-backward products) against float64; secondary: the relative error of
the trace (Hutchinson, the same 16 Rademacher vectors in every precision, so the vector noise cancels) and the
W1 distance of the SLQ density (20 iterations × 2 vectors, the same start vectors) over λmax; the same for
float32 (the reference's own error) and for float32 weights under bf16 autocast. Five seeds per model, each
its own initialization, training run and measurement set; intervals: geometric mean with a 95% t-interval
of log10 (the errors are positive and span decades), and the median.

Cause measurements, per seed: the relative error of single products (4 random unit vectors and the top
eigenvector) in each precision; and of central finite differences D(δ) along the top eigenvector at
δ = δ₀·2^−i (δ₀ = ∛ε_f32·(1 + ‖θ‖), i = −6..14: bf16's best step lies above float32's δ₀) with gradients in
float32 and in bf16, whose minimum over δ is what a finite-difference product can reach in that dtype.

Models: "lm", a GPT-2-like config (2 layers, 32 wide, 2 heads, 256 byte tokens, 32 positions) trained 150
AdamW steps on 8 × 32-token windows of the Python standard library's sources (landscape.text), measured on
4 × 32 test-split tokens; "resnet", the zoo's resnet1d (width 8, one block per stage, BatchNorm in eval mode)
trained 3 epochs on 2,000 MNIST-1D samples, measured on 128 training samples. (Sized for a shared 2-core CPU.)
Every run is 1 CPU thread; records hold the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape.hessian import HessianOperator, hutchinson_trace, slq_density, top_eigenpairs  # noqa: E402
from landscape.hessian.operators import finite_difference as fd  # noqa: E402
from landscape.io import dumps  # noqa: E402

RECORDS = ROOT / "records" / "bf16_study"
VARIANTS = ("float64", "float32", "bf16", "autocast")
STEPS = range(-6, 15)
TOL = {"float64": 1e-8, "float32": 1e-5, "bf16": 2e-2, "autocast": 2e-2}
BEGIN, END = "<!-- generated: bf16_study -->", "<!-- end: bf16_study -->"


# ---- the two models ---------------------------------------------------------------------------------

def lm(seed: int, layers: int = 2, width: int = 32, heads: int = 2, seq: int = 32, batch: int = 8,
       steps: int = 150, device: str = "cpu"):
    """(model, loss_fn, measurement batches, training record) for a byte-level GPT-2-like LM trained `steps`
    AdamW steps on `batch` × `seq`-token windows, measured on 4 × `seq` test-split tokens."""
    import transformers

    from landscape.text import corpus_info, token_windows

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=256, n_positions=seq,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(steps):
        ids = token_windows(batch, seq, split="train", seed=1000 * seed + step).to(device)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    measure = [{"input_ids": token_windows(4, seq, split="test", seed=seed).to(device)}]
    return model, None, measure, {"train_loss_last10": float(np.mean(losses[-10:])), "steps": steps,
                                  "text": corpus_info("train")}


def resnet(seed: int):
    """(model, loss_fn, measurement batches, training record) for the zoo's resnet1d on MNIST-1D."""
    import torch.nn.functional as F

    from landscape.train import train

    run = train({"model": "resnet1d", "model_config": {"width": 8, "n_blocks": 1}, "data": "mnist1d",
                 "n_samples": 2000, "epochs": 3, "batch_size": 128, "optimizer": "adam", "lr": 3e-3, "seed": seed,
                 "device": "cpu", "progress": False})
    from landscape.data import load_data

    data = load_data("mnist1d", n_samples=2000)
    model = run["model"].eval()
    return model, F.cross_entropy, [(data.X[:128], data.y[:128])], {"train_loss": run["final"]["train_loss"],
                                                                   "test_acc": run["final"]["test_acc"]}


MODELS = {"lm": lm, "resnet": resnet}


# ---- measurements --------------------------------------------------------------------------------------

def operator(model, loss_fn, data, variant: str):
    """The Hessian in a precision: float64 / float32 / bf16 weights (exact products), or bf16 autocast."""
    if variant == "autocast":
        return HessianOperator(model, loss_fn, data, autocast=torch.bfloat16)
    dtype = {"float64": torch.float64, "float32": torch.float32, "bf16": torch.bfloat16}[variant]
    return HessianOperator(model, loss_fn, data, dtype=dtype)  # the solvers keep float32 vectors for bf16


def w1(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """W1 = ∫ |F_a − F_b| between two spectral measures given as SLQ (nodes [k, m], weights [k, m])."""
    xa, wa = a[0].ravel(), a[1].ravel() / a[0].shape[0]
    xb, wb = b[0].ravel(), b[1].ravel() / b[0].shape[0]
    x = np.concatenate([xa, xb])
    w = np.concatenate([wa, -wb])
    order = np.argsort(x, kind="stable")
    cdf = np.cumsum(w[order])[:-1]
    return float(np.sum(np.abs(cdf) * np.diff(x[order])))


def measure(op, variant: str) -> dict:
    """λmax (with its residual), 32-vector Hutchinson trace, a 30 × 2 SLQ run, seconds."""
    t0 = time.perf_counter()
    top = top_eigenpairs(op, 1, tol=TOL[variant], max_matmats=40, seed=1)
    tr = hutchinson_trace(op, vectors=16, seed=2)
    sd = slq_density(op, iters=20, vectors=2, seed=3)
    return {"lambda_max": float(top.eigenvalues[0]), "residual": float(top.residuals[0]),
            "converged": bool(top.converged), "products": int(top.n_products), "trace": tr.trace,
            "nodes": sd.nodes.tolist(), "weights": sd.weights.tolist(), "seconds": time.perf_counter() - t0,
            "u": top.eigenvectors[:, 0].double()}


def product_errors(ops: dict, u: torch.Tensor) -> dict:
    """Relative error ‖H_p v − H_64 v‖ / ‖H_64 v‖ of each precision p for 4 random unit vectors and u."""
    dim = u.numel()
    V = torch.randn(dim, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    V = torch.cat([V / V.norm(dim=0), u[:, None]], 1)
    ref = ops["float64"].matmat(V)
    out = {}
    for name, op in ops.items():
        if name != "float64":
            err = ((op.matmat(V.float()).double() - ref).norm(dim=0) / ref.norm(dim=0)).tolist()
            out[name] = {"random": float(np.median(err[:4])), "top": err[4]}
    return out


def fd_curve(model, loss_fn, data, u: torch.Tensor, lam: float) -> dict:
    """Relative error of D(δ)ᵀu against λmax along the top eigenvector u, gradients in float32 and bf16."""
    from landscape.hessian.operators.flat import Snapshot
    from landscape.objective import Objective

    out = {}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        snap = Snapshot(Objective(model, loss_fn, data), dtype)
        batch = next(iter(snap.batches()))
        theta = list(snap.params.values())
        names = snap.layout.names
        v = [t[0].to(dtype) for t in snap.layout.split(u[None].to(dtype))]
        d0 = fd.initial_step(math.sqrt(sum(float(t.double().square().sum()) for t in theta)), torch.float32)
        errors = []

        def gradient(th, snap=snap, names=names, batch=batch):
            return snap.gradient(dict(zip(names, th)), batch)

        for i in STEPS:
            d = fd.central_difference(gradient, theta, v, d0 / 2**i)
            rq = sum(float((a.double() * b.double()).sum()) for a, b in zip(d, v)) / float(u.square().sum())
            errors.append(abs(rq - lam) / abs(lam))
        out[name] = {"delta0": d0, "steps": list(STEPS), "errors": errors, "best": min(errors),
                     "best_i": STEPS[int(np.argmin(errors))]}
    return out


def lambda_rows(args: argparse.Namespace) -> None:
    """λmax in float32, bf16 weights and bf16 autocast of one trained LM, as JSON lines (error against float32)."""
    size = {k: getattr(args, k) for k in ("layers", "width", "heads", "seq", "batch", "steps")}
    model, loss_fn, data, training = lm(0, **size, device=args.device)
    ref = None
    for variant in VARIANTS[1:]:
        t0 = time.perf_counter()
        op = operator(model, loss_fn, data, variant)
        top = top_eigenpairs(op, 1, tol=max(TOL[variant], 1e-4), max_matmats=30, seed=1)
        lam = float(top.eigenvalues[0])
        ref = lam if ref is None else ref
        print(json.dumps({"measure": "lambda_max", "precision": variant, **size, "device": args.device,
                          "params": int(op.dim), "lambda_max": lam, "relative_error_vs_float32": abs(lam - ref) / ref,
                          "residual": float(top.residuals[0]), "products": int(top.n_products),
                          "seconds": time.perf_counter() - t0, "train_loss": training["train_loss_last10"]}),
              flush=True)


def run_seed(model_name: str, seed: int) -> dict:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, loss_fn, data, training = MODELS[model_name](seed)
    ops = {v: operator(model, loss_fn, data, v) for v in VARIANTS}
    results = {v: measure(op, v) for v, op in ops.items()}
    u = results["float64"]["u"]
    truth = results["float64"]
    record = {"model": model_name, "seed": seed, "n_params": int(ops["float64"].dim), "training": training,
              "variants": {}, "products": product_errors(ops, u),
              "finite_difference": fd_curve(model, loss_fn, data, u, truth["lambda_max"])}
    lam = truth["lambda_max"]
    for v, r in results.items():
        r.pop("u")
        record["variants"][v] = {**r, "lambda_max_error": abs(r["lambda_max"] - lam) / lam,
                                 "trace_error": abs(r["trace"] - truth["trace"]) / abs(truth["trace"]),
                                 "w1_over_lambda_max": w1((np.array(r["nodes"]), np.array(r["weights"])),
                                                          (np.array(truth["nodes"]), np.array(truth["weights"])))
                                 / truth["lambda_max"]}
    record["machine"] = {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                         "threads": 1, "loadavg": os.getloadavg(), "seconds": time.perf_counter() - t0}
    return record


# ---- the tables (landscape.experiment.studies.bf16_study, a study of the report registry) ---------------

def report() -> str:
    """The markdown tables of RESULTS.md's bf16 section, from the records alone."""
    from landscape.experiment.studies.bf16_study import report as tables

    return tables(RECORDS)


def check(path: Path) -> None:
    """Exit with a message unless `path`'s bf16_study block equals the report."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no bf16_study block")
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    if block != report().strip():
        raise SystemExit(f"{path}: the bf16_study block differs from the records; run "
                         "python -m landscape.experiment.report")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    c = sub.add_parser("report")
    c.add_argument("--check", type=Path, help="fail unless this file's bf16_study block equals the report")
    g = sub.add_parser("lambda", help="one JSON line per precision: λmax of an LM in float32, bf16 and autocast "
                                      "(the GPU check's row; no records)")
    for name, default in (("layers", 2), ("width", 32), ("heads", 2), ("seq", 32), ("batch", 8), ("steps", 150)):
        g.add_argument(f"--{name}", type=int, default=default)
    g.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.cmd == "lambda":
        lambda_rows(args)
    elif args.cmd == "run":
        for m in args.models:
            for s in args.seeds:
                path = RECORDS / m / f"seed{s}.json"
                if path.exists():
                    continue
                rec = run_seed(m, s)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(dumps(rec, indent=1) + "\n")
                print(f"{m} seed {s}: bf16 λmax error {rec['variants']['bf16']['lambda_max_error']:.2e} "
                      f"({rec['machine']['seconds']:.0f} s)", flush=True)
    elif args.check:
        check(args.check)
    else:
        print(report(), end="")


if __name__ == "__main__":
    main()
