"""`python -m landscape.hessian CKPT`: the Hessian (or GGN) spectrum of a checkpoint's model on its data.

Writes OUT/spectrum.json (summary: λmax, λmin, trace ± stderr, negative / degenerate ratios, top
eigenvalues, sizes, timing, the density on a grid), OUT/spectrum.npz (SLQ nodes and weights per probe,
top eigenvalues, grid, density) and OUT/density.png + .pdf (log-density plot). Exit 0 on success, 2 on
bad input (one line on stderr).

The model and data are rebuilt from the checkpoint's metadata; --data/--split/--data-root override the
data set, --n-samples keeps the first N samples. For any other model, `--model module:function` builds it
(no arguments) and CKPT is then a state_dict file (or a landscape checkpoint); give --data with it.
The loss is the mean cross-entropy.

Under `torchrun --nproc_per_node W -m landscape.hessian CKPT ...` each rank takes its contiguous share of
the samples and every product costs one all_reduce (see `landscape.hessian.operator`); all ranks run the
same seeded iterations, rank 0 shows progress and writes the outputs.

Long runs: every --state-every iterations rank 0 writes the Lanczos state to OUT/lanczos_state.pt
(atomically; plain tensors, ints and strings). SIGINT / SIGTERM stops the run with that state saved (exit
130 / 143), and `--resume` continues it to the same result as an uninterrupted run; the file is removed on
success. Under torchrun every rank reads the state file on --resume, so OUT must be on a file system all
ranks share (all ranks hold the same state, only rank 0 writes it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape import distributed
from landscape.cli import run_cli
from landscape.errors import LandscapeError


def _memory_size(text: str) -> int:
    """'2G', '500M', '64K' or a byte count → bytes (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (use e.g. 2G, 500M)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"memory size must be positive, got {text!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m landscape.hessian",
        description="Hessian spectral density (SLQ), top eigenvalues and trace of a checkpoint's training loss.",
    )
    p.add_argument("ckpt", help="checkpoint written by landscape.train (or a state_dict file with --model)")
    p.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="build the model by calling this function instead "
        "of from the checkpoint's metadata; CKPT then holds its state_dict",
    )
    p.add_argument("--data", metavar="NAME", help="data set (default: the checkpoint's, e.g. mnist1d)")
    p.add_argument("--data-root", metavar="DIR", help="directory of the image data sets")
    p.add_argument("--split", choices=("train", "test"), default=None, help="data split (default: train)")
    p.add_argument("--n-samples", type=int, metavar="N", help="use the first N samples of the split (default: all)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=500,
        metavar="B",
        help="samples per batch of a data pass (default 500; batches may be merged when memory allows)",
    )
    p.add_argument("--iters", type=int, default=100, help="Lanczos iterations per probe (default 100)")
    p.add_argument("--probes", type=int, default=8, help="SLQ probe vectors, run as one batch (default 8)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="top eigenvalues to compute (0: skip; default 5)")
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="Gaussian broadening of the density (default: σ² = 1e-5·(λmax − λmin))",
    )
    p.add_argument(
        "--eps",
        type=float,
        default=1e-3,
        help="relative threshold of the negative / degenerate ratios, in units of λmax (default 1e-3)",
    )
    p.add_argument(
        "--operator",
        choices=("hessian", "ggn"),
        default="hessian",
        help="curvature matrix: the Hessian or the generalized Gauss-Newton matrix (default hessian)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto: CUDA when present)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe vectors (default 0)")
    p.add_argument(
        "--max-memory",
        type=_memory_size,
        default=None,
        metavar="SIZE",
        help="memory the operator may use, e.g. 2G or 500M (default: a share of the free device memory); "
        "probe vectors are chunked and kept graphs dropped to stay under it",
    )
    p.add_argument("--out", default="hessian_out", metavar="DIR", help="output directory (default hessian_out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--state-every",
        type=int,
        default=10,
        metavar="N",
        help="save the Lanczos state to OUT/lanczos_state.pt every N iterations (default 10)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the SLQ run saved in OUT/lanczos_state.pt (starts fresh when there is none)",
    )
    return p


