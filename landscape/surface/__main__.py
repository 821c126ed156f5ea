"""`python -m landscape.surface CKPT`: the loss surface of a checkpoint's model around its weights.

    --directions random   filter-normalized Gaussian directions (Li et al. 2018), n×n grid (or --dims 1)
    --directions hessian  the top-1/top-2 Hessian eigenvectors (unit norm: coordinates are distances)
    --directions pca      PCA of the checkpoints in --trajectory RUN_DIR (RUN_DIR/epochs/epoch_*.pt),
                          the trajectory projected and overlaid
    --directions file     your own: --direction-file PATH (torch.save of a list of {name: tensor} dicts,
                          or a [k, n_params] tensor of flat directions in named_parameters() order)
    --directions interp   the segment CKPT → --to CKPT2 (t = 0 at CKPT, 1 at CKPT2), 1-D, with its barrier;
                          --path bezier also trains a quadratic Bézier curve between them (Garipov et al. 2018)

Writes OUT/surface.npz (docs/formats.md), OUT/surface.json (settings, minimum, sharpness, barriers),
OUT/surface_1d|contour|3d.png + .pdf, and with --h5 OUT/surface.h5 (loss-landscape's keys). BatchNorm
statistics: the checkpoint's (--bn eval; the default around one checkpoint) or each point's own (--bn
recompute; interp's default and, for a model with running statistics, its only choice: a path has no single
checkpoint's statistics, docs/methods.md §F.4). Partial
results go to OUT/surface_state.npz after every block; SIGINT/SIGTERM stops with them saved (exit
130/143) and --resume continues. Under torchrun the grid points are shared among the ranks. Exit 2 with
one line on bad input. The model and data are loaded as by `python -m landscape.hessian`: a checkpoint on its
data set with the cross-entropy, or a local HF model directory on token rows (--tokens, or --text with
--tokenizer) with the model's own loss (then --to is another HF directory; pca needs landscape checkpoints).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from landscape import distributed
from landscape.cli import (
    THREADS_HELP,
    Parser,
    cpu_threads,
    interrupts,
    memory_size,
    positive_float,
    positive_int,
    prepare_out_dir,
    progress,
    run_cli,
)
from landscape.errors import LandscapeError
from landscape.inputs import add_lm_flags
from landscape.io import dumps, write_json, write_npz
from landscape.surface.cli.directions import build_directions

KINDS = ("random", "hessian", "pca", "interp", "file")


def parse_grid(text: str) -> np.ndarray:
    """The coordinates of a `--grid` / `--ygrid` flag.

    Args:
        text: 'START:STOP:NUM' with finite START < STOP and NUM ≥ 2.

    Returns:
        NUM evenly spaced coordinates from START to STOP inclusive.

    Raises:
        argparse.ArgumentTypeError: any other text (argparse reports it as one usage line).
    """
    parts = text.split(":")
    try:
        lo, hi, num = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"grid must be START:STOP:NUM, e.g. -1:1:51, got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi and num >= 2):
        raise argparse.ArgumentTypeError(f"grid {text!r}: need finite START < STOP and NUM ≥ 2")
    return np.linspace(lo, hi, num)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m landscape.surface",
               description="Loss surface (1-D or 2-D) of a checkpoint's training loss.")
    p.add_argument("ckpt", help="checkpoint written by landscape.train, a state_dict file with --model, or a local "
                   "HF model directory (save_pretrained) with --tokens or --text")
    p.add_argument("--model", metavar="MODULE:FUNCTION", help="build the model with this function (no arguments); "
                   "CKPT (and --to, --trajectory files) then hold its state_dict")
    p.add_argument("--directions", choices=KINDS, default="random", help="direction kind (default random)")
    p.add_argument("--to", metavar="CKPT2", help="the other end of the interp path")
    p.add_argument("--direction-file", metavar="PATH", help="directions file: a list of {parameter name: tensor} "
                   "dicts or a [k, n_params] tensor (torch.save; read with weights_only)")
    p.add_argument("--trajectory", metavar="RUN_DIR", help="run directory whose epochs/epoch_*.pt give the PCA")
    p.add_argument("--path", choices=("linear", "bezier"), default="linear",
                   help="interp: also train and evaluate a quadratic Bézier curve (default linear only)")
    p.add_argument("--bezier-steps", type=positive_int, default=500, metavar="N", help="Bézier training steps")
    p.add_argument("--grid", type=parse_grid, metavar="START:STOP:NUM",
                   help="coordinates along each direction (default -1:1:51; interp 0:1:51; pca: covers the "
                   "trajectory)")
    p.add_argument("--ygrid", type=parse_grid, metavar="START:STOP:NUM", help="second direction (default --grid)")
    p.add_argument("--dims", type=int, choices=(1, 2), help="1-D slice or 2-D grid (default 2; interp 1)")
    p.add_argument("--norm", choices=("filter", "layer", "none"), default="filter",
                   help="normalization of random directions (default filter)")
    p.add_argument("--include-bias-norm", action="store_true",
                   help="random directions also move biases and normalization parameters")
    p.add_argument("--bn", choices=("eval", "recompute"), default=None,
                   help="BatchNorm statistics: the checkpoint's (eval; the default) or recomputed at every point "
                   "(recompute; interp's default, and its only choice for a model with running statistics)")
    p.add_argument("--data", metavar="NAME", help="data set (default: the checkpoint's, e.g. mnist1d)")
    p.add_argument("--data-root", metavar="DIR", help="directory of the image data sets")
    p.add_argument("--split", choices=("train", "test"), default=None, help="data split (default train)")
    p.add_argument("--n-samples", type=int, metavar="N", help="use the first N samples of the split (default all)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="samples per forward (default: by memory)")
    add_lm_flags(p)
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help="memory for one chunk of grid points, "
                   "e.g. 2G (default: a share of the free memory)")
    p.add_argument("--backend", choices=("auto", "vmap", "loop"), default="auto",
                   help="vmap over points, or one call per point (auto: loop for convolutions on CPU)")
    p.add_argument("--sharpness-radius", type=positive_float, nargs="+", default=[0.1, 0.25], metavar="R",
                   help="radii of the sharpness summary (default 0.1 0.25)")
    p.add_argument("--h5", action="store_true", help="also write surface.h5 (needs h5py: the surface-h5 extra)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of random directions and of the eigensolver")
    p.add_argument("--out", default="surface_out", metavar="DIR", help="output directory (default surface_out)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/surface_state.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _check_args(args: argparse.Namespace) -> None:
    kind = args.directions
    if kind == "interp" and not args.to:
        raise LandscapeError("--directions interp needs --to CKPT2")
    if kind == "pca" and not args.trajectory:
        raise LandscapeError("--directions pca needs --trajectory RUN_DIR")
    if args.to and kind != "interp":
        raise LandscapeError("--to is only used with --directions interp")
    if (kind == "file") != bool(args.direction_file):
        raise LandscapeError("--directions file and --direction-file PATH go together")
    if args.trajectory and kind != "pca":
        raise LandscapeError("--trajectory is only used with --directions pca")
    if kind == "interp" and args.dims == 2:
        raise LandscapeError("--directions interp gives a 1-D path; drop --dims 2")
    if args.path == "bezier" and kind != "interp":
        raise LandscapeError("--path bezier needs --directions interp --to CKPT2")
    args.dims = args.dims or (1 if kind == "interp" else 2)
    if args.ygrid is not None and args.dims == 1:
        raise LandscapeError("--ygrid needs --dims 2")


def _join_grid_values(argv: list[str]) -> list[str]:
    """'--grid -1:1:51' → '--grid=-1:1:51': argparse would take a value starting with '-' for an option."""
    out, it = [], iter(argv)
    for a in it:
        out.append(f"{a}={next(it, '')}" if a in ("--grid", "--ygrid") else a)
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring; every flag in docs/cli.md).

    Args:
        argv: the arguments (None: sys.argv[1:]).

    Returns:
        The exit status: 0 (2, 130 and 143 come from `run_cli`).
    """
    args = _parser().parse_args(_join_grid_values(list(sys.argv[1:] if argv is None else argv)))
    _check_args(args)
    out = prepare_out_dir(args.out) if distributed.env_rank() == 0 else Path(args.out)
    with interrupts("raise"), cpu_threads(args.threads) as args.threads:
        device = distributed.setup(args.device)
        try:
            code = _run(args, device, out)
        except BaseException:
            distributed.shutdown(sync=False)
            raise
        distributed.shutdown()
        return code


