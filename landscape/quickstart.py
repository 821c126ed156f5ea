"""Quickstart: plain, residual, hyper-residual and orthogonal-update FC nets on MNIST-1D, on a CPU in minutes:
trained, then measured (Hessian spectrum, gradient-norm ratio per block, unit singularities).

    python -m landscape.quickstart [--out runs/quickstart] [--figures figures] [--epochs 30] [--device auto]

Four ReLU nets (docs/methods.md §A.1; the architectures are reconstructions [R]) trained with the same seed,
data and optimizer; sizes and hyperparameters are `SETUP` (depth 20 × width 128, Adam 1e-3, batch 128,
30 epochs on 4,000 MNIST-1D training and 1,000 test samples), the one place they are written down
(the CLI defaults, the quickstart notebook and the README all read it):
    plain              s_{l+1} = ReLU(W s_l + b)
    residual           s_{l+1} = ReLU(W s_l + b) + s_l
    hyper-residual     s_{l+1} = ReLU(W s_l + b) + s_l + a_l Σ_{k<l} Q_k s_k    (Q_k fixed random orthogonal)
    orthogonal update  s_{l+1} = s_l + f − (⟨s_l, f⟩ / ‖s_l‖²) s_l,  f = ReLU(W s_l + b)   (docs/methods.md §B.1)
After training, each net is measured on a fixed set of `--measure-samples` training samples: the Hessian
eigenvalue density by SLQ (`--slq-iters` Lanczos steps × `--slq-vectors` random vectors in one batch), the
gradient-norm ratio ‖∂L/∂x_l‖/‖∂L/∂x_{l+1}‖ per block (docs/methods.md §C.4; residual blocks, the input
transition apart, as `landscape.experiment.keys` defines it) and the dead / overlap / effective-rank
statistics of the branch units (docs/methods.md §A.2).
Writes FIGURES/quickstart_training.{png,pdf} (training loss and accuracy per epoch),
FIGURES/quickstart_spectra.{png,pdf} (SLQ densities over log|λ|), FIGURES/quickstart_grad_ratio.{png,pdf},
FIGURES/quickstart_summary.md, OUT/summary.json and one run directory per net (checkpoint, metrics.jsonl,
config.json). Runs already in OUT are resumed or, when finished, reused.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch.nn.functional as F

from landscape.cli import Interrupted, Parser, cpu_threads, prepare_out_dir
from landscape.data import load_data, measurement_set
from landscape.errors import LandscapeError, resolve_device
from landscape.io import write_json
from landscape.plots import plot_grad_ratio_grid, plot_log_spectral_density, plot_training_curves
from landscape.train import TrainConfig, train

NETS = {  # run directory: (label, FC model config)
    "plain": ("plain", {"kind": "plain"}),
    "residual": ("residual", {"kind": "residual"}),
    "hyper": ("hyper-residual", {"kind": "hyper"}),
    "ortho": ("orthogonal update", {"kind": "plain", "connect": "ortho_feature"}),
}
# The quickstart's sizes and hyperparameters, written down once: the CLI's defaults, the quickstart notebook
# (which uses SMALL nets, small enough for the exact Hessian, and SMOKE sizes in CI) and the README read them.
SETUP = {"depth": 20, "width": 128, "n_samples": 4000, "epochs": 30, "batch_size": 128, "optimizer": "adam",
         "lr": 1e-3, "seed": 0, "measure_samples": 1000, "slq_iters": 60, "slq_vectors": 4, "eps": 1e-3}
SMALL = {**SETUP, "depth": 6, "width": 16, "measure_samples": 512}
SMOKE = {**SETUP, "depth": 3, "width": 8, "n_samples": 256, "epochs": 2, "measure_samples": 128, "slq_iters": 10}
TARGET_ACC = 0.9


def train_config(setup: dict, model_config: dict, **overrides) -> TrainConfig:
    """The `TrainConfig` of one quickstart net: an FC net of `setup`'s depth and width, its data and optimizer.

    Args:
        setup: `SETUP` or a variant of it (SMALL, SMOKE).
        model_config: the net's own model options (e.g. {"kind": "residual"}).
        **overrides: further `TrainConfig` fields (device, threads, out, resume).

    Returns:
        The `TrainConfig`.
    """
    return TrainConfig(model="fc", model_config={**model_config, "depth": setup["depth"], "width": setup["width"]},
                       n_samples=setup["n_samples"], epochs=setup["epochs"], batch_size=setup["batch_size"],
                       optimizer=setup["optimizer"], lr=setup["lr"], seed=setup["seed"], **overrides)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m landscape.quickstart` (defaults from `SETUP`).

    Returns:
        A `landscape.cli.Parser` (usage errors are one line).
    """
    from landscape.cli import positive_int

    p = Parser(prog="python -m landscape.quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/quickstart", help="directory of the runs (default runs/quickstart)")
    p.add_argument("--figures", default="figures", help="where the figure and summary go (default figures)")
    for flag, key, what in (("--epochs", "epochs", "epochs per net"), ("--depth", "depth", "hidden layers per net"),
                            ("--width", "width", "units per hidden layer"),
                            ("--n-samples", "n_samples", "MNIST-1D training samples"),
                            ("--measure-samples", "measure_samples",
                             "training samples the spectra and probes are measured on"),
                            ("--slq-iters", "slq_iters", "Lanczos steps per SLQ vector"),
                            ("--slq-vectors", "slq_vectors", "SLQ random vectors, run as one batch")):
        p.add_argument(flag, type=positive_int, default=SETUP[key], help=f"{what} (default {SETUP[key]})")
    p.add_argument("--slq-probes", dest="slq_vectors", type=positive_int, help=argparse.SUPPRESS)  # old name
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {', '.join(NETS)}")
    p.add_argument("--seed", type=int, default=SETUP["seed"],
                   help=f"seed of the weights and the shuffling (default {SETUP['seed']})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda ... (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default 1 on CPU: these small nets run fastest single-threaded)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); torch's thread count is put back on return.

    Args:
        argv: the arguments (None: sys.argv[1:]).

    Returns:
        The exit status 0 (2 and 128 + signal come from `run_cli`).
    """
    args = build_parser().parse_args(argv)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NETS]
    if unknown or not nets:
        raise LandscapeError(f"unknown net(s) {unknown}; choose from {', '.join(NETS)}")
    device = resolve_device(args.device)
    with cpu_threads(args.threads if args.threads is not None else (1 if device.type == "cpu" else None)) as threads:
        return _main(args, nets, device, threads)


def _main(args: argparse.Namespace, nets: list[str], device, threads: int) -> int:
    setup = {**SETUP, **{k: getattr(args, k) for k in SETUP if hasattr(args, k)}}
    out, figures = prepare_out_dir(args.out), prepare_out_dir(args.figures)
    t0 = time.perf_counter()
    histories, rows, spectra, ratios = {}, [], {}, {}
    for name in nets:
        label, model_config = NETS[name]
        run = out / name
        cfg = train_config(setup, model_config, device=str(device), threads=threads, out=str(run),
                           resume=(run / "checkpoint.pt").exists())
        print(f"[{label}] training {setup['epochs']} epochs -> {run}", file=sys.stderr, flush=True)
        result = train(cfg, handle_signals=True)
        if result["status"] == "interrupted":
            print(f"interrupted: rerun the same command to resume ({run} holds epoch {result['epoch']})",
                  file=sys.stderr)
            raise Interrupted(result["signal"])
        histories[label] = result["history"]
        row = _row(name, label, result)
        print(f"[{label}] measuring spectrum and probes on {setup['measure_samples']} samples", file=sys.stderr,
              flush=True)
        spectra[label], records, measured = measure(result["model"], setup, device)
        ratios[label] = [{**r, "epoch": setup["epochs"]} for r in records if r["metric"] == "grad_ratio"]
        rows.append({**row, **measured})
    wall = time.perf_counter() - t0
    summary_setup = {**setup, "device": str(device), "threads": threads, "wall_seconds": wall}
    title = (f"MNIST-1D, depth {setup['depth']} × width {setup['width']} ReLU nets, "
             f"{setup['optimizer'].capitalize()} {setup['lr']:g}")
    plot_training_curves(histories, figures / "quickstart_training", title=title)
    plot_log_spectral_density(spectra, figures / "quickstart_spectra", title=f"Hessian spectral density, {title}")
    plot_grad_ratio_grid(ratios, path=figures / "quickstart_grad_ratio",
                         title="gradient-norm ratio per block after training (1 = norm preserved)")
    table = _table(rows)
    (figures / "quickstart_summary.md").write_text(_markdown(summary_setup, table))
    write_json(out / "summary.json", {"setup": summary_setup, "nets": rows})
    print(table)
    print(f"wall time {wall:.0f} s; figure {figures / 'quickstart_training.png'}, "
          f"summary {figures / 'quickstart_summary.md'}")
    return 0


def measure(model, setup: dict, device) -> tuple[dict, list[dict], dict]:
    """SLQ spectrum curves, probe records and headline numbers of a trained net on the measurement set
    (`landscape.data.measurement_set`: `measure_samples` training samples, the same for every net).

    Args:
        model: the trained net.
        setup: the quickstart's setup (data size, measure_samples, SLQ sizes, seed).
        device: where to measure.

    Returns:
        (spectrum curves, probe records, {headline numbers}).
    """
    from landscape.experiment.keys import probe_keys
    from landscape.experiment.measure import transition_blocks
    from landscape.hessian import HessianOperator, slq_density
    from landscape.hessian.cli.curves import spectrum_curves
    from landscape.probes import run_probes

    data = load_data("mnist1d", n_samples=setup["n_samples"], device=device)
    X, y = measurement_set(data, setup["measure_samples"])
    model.eval()
    op = HessianOperator(model, F.cross_entropy, (X, y))
    sd = slq_density(op, setup["slq_iters"], setup["slq_vectors"], seed=setup["seed"])  # (op, iters, vectors)
    records = run_probes(model, F.cross_entropy, (X, y), metrics=("grad_norm", "singularity"))
    blocks = list(dict.fromkeys(r["block"] for r in records if r["metric"] == "grad_ratio"))
    keys = probe_keys(records, transition_blocks(model, X[:2], blocks))
    summary = sd.summary(setup["eps"])
    measured = {"lambda_max": summary["lambda_max"], "degenerate_ratio": summary["degenerate_ratio"],
                "negative_ratio": summary["negative_ratio"], "grad_ratio_min": keys.get("grad_ratio_min"),
                "grad_ratio_max": keys.get("grad_ratio_max"), "dead_frac": keys.get("dead_frac_mean"),
                "overlap_act": keys.get("overlap_act_mean")}
    curves = spectrum_curves({"nodes": sd.nodes, "weights": sd.weights, "dim": sd.dim, "eps": setup["eps"]})
    return curves, records, measured


def _row(name: str, label: str, result: dict) -> dict:
    hist = result["history"]
    reached = next((h["epoch"] for h in hist if h["train_acc"] >= TARGET_ACC), None)
    final = hist[-1]
    return {"net": name, "label": label, "parameters": sum(p.numel() for p in result["model"].parameters()),
            "train_loss": final["train_loss"], "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "best_train_acc": max(h["train_acc"] for h in hist), "epoch_to_target": reached,
            "seconds": sum(h["seconds"] for h in hist)}


def _table(rows: list[dict]) -> str:
    from landscape.experiment.summary import fmt

    head = ("| net | parameters | train loss | train acc | test acc | "
            f"first epoch with train acc ≥ {TARGET_ACC} | seconds | λmax | degenerate | negative | "
            "grad ratio min–max | dead units | overlap |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        reached = "—" if r["epoch_to_target"] is None else str(r["epoch_to_target"])
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['train_loss']:.4f} | {r['train_acc']:.3f} | "
                     f"{r['test_acc']:.3f} | {reached} | {r['seconds']:.0f} | {r['lambda_max']:.4g} | "
                     f"{r['degenerate_ratio']:.3f} | {r['negative_ratio']:.3f} | "
                     f"{fmt(r['grad_ratio_min'])}–{fmt(r['grad_ratio_max'])} | {fmt(r['dead_frac'])} | "
                     f"{fmt(r['overlap_act'])} |")
    return "\n".join(lines)


def _markdown(setup: dict, table: str) -> str:
    return (f"# Quickstart: skip connections on MNIST-1D\n\n"
            f"Depth {setup['depth']} × width {setup['width']} ReLU FC nets, {setup['optimizer'].capitalize()} lr "
            f"{setup['lr']:g}, batch "
            f"{setup['batch_size']}, {setup['n_samples']} MNIST-1D training samples, {setup['epochs']} "
            f"epochs, seed {setup['seed']}, device {setup['device']} "
            f"(threads: {setup['threads'] or 'default'}); "
            f"total wall time {setup['wall_seconds']:.0f} s. Train loss and accuracy are running means over "
            f"the last epoch; test accuracy is measured after it. λmax and the degenerate (|λ| < {setup['eps']:g} "
            f"λmax) and negative (λ < −{setup['eps']:g} λmax) spectral mass come from SLQ on the Hessian of the "
            f"mean loss over the measurement set ({setup['measure_samples']} training samples drawn with seed 0); "
            "gradient-norm ratios (over "
            "the residual blocks; the 40 → width input block is a transition, left out) and unit statistics "
            "(block means) from `landscape.probes` on the same samples.\n\n"
            f"{table}\n\n"
            "One seed. The architectures, initialization (Glorot-normal, zero biases) and setup reconstruct "
            "Orhan & Pitkow (docs/methods.md §A.1, §A.3 [R]); with all-positive ReLU branches added to the stream its "
            "scale grows with depth, so compare the curves rather than reading a verdict into one run.\n"
            "![training curves](quickstart_training.png)\n"
            "![spectra](quickstart_spectra.png)\n![gradient-norm ratios](quickstart_grad_ratio.png)\n")


if __name__ == "__main__":
    from landscape.cli import run_cli

    sys.exit(run_cli(main))