class _Interrupted(BaseException):
    """SIGINT / SIGTERM arrived; `signum` gives the exit status 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise _Interrupted(signum)


class _StateFile:
    """OUT/lanczos_state.pt: rank 0 writes each state `lanczos` hands over; every rank can read it back.

    The state also records the run's operator, checkpoint and sample count, checked on --resume."""

    def __init__(self, path: Path, run: dict):
        self.path, self.run = path, run
        self.latest: dict | None = None
        self.written = True

    def on_state(self, state: dict) -> None:
        self.latest, self.written = {**state, **self.run}, False
        if distributed.is_main():
            self.write()

    def write(self) -> None:
        from landscape.checkpoint import atomic_write

        with atomic_write(self.path) as f:
            torch.save(self.latest, f)
        self.written = True

    def load(self) -> dict | None:
        if not self.path.is_file():
            if distributed.is_main():
                print(f"note: {self.path} not found; starting the SLQ run afresh", file=sys.stderr)
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise LandscapeError(f"{self.path}: cannot read the Lanczos state ({why})") from None
        if not isinstance(state, dict):
            raise LandscapeError(f"{self.path}: not a Lanczos state (a {type(state).__name__})")
        for key, value in self.run.items():
            if state.get(key) != value:
                raise LandscapeError(f"{self.path}: the state is for {key}={state.get(key)!r}, this run has {value!r}")
        return {k: v for k, v in state.items() if k not in self.run}