def _run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from landscape.cli import Interrupted
    from landscape.inputs import load_cli_inputs
    from landscape.surface import evaluate_grid, mesh_coords

    t_start = time.perf_counter()
    model, data, _ = distributed.main_first(lambda: load_cli_inputs(args, device))
    spec = data.spec
    args.bn = _bn_mode(args, model)
    dirs, meta, traj, other = build_directions(args, model, data, device)
    xs = args.grid
    if xs is None:
        if args.directions == "interp":
            xs = np.linspace(0, 1, 51)
        elif traj is not None:
            r = float(np.abs(traj).max()) * 1.25
            xs = np.linspace(-r, r, 51)
        else:
            xs = np.linspace(-1, 1, 51)
    ys = (args.ygrid if args.ygrid is not None else xs) if args.dims == 2 else None
    if traj is not None:
        meta["trajectory_outside_grid"] = _outside(args, traj, xs, ys)
    coords = mesh_coords(xs, ys)
    settings = {"checkpoint": str(args.ckpt), "directions": args.directions, "dims": args.dims, "x": xs.tolist(),
                "y": None if ys is None else ys.tolist(), "n_samples": data.n, "data": spec, "bn": args.bn,
                "seed": args.seed, "norm": args.norm, "include_bias_norm": args.include_bias_norm,
                "to": args.to, "trajectory": args.trajectory}
    signature = hashlib.sha256(dumps(settings).encode()).hexdigest()[:16]
    state_path = out / "surface_state.npz"
    state = _read_state(state_path, signature, len(coords)) if args.resume else None
    latest: dict = {}

    def save(st: dict) -> None:
        latest.update(st)
        if distributed.is_main():
            write_npz(state_path, signature=np.array(signature), **st)

    t0 = time.perf_counter()
    done0 = int(state["done"].sum()) if state else 0
    try:
        with progress(total=len(coords), initial=done0, desc=f"surface ({args.directions})", unit="pt",
                      enabled=not args.no_progress) as bar:
            vals = evaluate_grid(model, data.loss_fn, data.whole(), dirs, coords, bn=args.bn,
                                 batch_size=args.batch_size, max_memory=args.max_memory, backend=args.backend,
                                 min_blocks=20, state=state, on_state=save, progress=bar.update)
    except Interrupted as e:
        if distributed.is_main():
            done = int(latest["done"].sum()) if latest else 0
            print(f"{e.name}: {done} of {len(coords)} points saved in {state_path}; continue with --resume",
                  file=sys.stderr)
        raise
    seconds = {"grid": time.perf_counter() - t0}
    paths = _paths(args, model, data, other, seconds) if args.directions == "interp" else {}
    seconds["total"] = time.perf_counter() - t_start
    if not distributed.is_main():
        return 0
    _write(args, out, xs, ys, vals, meta, traj, paths, settings, seconds, device)
    state_path.unlink(missing_ok=True)
    return 0


