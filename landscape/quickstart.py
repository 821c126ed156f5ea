"""Quickstart: plain, residual, hyper-residual and orthogonal-update FC nets on MNIST-1D, on a CPU in minutes:
trained, then measured (Hessian spectrum, gradient-norm ratio per block, unit singularities).

    python -m landscape.quickstart [--out runs/quickstart] [--figures figures] [--epochs 30] [--device auto]

Four depth-20 × width-128 ReLU nets (SPEC A.1; the architectures are reconstructions [R]) trained with the
same seed, data and optimizer (Adam 1e-3, batch 128, 4,000 MNIST-1D training and 1,000 test samples):
    plain              s_{l+1} = ReLU(W s_l + b)
    residual           s_{l+1} = ReLU(W s_l + b) + s_l
    hyper-residual     s_{l+1} = ReLU(W s_l + b) + s_l + a_l Σ_{k<l} Q_k s_k    (Q_k fixed random orthogonal)
    orthogonal update  s_{l+1} = s_l + f − (⟨s_l, f⟩ / ‖s_l‖²) s_l,  f = ReLU(W s_l + b)   (SPEC B.1)
After training, each net is measured on a fixed set of `--measure-samples` training samples: the Hessian
eigenvalue density by SLQ (`--slq-iters` Lanczos steps × `--slq-probes` probe vectors in one batch), the
gradient-norm ratio ‖∂L/∂x_l‖/‖∂L/∂x_{l+1}‖ per block (SPEC C.4) and the dead / overlap / effective-rank
statistics of the branch units (SPEC A.2).
Writes FIGURES/quickstart_training.{png,pdf} (training loss and accuracy per epoch),
FIGURES/quickstart_spectra.{png,pdf} (SLQ densities over log|λ|), FIGURES/quickstart_grad_ratio.{png,pdf},
FIGURES/quickstart_summary.md, OUT/summary.json and one run directory per net (checkpoint, metrics.jsonl,
config.json). Runs already in OUT are resumed or, when finished, reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch.nn.functional as F

from landscape.cli import run_cli
from landscape.data import load_data
from landscape.errors import LandscapeError, resolve_device
from landscape.hessian import HessianOperator, slq_density
from landscape.plots import plot_grad_ratio_grid, plot_log_spectral_density, plot_training_curves
from landscape.probes import run_probes
from landscape.train import TrainConfig, train

NETS = {  # run directory: (label, FC model config)
    "plain": ("plain", {"kind": "plain"}),
    "residual": ("residual", {"kind": "residual"}),
    "hyper": ("hyper-residual", {"kind": "hyper"}),
    "ortho": ("orthogonal update", {"kind": "plain", "connect": "ortho_feature"}),
}
TARGET_ACC = 0.9


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m landscape.quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/quickstart", help="directory of the runs (default runs/quickstart)")
    p.add_argument("--figures", default="figures", help="where the figure and summary go (default figures)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per net (default 30)")
    p.add_argument("--depth", type=int, default=20, help="hidden layers per net (default 20)")
    p.add_argument("--width", type=int, default=128, help="units per hidden layer (default 128)")
    p.add_argument("--n-samples", type=int, default=4000, help="MNIST-1D training samples (default 4000)")
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {', '.join(NETS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling (default 0)")
    p.add_argument("--measure-samples", type=int, default=1000,
                   help="training samples the spectra and probes are measured on (default 1000)")
    p.add_argument("--slq-iters", type=int, default=60, help="Lanczos steps per SLQ probe (default 60)")
    p.add_argument("--slq-probes", type=int, default=4, help="SLQ probe vectors, run as one batch (default 4)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda ... (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default 1 on CPU: these small nets run fastest single-threaded)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NETS]
    if unknown or not nets:
        raise LandscapeError(f"unknown net(s) {unknown}; choose from {', '.join(NETS)}")
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    out, figures = Path(args.out), Path(args.figures)
    t0 = time.perf_counter()
    histories, rows, spectra, ratios = {}, [], {}, {}
    for name in nets:
        label, model_config = NETS[name]
        run = out / name
        cfg = TrainConfig(model="fc", model_config={**model_config, "depth": args.depth, "width": args.width},
                          n_samples=args.n_samples, epochs=args.epochs, batch_size=128, optimizer="adam",
                          lr=1e-3, seed=args.seed, device=str(device), threads=threads, out=str(run),
                          resume=(run / "checkpoint.pt").exists())
        print(f"[{label}] training {args.epochs} epochs -> {out / name}", file=sys.stderr, flush=True)
        result = train(cfg, handle_signals=True)
        if result["status"] == "interrupted":
            print(f"interrupted: rerun the same command to resume ({run} holds epoch {result['epoch']})",
                  file=sys.stderr)
            return 128 + result["signal"]
        histories[label] = result["history"]
        row = _row(name, label, result)
        print(f"[{label}] measuring spectrum and probes on {args.measure_samples} samples", file=sys.stderr,
              flush=True)
        spectra[label], records, measured = measure(result["model"], args, device)
        ratios[label] = records
        rows.append({**row, **measured})
    wall = time.perf_counter() - t0
    setup = {"depth": args.depth, "width": args.width, "n_samples": args.n_samples, "epochs": args.epochs,
             "optimizer": "adam", "lr": 1e-3, "batch_size": 128, "seed": args.seed, "device": str(device),
             "threads": threads, "wall_seconds": wall}
    title = f"MNIST-1D, depth {args.depth} × width {args.width} ReLU nets, Adam 1e-3"
    plot_training_curves(histories, figures / "quickstart_training", title=title)
    plot_log_spectral_density(spectra, figures / "quickstart_spectra", title=f"Hessian spectral density, {title}")
    plot_grad_ratio_grid(ratios, path=figures / "quickstart_grad_ratio",
                         title="gradient-norm ratio per block after training (1 = norm preserved)")
    table = _table(rows)
    (figures / "quickstart_summary.md").write_text(_markdown(setup, table))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"setup": setup, "nets": rows}, indent=2) + "\n")
    print(table)
    print(f"wall time {wall:.0f} s; figure {figures / 'quickstart_training.png'}, "
          f"summary {figures / 'quickstart_summary.md'}")
    return 0


def measure(model, args, device) -> tuple:
    """SLQ density, gradient-norm ratios and unit statistics of a trained net on the first
    `measure_samples` training samples (the same fixed set for every net)."""
    data = load_data("mnist1d", n_samples=args.n_samples, device=device)
    X, y = data.X[: args.measure_samples], data.y[: args.measure_samples]
    model.eval()
    sd = slq_density(HessianOperator(model, F.cross_entropy, (X, y)), iters=args.slq_iters,
                     probes=args.slq_probes, seed=args.seed)
    records = run_probes(model, (X, y), F.cross_entropy, metrics=("grad_norm", "singularity"))
    summary = sd.summary()

    def block_mean(metric: str) -> float:
        values = [r["value"] for r in records if r["metric"] == metric and r["value"] == r["value"]]
        return sum(values) / len(values) if values else float("nan")

    ratios = [r["value"] for r in records if r["metric"] == "grad_ratio"]
    measured = {"lambda_max": summary["lambda_max"], "degenerate_ratio": summary["degenerate_ratio"],
                "negative_ratio": summary["negative_ratio"], "grad_ratio_min": min(ratios),
                "grad_ratio_max": max(ratios), "dead_frac": block_mean("dead_frac"),
                "overlap_act": block_mean("overlap_act")}
    return sd, [{**r, "epoch": args.epochs} for r in records if r["metric"] == "grad_ratio"], measured


def _row(name: str, label: str, result: dict) -> dict:
    hist = result["history"]
    reached = next((h["epoch"] for h in hist if h["train_acc"] >= TARGET_ACC), None)
    final = hist[-1]
    return {"net": name, "label": label, "parameters": sum(p.numel() for p in result["model"].parameters()),
            "train_loss": final["train_loss"], "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "best_train_acc": max(h["train_acc"] for h in hist), "epoch_to_target": reached,
            "seconds": sum(h["seconds"] for h in hist)}


def _table(rows: list[dict]) -> str:
    head = ("| net | parameters | train loss | train acc | test acc | "
            f"first epoch with train acc ≥ {TARGET_ACC} | seconds | λmax | degenerate | negative | "
            "grad ratio min–max | dead units | overlap |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        reached = "—" if r["epoch_to_target"] is None else str(r["epoch_to_target"])
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['train_loss']:.4f} | {r['train_acc']:.3f} | "
                     f"{r['test_acc']:.3f} | {reached} | {r['seconds']:.0f} | {r['lambda_max']:.4g} | "
                     f"{r['degenerate_ratio']:.3f} | {r['negative_ratio']:.3f} | "
                     f"{r['grad_ratio_min']:.2f}–{r['grad_ratio_max']:.2f} | {r['dead_frac']:.3f} | "
                     f"{r['overlap_act']:.3f} |")
    return "\n".join(lines)


def _markdown(setup: dict, table: str) -> str:
    return (f"# Quickstart: skip connections on MNIST-1D\n\n"
            f"Depth {setup['depth']} × width {setup['width']} ReLU FC nets, Adam lr {setup['lr']:g}, batch "
            f"{setup['batch_size']}, {setup['n_samples']} MNIST-1D training samples, {setup['epochs']} "
            f"epochs, seed {setup['seed']}, device {setup['device']} "
            f"(threads: {setup['threads'] or 'default'}); "
            f"total wall time {setup['wall_seconds']:.0f} s. Train loss and accuracy are running means over "
            "the last epoch; test accuracy is measured after it. λmax and the degenerate (|λ| < 1e-3 λmax) "
            "and negative (λ < −1e-3 λmax) spectral mass come from SLQ on the Hessian of the mean loss over "
            "the first measurement samples; gradient-norm ratios and unit statistics (block means) from "
            "`landscape.probes` on the same samples.\n\n"
            f"{table}\n\n"
            "One seed. The architectures, initialization (Glorot-normal, zero biases) and setup reconstruct "
            "Orhan & Pitkow (SPEC A.1/A.3 [R]); with all-positive ReLU branches added to the stream its "
            "scale grows with depth, so compare the curves rather than reading a verdict into one run.\n"
            "![training curves](quickstart_training.png)\n"
            "![spectra](quickstart_spectra.png)\n![gradient-norm ratios](quickstart_grad_ratio.png)\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
