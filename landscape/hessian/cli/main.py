"""`python -m landscape.hessian CKPT`: the Hessian (or GGN) spectrum of a checkpoint's model on its data.

Writes OUT/spectrum.json + OUT/spectrum.npz (`landscape.hessian.cli.spectrum_file`, documented in
docs/formats.md) and OUT/density.png + .pdf (log-density plot); prints a one-line JSON summary (λmax with
its error bar and Ritz residual, λmin, trace, ratios, top eigenvalues with residuals). Exit 0 on success,
2 on bad input (one line on stderr, checked before any compute: --out must be a writable directory),
130 / 143 on SIGINT / SIGTERM. Every flag: docs/cli.md.

The model and data are rebuilt from the checkpoint's metadata; --data/--split/--data-root override the
data set, --n-samples keeps the first N samples. For any other model, `--model module:function` builds it
(no arguments) and CKPT is then a state_dict file (or a landscape checkpoint); give --data with it.
The loss is the mean cross-entropy. CKPT may also be a local HF model directory (`save_pretrained`, e.g. a
GPT-2): its data is token ids (--tokens FILE, or --text FILE --tokenizer DIR), rows of --seq-len tokens, and
the loss is the model's own (the mean over tokens, `landscape.objective`); nothing is downloaded.

Under `torchrun --nproc_per_node W -m landscape.hessian CKPT ...` each rank takes its contiguous share of
the samples and every product costs one all_reduce (see `landscape.hessian.operators.operator`); all ranks run the
same seeded iterations, rank 0 shows progress and writes the outputs.

With --fsdp (under torchrun) the model is sharded by FSDP2 (`landscape.distributed.shard_model`) and measured
by `FSDPHessianOperator`: finite differences of first-order gradients, every Lanczos vector held as each rank's
shards, inner products all-reduced; each rank then keeps its own Lanczos state file (OUT/lanczos_state.rankR.pt).

Long runs: every --state-every iterations rank 0 writes the Lanczos state to OUT/lanczos_state.pt
(`_cli_state`). SIGINT / SIGTERM stops the run with that state saved, and `--resume` continues it to the
same result as an uninterrupted run; the file is removed on success. Under torchrun every rank reads the
state file on --resume, so OUT must be on a file system all ranks share.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from landscape import distributed
from landscape.cli import (
    THREADS_HELP,
    Interrupted,
    Parser,
    cpu_threads,
    interrupts,
    memory_size,
    nonneg_int,
    positive_float,
    positive_int,
    prepare_out_dir,
    progress,
)
from landscape.errors import LandscapeError
from landscape.hessian.cli.precision import DTYPES, add_precision_flags, warn_if_unattainable
from landscape.hessian.cli.state import NAME as STATE_NAME
from landscape.hessian.cli.state import StateFile
from landscape.inputs import add_lm_flags

NOISY = 0.05  # λmax's data stderr above this fraction of λmax: too few samples


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m landscape.hessian",
        description="Hessian spectral density (SLQ), top eigenvalues and trace of a checkpoint's training loss.",
    )
    p.add_argument("ckpt", help="checkpoint written by landscape.train, a state_dict file with --model, or a local "
                   "HF model directory (save_pretrained) with --tokens or --text")
    p.add_argument("--model", metavar="MODULE:FUNCTION", help="build the model by calling this function instead "
                   "of from the checkpoint's metadata; CKPT then holds its state_dict")
    p.add_argument("--data", metavar="NAME", help="data set (default: the checkpoint's, e.g. mnist1d)")
    p.add_argument("--data-root", metavar="DIR", help="directory of the image data sets")
    p.add_argument("--split", choices=("train", "test"), default=None, help="data split (default: train)")
    p.add_argument("--n-samples", type=positive_int, metavar="N",
                   help="use the first N samples of the split (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                   help="samples (token rows) per batch of a data pass (default 500, token rows 8; batches may be "
                   "merged when memory allows)")
    add_lm_flags(p)
    p.add_argument("--iters", type=positive_int, default=100, help="Lanczos iterations per vector (default 100)")
    p.add_argument("--vectors", type=positive_int, default=8,
                   help="SLQ random start vectors, run as one batch (default 8)")
    p.add_argument("--top-k", type=nonneg_int, default=5, metavar="K",
                   help="top eigenvalues to compute (0: skip; default 5)")
    p.add_argument("--sigma", type=positive_float, default=None,
                   help="Gaussian broadening of the density (default: σ² = 1e-5·(λmax − λmin))")
    p.add_argument("--eps", type=positive_float, default=1e-3,
                   help="relative threshold of the negative / degenerate ratios, in units of λmax (default 1e-3)")
    p.add_argument("--operator", choices=("hessian", "ggn"), default="hessian",
                   help="curvature matrix: the Hessian or the generalized Gauss-Newton matrix (default hessian)")
    add_precision_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto: CUDA when present)")
    p.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2 and measure it "
                   "by finite differences, each rank holding its shards of every vector (Hessian only)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random vectors (default 0)")
    p.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                   help="memory the operator may use, e.g. 2G or 500M (default: a share of the free device "
                   "memory); vectors are chunked and kept graphs dropped to stay under it")
    p.add_argument("--out", default="hessian_out", metavar="DIR", help="output directory (default hessian_out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--state-every", type=positive_int, default=10, metavar="N",
                   help=f"save the Lanczos state to OUT/{STATE_NAME} every N iterations (default 10)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the SLQ run saved in OUT/{STATE_NAME} (starts fresh when there is none)")
    return p


class _Counted:
    """The operator, counting its products on a progress bar (every other attribute is the operator's,
    e.g. the per-batch forms behind λmax's data error bar)."""

    def __init__(self, op, bar):
        self.op, self.bar = op, bar
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matmat(self, V):
        out = self.op.matmat(V)
        self.bar.update(V.shape[1])
        return out

    def __getattr__(self, name):
        return getattr(self.op, name)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring; every flag in docs/cli.md).

    Args:
        argv: the arguments (None: sys.argv[1:]).

    Returns:
        The exit status: 0, or 130 / 143 after SIGINT / SIGTERM (2 comes from `run_cli`).
    """
    args = _parser().parse_args(argv)
    if args.fsdp and not distributed.launched():
        raise LandscapeError("--fsdp needs torchrun (e.g. torchrun --nproc_per_node 2 -m landscape.hessian ...)")
    if args.fsdp and args.operator != "hessian":
        raise LandscapeError("--fsdp measures the Hessian (finite differences of gradients); drop --operator ggn")
    out = prepare_out_dir(args.out)  # before any compute: a bad --out never costs a finished run
    states: list[StateFile] = []
    try:
        with interrupts("raise"), cpu_threads(args.threads) as args.threads:
            device = distributed.setup(args.device)
            try:
                code = _run(args, out, device, states)
            except BaseException:
                distributed.shutdown(sync=False)
                raise
            distributed.shutdown()
            return code
    except Interrupted as e:
        if states:
            states[0].report_interrupt(e.name)
        elif distributed.is_main():
            print(f"{e.name}: stopped before any Lanczos state was saved; run again", file=sys.stderr)
        return e.exit_code


def _slq(op, args, state, sf):
    """SLQ with the top-k refined from the same Krylov run (and λmax's data error bar)."""
    from landscape.hessian import Checkpoint, TopK, slq_density

    return slq_density(op, iters=args.iters, vectors=args.vectors, seed=args.seed, top_k=TopK(args.top_k, tol=args.tol),
                       checkpoint=Checkpoint(state, sf.on_state, args.state_every))


def _run(args: argparse.Namespace, out: Path, device: torch.device, states: list) -> int:
    from landscape.data import part_slice
    from landscape.hessian import GGNOperator, HessianOperator
    from landscape.hessian.operators.fsdp import FSDPHessianOperator
    from landscape.hessian.solvers.protocol import full_dim
    from landscape.inputs import load_cli_inputs

    model, data, label = distributed.main_first(lambda: load_cli_inputs(args, device))
    spec, n, world = dict(data.spec), data.n, distributed.world_size()
    split_samples = spec.pop("split_samples", None)
    if n < world:
        raise LandscapeError(f"{n} samples cannot be shared by {world} ranks")
    t0 = time.perf_counter()
    cls = HessianOperator if args.operator == "hessian" else GGNOperator
    batches = data.batches(part_slice(n, distributed.rank(), world), args.batch_size)
    dtype, autocast = DTYPES.get(args.dtype), DTYPES.get(args.autocast)
    if args.fsdp:
        op = FSDPHessianOperator(distributed.shard_model(model, param_dtype=dtype), data.loss_fn, batches,
                                 autocast=autocast, seed=args.seed)
    else:
        op = cls(model, data.loss_fn, batches, seed=args.seed, max_memory=args.max_memory, dtype=dtype,
                 autocast=autocast)
    show = not args.no_progress
    warn_if_unattainable(args, op, distributed.is_main())
    if args.iters > full_dim(op):
        raise LandscapeError(f"--iters ({args.iters}) cannot exceed the number of parameters ({full_dim(op)})")
    if args.top_k > full_dim(op):
        raise LandscapeError(f"--top-k ({args.top_k}) cannot exceed the number of parameters ({full_dim(op)})")
    run = {"operator": args.operator, "checkpoint": str(args.ckpt), "n_samples": n}
    name = f"lanczos_state.rank{distributed.rank()}.pt" if args.fsdp else STATE_NAME
    states.append(sf := StateFile(out / name, run, own=args.fsdp))
    state = sf.load() if args.resume else None
    done = int(state["done"]) if state and isinstance(state.get("done"), int) else 0
    with progress(total=args.iters * args.vectors, initial=done * args.vectors, desc="SLQ", unit="HVP",
                  enabled=show) as bar:
        sd = _slq(_Counted(op, bar), args, state, sf)
    top = sd.top
    seconds = time.perf_counter() - t0
    if args.fsdp:
        sf.path.unlink(missing_ok=True)
    if not distributed.is_main():
        return 0
    _write(args, out, sd, top, op, {
        "operator": args.operator, "n_samples": n, "split_samples": split_samples, "data": spec,
        "checkpoint": str(args.ckpt),
        "model": label, "seed": args.seed, "seconds": seconds, "seconds_slq": sd.meta.get("seconds"),
        "backend": op.backend, "attention_kernel": op.info().get("attention_kernel"), "device": str(device),
        "threads": args.threads,
        "ranks": world, "torch_version": torch.__version__, "fsdp": args.fsdp,
        "finite_difference": op.info().get("finite_difference"),
    })
    sf.path.unlink(missing_ok=True)
    return 0


def _write(args, out: Path, sd, top, op, meta: dict) -> None:
    """spectrum.json/.npz, the density plot, the summary line on stdout and the too-few-samples note."""
    from landscape.hessian.cli.curves import spectrum_curves
    from landscape.hessian.cli.spectrum_file import write_spectrum
    from landscape.io import dumps
    from landscape.plots import plot_spectral_density

    s = write_spectrum(out, sd, eps=args.eps, sigma=args.sigma, top=top, meta=meta)
    curves = spectrum_curves({"nodes": sd.nodes, "weights": sd.weights, "dim": sd.dim, "eps": args.eps})
    plot_spectral_density({args.operator: curves}, out / "density")
    line = {k: s.get(k) for k in ("lambda_max", "lambda_max_stderr", "lambda_max_residual")}
    line.update({k: s.get(k) for k in ("lambda_min", "trace", "trace_stderr", "negative_ratio",
                                       "degenerate_ratio", "top_eigenvalues", "top_residuals",
                                       "top_converged", "seconds")})
    print(dumps(line))
    stderr, lmax = s.get("lambda_max_stderr"), s.get("lambda_max")
    known = isinstance(stderr, (int, float)) and isinstance(lmax, (int, float)) and lmax != 0
    noisy = s.get("lambda_max_noisy")  # the solver's own verdict, when it gives one
    if known and (bool(noisy) if isinstance(noisy, bool) else stderr > NOISY * abs(lmax)):
        n = meta["n_samples"]
        need = max(n + 1, math.ceil(n * (stderr / (NOISY * abs(lmax))) ** 2))
        have = meta.get("split_samples")
        advice = (f"use --n-samples {need} or more" if not isinstance(have, int) or need <= have else
                  f"the split holds only {have} samples (about {need} needed for 5%): quote the error bar, "
                  f"or measure on a larger split")
        print(f"note: estimate rests on too few samples: {advice} (λmax = {lmax:.4g} ± {stderr:.2g}, data "
              f"stderr {100 * stderr / abs(lmax):.0f}% of λmax on {n} samples)", file=sys.stderr)