def _outside(args: argparse.Namespace, traj: np.ndarray, xs: np.ndarray, ys: np.ndarray | None) -> int:
    """How many projected trajectory points lie outside the grid, with a warning on stderr when any do
    (they are drawn off the surface; a wider --grid / --ygrid covers them)."""
    inside = (traj[:, 0] >= xs[0]) & (traj[:, 0] <= xs[-1])
    if ys is not None:
        inside &= (traj[:, 1] >= ys[0]) & (traj[:, 1] <= ys[-1])
    off = int((~inside).sum())
    if off and distributed.is_main():
        reach = np.abs(traj).max(0)
        print(f"warning: {off} of {len(traj)} trajectory points lie outside the grid (the trajectory reaches "
              f"|x| = {reach[0]:.3g}" + (f", |y| = {reach[1]:.3g}" if ys is not None else "") + "); they are drawn "
              "off the surface: widen --grid/--ygrid, or leave --grid out to cover them", file=sys.stderr)
    return off


def _bn_mode(args: argparse.Namespace, model) -> str:
    """--bn resolved: a path has no single checkpoint's statistics, so interp recomputes them at every point
    (and refuses --bn eval for a model with running statistics); the other directions default to eval."""
    from landscape.surface.paths import path_bn

    if args.directions != "interp":
        return args.bn or "eval"
    try:
        return path_bn(model, args.bn or "recompute")
    except LandscapeError:
        raise LandscapeError("--bn eval would use CKPT's BatchNorm running statistics at every point of the path "
                             "to --to; drop it (interp recomputes each point's own)") from None


