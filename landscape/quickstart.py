"""Quickstart: plain, residual, hyper-residual and orthogonal-update FC nets on MNIST-1D, on a CPU in minutes.

    python -m landscape.quickstart [--out runs/quickstart] [--figures figures] [--epochs 30] [--device auto]

Four depth-20 × width-128 ReLU nets (SPEC A.1; the architectures are reconstructions [R]) trained with the
same seed, data and optimizer (Adam 1e-3, batch 128, 4,000 MNIST-1D training and 1,000 test samples):
    plain              s_{l+1} = ReLU(W s_l + b)
    residual           s_{l+1} = ReLU(W s_l + b) + s_l
    hyper-residual     s_{l+1} = ReLU(W s_l + b) + s_l + a_l Σ_{k<l} Q_k s_k    (Q_k fixed random orthogonal)
    orthogonal update  s_{l+1} = s_l + f − (⟨s_l, f⟩ / ‖s_l‖²) s_l,  f = ReLU(W s_l + b)   (SPEC B.1)
Writes FIGURES/quickstart_training.{png,pdf} (training loss and accuracy per epoch),
FIGURES/quickstart_summary.md, OUT/summary.json and one run directory per net (checkpoint, metrics.jsonl,
config.json). Runs already in OUT are resumed or, when finished, reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from landscape.errors import LandscapeError, resolve_device, run_cli
from landscape.plots import plot_training_curves
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
    histories, rows = {}, []
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
        rows.append(_row(name, label, result))
    wall = time.perf_counter() - t0
    setup = {"depth": args.depth, "width": args.width, "n_samples": args.n_samples, "epochs": args.epochs,
             "optimizer": "adam", "lr": 1e-3, "batch_size": 128, "seed": args.seed, "device": str(device),
             "threads": threads, "wall_seconds": wall}
    title = f"MNIST-1D, depth {args.depth} × width {args.width} ReLU nets, Adam 1e-3"
    plot_training_curves(histories, figures / "quickstart_training", title=title)
    table = _table(rows)
    (figures / "quickstart_summary.md").write_text(_markdown(setup, table))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"setup": setup, "nets": rows}, indent=2) + "\n")
    print(table)
    print(f"wall time {wall:.0f} s; figure {figures / 'quickstart_training.png'}, "
          f"summary {figures / 'quickstart_summary.md'}")
    return 0


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
            f"first epoch with train acc ≥ {TARGET_ACC} | seconds |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        reached = "—" if r["epoch_to_target"] is None else str(r["epoch_to_target"])
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['train_loss']:.4f} | {r['train_acc']:.3f} | "
                     f"{r['test_acc']:.3f} | {reached} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def _markdown(setup: dict, table: str) -> str:
    return (f"# Quickstart: skip connections on MNIST-1D\n\n"
            f"Depth {setup['depth']} × width {setup['width']} ReLU FC nets, Adam lr {setup['lr']:g}, batch "
            f"{setup['batch_size']}, {setup['n_samples']} MNIST-1D training samples, {setup['epochs']} "
            f"epochs, seed {setup['seed']}, device {setup['device']} "
            f"(threads: {setup['threads'] or 'default'}); "
            f"total wall time {setup['wall_seconds']:.0f} s. Train loss and accuracy are running means over "
            "the last epoch; test accuracy is measured after it.\n\n"
            f"{table}\n\n"
            "One seed. The architectures, initialization (Glorot-normal, zero biases) and setup reconstruct "
            "Orhan & Pitkow (SPEC A.1/A.3 [R]); with all-positive ReLU branches added to the stream its "
            "scale grows with depth, so compare the curves rather than reading a verdict into one run.\n"
            "![training curves](quickstart_training.png)\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
