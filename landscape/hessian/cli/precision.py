"""The hessian CLI's precision flags: the operator's compute dtype (--dtype, --autocast) and what accuracy it allows.

A product computed in a dtype with unit roundoff u is itself only accurate to a few u relative (bf16:
u = 2⁻⁸ ≈ 3.9e-3; measured on a trained GPT-2-like LM and a ResNet in docs/methods.md §E.9, where a single
bf16 product is off by about 1e-2), and a finite-difference product to its Richardson error estimate. A
residual tolerance below that cannot be met: the top eigenpairs then stop at their matmat budget, unconverged,
and λmax is still only as accurate as the products. `attainable` is that floor (8u, the default tolerance the
solvers give low precision, or the finite-difference estimate when larger); `warn_if_unattainable` says so
on stderr before the run.
"""

from __future__ import annotations

import argparse
import sys

import torch

from landscape.cli import positive_float

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """Add --dtype, --autocast and --tol.

    Args:
        p: the hessian CLI's parser.
    """
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="compute the products in this precision (default: the model's; with --fsdp the gathered "
                        "parameters' dtype, FSDP's mixed precision)")
    p.add_argument("--autocast", choices=("bfloat16", "float16"), default=None,
                   help="compute the products under torch.autocast in this dtype (float32 weights, as "
                        "mixed-precision training runs)")
    p.add_argument("--tol", type=positive_float, default=None, metavar="T",
                   help="relative residual tolerance of the top eigenpairs (default: the solver's for the dtype); "
                        "a note says when the dtype cannot reach it")


def compute_dtype(args: argparse.Namespace, op: object) -> torch.dtype:
    """The dtype the products are computed in.

    Args:
        args: the parsed flags.
        op: the operator.

    Returns:
        --autocast's dtype, else the operator's compute_dtype (FSDP) or dtype.
    """
    if args.autocast:
        return DTYPES[args.autocast]
    return getattr(op, "compute_dtype", None) or op.dtype  # type: ignore[attr-defined]


def attainable(dtype: torch.dtype, fd_error: float | None = None) -> float:
    """The relative accuracy products computed in `dtype` allow.

    Args:
        dtype: the compute dtype.
        fd_error: the finite-difference products' error estimate, if any.

    Returns:
        8 units of roundoff of `dtype`, or `fd_error` when larger.
    """
    floor = 8 * torch.finfo(dtype).eps / 2
    return max(floor, fd_error or 0.0)


def warn_if_unattainable(args: argparse.Namespace, op: object, show: bool) -> None:
    """Print a note on stderr when --tol asks for more than the products' precision allows.

    Args:
        args: the parsed flags (--tol, --autocast).
        op: the operator.
        show: this rank prints (rank 0).
    """
    if args.tol is None or not show:
        return
    dtype = compute_dtype(args, op)
    fd = (op.info().get("finite_difference") or {}).get("error_estimate")  # type: ignore[attr-defined]
    floor = attainable(dtype, fd)
    if args.tol < floor:
        named = str(dtype).replace("torch.", "")
        why = "its finite-difference products' estimated error" if fd and fd >= floor else \
            f"{named} products (8 units of roundoff)"
        print(f"note: --tol {args.tol:.1e} asks for more than {why} allows (about {floor:.1e} relative; "
              "docs/methods.md §E.9): the top eigenpairs will stop unconverged at their matmat budget",
              file=sys.stderr)