def _read_state(path: Path, signature: str, points: int) -> dict | None:
    if not path.is_file():
        if distributed.is_main():
            print(f"note: {path} not found; starting afresh", file=sys.stderr)
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            st = {k: z[k].copy() for k in ("loss", "accuracy", "done")}
            saved = str(z["signature"])
    except (OSError, ValueError, KeyError) as e:
        raise LandscapeError(f"{path}: cannot read the saved grid ({e})") from None
    if saved != signature:
        raise LandscapeError(f"{path}: saved by a run with other settings; remove it or drop --resume")
    if len(st["done"]) != points:
        raise LandscapeError(f"{path}: holds {len(st['done'])} points, this grid has {points}")
    return st


def _paths(args, model, data, other, seconds: dict) -> dict:
    """Linear path barrier on t ∈ [0, 1] (21 points) and, with --path bezier, the trained curve; the time
    of each part goes into `seconds` (paths, bezier_training)."""
    from landscape.surface import bezier_path, linear_path, parameters_of, train_bezier

    t0 = time.perf_counter()
    a = parameters_of(model)
    kw = {"bn": args.bn, "batch_size": args.batch_size, "max_memory": args.max_memory, "backend": args.backend}
    res = {"linear": linear_path(model, data.loss_fn, data.whole(), a, other, n=21, **kw).to_dict()}
    if args.path == "bezier":
        t1 = time.perf_counter()
        with progress(total=args.bezier_steps, desc="Bézier", unit="step", enabled=not args.no_progress) as bar:
            c = train_bezier(model, data.loss_fn, data.whole(), a, other, steps=args.bezier_steps, seed=args.seed,
                             progress=lambda step, loss: bar.update(1))
        seconds["bezier_training"] = time.perf_counter() - t1
        res["bezier"] = bezier_path(model, data.loss_fn, data.whole(), a, c, other, n=21, **kw).to_dict()
    seconds["paths"] = time.perf_counter() - t0
    return res


def _write(args, out, xs, ys, vals, meta, traj, paths, settings, seconds, device) -> None:
    from landscape.plots import plot_surface_1d, plot_surface_3d, plot_surface_contour
    from landscape.surface import Surface

    shape = (len(xs),) if ys is None else (len(ys), len(xs))
    meta = {**meta, **{f"path_{k}": v for k, v in paths.items()}}
    surf = Surface(xs, vals.loss.reshape(shape), vals.accuracy.reshape(shape), ys, meta, traj)
    surf.save_npz(out / "surface.npz")
    if args.h5:
        surf.save_h5(out / "surface.h5")
    summary = {**surf.summary(tuple(args.sharpness_radius)), "settings": settings, "grid": vals.info,
               "seconds": seconds["total"], **{f"seconds_{k}": v for k, v in seconds.items() if k != "total"},
               "device": str(device), "threads": args.threads, "ranks": distributed.world_size(),
               "torch_version": torch.__version__}
    for kind, p in paths.items():
        summary[f"barrier_{kind}"] = p["barrier"]
        summary[f"barrier_max_{kind}"] = p["barrier_max"]
    write_json(out / "surface.json", summary)
    label = {"interp": "t (0: CKPT, 1: --to)", "hessian": "distance along eigenvector"}.get(args.directions,
                                                                                          "coordinate")
    if ys is None:
        curves = {"loss": {"x": xs, "loss": surf.loss, "accuracy": surf.accuracy}}
        if "bezier" in paths:
            curves["Bézier (trained)"] = {"x": paths["bezier"]["t"], "loss": paths["bezier"]["loss"]}
        plot_surface_1d(curves, out / "surface_1d", xlabel=label, log=bool(np.nanmin(surf.loss) > 0))
    else:
        labels = ("direction 1", "direction 2")
        if "explained_variance_ratio" in meta:
            labels = tuple(f"PC{i + 1} ({100 * v:.1f}%)" for i, v in enumerate(meta["explained_variance_ratio"]))
        elif "eigenvalues" in meta:
            labels = tuple(f"eigenvector {i + 1} (λ = {v:.3g})" for i, v in enumerate(meta["eigenvalues"]))
        plot_surface_contour(xs, ys, surf.loss, out / "surface_contour", trajectory=traj, labels=labels,
                             log=bool(np.nanmin(surf.loss) > 0))
        plot_surface_3d(xs, ys, surf.loss, out / "surface_3d")
    print(json.dumps({k: summary.get(k) for k in ("min_loss", "max_accuracy", "barrier_linear", "barrier_bezier",
                                                   "seconds", "seconds_bezier_training") if k in summary}))


if __name__ == "__main__":
    distributed.exit_process(run_cli(main))