def _user_model(spec: str, path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise LandscapeError(f"--model must look like module:function, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise LandscapeError(f"--model {spec}: {e}") from None
    model = fn()
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    if not path.is_file():
        raise LandscapeError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise LandscapeError(f"{path}: cannot read a state_dict ({str(e).splitlines()[0][:200]})") from None
    meta = state.get("meta", {}) if isinstance(state, dict) else {}
    state = state.get("model_state", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise LandscapeError(f"{path}: weights do not fit --model {spec} ({str(e).splitlines()[0][:200]})") from None
    return model.to(device).eval(), meta


def _load(args: argparse.Namespace, device: torch.device):
    from landscape.checkpoint import load_checkpoint
    from landscape.data import load_data

    if args.model:
        model, meta = _user_model(args.model, Path(args.ckpt), device)
    else:
        model, meta = load_checkpoint(args.ckpt, map_location=device)
    spec = dict(meta.get("data") or {})
    if args.data:
        spec = {"name": args.data, "n_samples": spec.get("n_samples") if spec.get("name") == args.data else None}
    if not spec.get("name"):
        raise LandscapeError("no data set: the checkpoint names none, give --data")
    if args.data_root:
        spec["root"] = args.data_root
    spec["split"] = args.split or "train"
    spec = {k: v for k, v in spec.items() if k in ("name", "split", "n_samples", "root", "seed", "normalize")}
    data = load_data(**spec, device=device)
    X, y = data.X, data.y
    if args.n_samples is not None:
        if not 1 <= args.n_samples <= len(y):
            raise LandscapeError(f"--n-samples must be in 1..{len(y)} for this split, got {args.n_samples}")
        X, y = X[: args.n_samples], y[: args.n_samples]
    return model, X, y, spec


class _Progress:
    """The operator, counting its products on a tqdm bar."""

    def __init__(self, op, bar):
        self.op, self.bar = op, bar
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matmat(self, V):
        out = self.op.matmat(V)
        self.bar.update(V.shape[1])
        return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("iters", "probes", "batch_size"):
        if getattr(args, name) < 1:
            raise LandscapeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.top_k < 0:
        raise LandscapeError(f"--top-k must be at least 0, got {args.top_k}")
    if args.state_every < 1:
        raise LandscapeError(f"--state-every must be at least 1, got {args.state_every}")

    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    sigs = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
    handlers = {sig: signal.signal(sig, _raise_interrupted) for sig in sigs}
    states: list[_StateFile] = []
    try:
        device = distributed.setup(args.device)
        try:
            code = _run(args, device, states)
        except BaseException:
            distributed.shutdown(sync=False)
            raise
        distributed.shutdown()
        return code
    except _Interrupted as e:
        name = signal.Signals(e.signum).name
        sf = states[0] if states else None
        if sf is not None and sf.latest is not None and distributed.is_main():
            if not sf.written:
                sf.write()
            print(f"{name}: Lanczos state saved to {sf.path}; resume with --resume", file=sys.stderr)
        elif distributed.is_main():
            print(f"{name}: stopped before any Lanczos state was saved; run again", file=sys.stderr)
        return 128 + e.signum
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, device: torch.device, states: list) -> int:
    from tqdm.auto import tqdm

    from landscape.data import part_slice
    from landscape.hessian import GGNOperator, HessianOperator, slq_density, top_eigenpairs

    model, X, y, spec = distributed.main_first(lambda: _load(args, device))
    world = distributed.world_size()
    if len(y) < world:
        raise LandscapeError(f"{len(y)} samples cannot be shared by {world} ranks")
    part = part_slice(len(y), distributed.rank(), world)
    t0 = time.perf_counter()
    batches = list(zip(X[part].split(args.batch_size), y[part].split(args.batch_size)))
    cls = HessianOperator if args.operator == "hessian" else GGNOperator
    op = cls(model, F.cross_entropy, batches, seed=args.seed, max_memory=args.max_memory)
    quiet = args.no_progress or not distributed.is_main()
    if args.iters > op.dim:
        raise LandscapeError(f"--iters ({args.iters}) cannot exceed the number of parameters ({op.dim})")
    if args.top_k > op.dim:
        raise LandscapeError(f"--top-k ({args.top_k}) cannot exceed the number of parameters ({op.dim})")
    run = {"operator": args.operator, "checkpoint": str(args.ckpt), "n_samples": len(y)}
    states.append(sf := _StateFile(Path(args.out) / "lanczos_state.pt", run))
    state = sf.load() if args.resume else None
    with tqdm(
        total=args.iters * args.probes,
        initial=int(state["done"]) * args.probes if state and isinstance(state.get("done"), int) else 0,
        desc="SLQ",
        unit="HVP",
        file=sys.stderr,
        disable=quiet,
        dynamic_ncols=True,
    ) as bar:
        sd = slq_density(
            _Progress(op, bar),
            iters=args.iters,
            probes=args.probes,
            seed=args.seed,
            state=state,
            on_state=sf.on_state,
            state_every=args.state_every,
        )
    top = None
    if args.top_k:
        with tqdm(
            desc=f"top-{args.top_k}", unit="HVP", file=sys.stderr, disable=quiet, dynamic_ncols=True
        ) as bar:
            top = top_eigenpairs(_Progress(op, bar), k=args.top_k, seed=args.seed)
    seconds = time.perf_counter() - t0
    if not distributed.is_main():
        return 0
    from landscape.plots import plot_spectral_density

    grid, density = sd.density(sigma=args.sigma)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        **sd.summary(args.eps),
        "top_eigenvalues": top.eigenvalues.tolist() if top is not None else [],
        "top_residuals": top.residuals.tolist() if top is not None else [],
        "top_converged": top.converged if top is not None else None,
        "operator": args.operator,
        "n_samples": len(y),
        "data": spec,
        "checkpoint": str(args.ckpt),
        "seed": args.seed,
        "seconds": seconds,
        "seconds_slq": sd.meta["seconds"],
        "backend": op.backend,
        "device": str(device),
        "ranks": world,
        "torch_version": torch.__version__,
        "sigma": args.sigma or sd.default_sigma(),
        "grid": grid.tolist(),
        "density": density.tolist(),
    }
    (out / "spectrum.json").write_text(json.dumps(summary, indent=1))
    np.savez(
        out / "spectrum.npz",
        nodes=sd.nodes,
        weights=sd.weights,
        dim=np.int64(sd.dim),
        grid=grid,
        density=density,
        top_eigenvalues=top.eigenvalues if top is not None else np.zeros(0),
    )
    plot_spectral_density({args.operator: sd}, out / "density", eps=args.eps)
    sf.path.unlink(missing_ok=True)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "lambda_max",
                    "lambda_min",
                    "trace",
                    "negative_ratio",
                    "degenerate_ratio",
                    "top_eigenvalues",
                    "seconds",
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    distributed.exit_process(run_cli(main))
