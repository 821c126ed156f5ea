"""Extreme singular values of a block's input-output Jacobian (the bounds of docs/methods.md §C.1).

The whole batch is one vector: J = ∂ vec(x_{l+1}) / ∂ vec(x_l). Since ∂L/∂x_l = Jᵀ ∂L/∂x_{l+1},
the measured ratio r_l = ‖Jᵀg‖ / ‖g‖ lies in [sqrt(λ_min(J Jᵀ)), sqrt(λ_max(J Jᵀ))] — these are what
we return as (σ_max, σ_min). For a square J they are its extreme singular values; when the block
widens (more outputs than inputs) σ_min is 0. Per-sample blocks (eval-mode BN, no attention across
samples) have a block-diagonal J, so the batch values are the max / min over samples.

Method: `landscape.hessian.solvers.lanczos` (full reorthogonalization) on u ↦ J Jᵀ u, with one forward pass for
all steps: Jᵀu is a backward pass through the retained graph, and J w a JVP by the double-backward trick
(J w = ∂⟨Jᵀu₀, w⟩/∂u₀ on the graph of g = Jᵀu₀, built once with create_graph). On CPU this is far
faster than `torch.func.jvp`, whose convolution rule falls back to a slow path. Both ends of the
spectrum converge together; the Ritz values bracket inward (σ_max from below, σ_min from above) and are
exact once `steps` reaches the output dimension. Memory: the block's graph plus `steps` vectors of the
output's size. Fused attention kernels (PyTorch's default SDPA) have no double backward: when one
stops the probe, it runs again through the math SDPA kernel. Since the block runs once, a stochastic
block (dropout, drop-path, stochastic Connect in training mode) is linearized at the draw that
forward made, which is not the draw of the training pass it was called from: use eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.hessian.solvers.lanczos import lanczos
from landscape.hessian.solvers.protocol import as_operator
from landscape.hessian.solvers.tridiagonal import tridiag_to_ritz
from landscape.objective import is_attention_error, math_attention
from landscape.probes.grad_norm import tensors_in


def lanczos_extremes(matvec: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[float, float]:
    """(λ_max, λ_min) Ritz values of a symmetric operator on flat vectors after `steps` Lanczos steps.

    Args:
        matvec: v ↦ A v on flat vectors.
        start: the start vector.
        steps: Lanczos steps.

    Returns:
        (λ_max, λ_min).
    """
    dim = start.numel()

    def matmat(V: Tensor) -> Tensor:
        return torch.stack([matvec(v) for v in V.T], 1)

    op = as_operator(matmat, dim, start.dtype, start.device)
    res = lanczos(op, min(steps, dim), start=start.reshape(dim, 1), reorth="full")
    ritz, _ = tridiag_to_ritz(res.alpha[0], res.beta[0])
    return float(ritz[-1]), float(ritz[0])


def jacobian_extremes(fn: Callable[[Tensor], Tensor], x: Tensor, steps: int = 20,
                      generator: torch.Generator | None = None) -> tuple[float, float]:
    """(σ_max, σ_min) of J = ∂fn(x)/∂x, batch as one vector; see the module docstring for σ_min.
    Fused attention without a double backward is retried through the math SDPA kernel.

    Args:
        fn: the map x ↦ fn(x).
        x: the point.
        steps: Lanczos steps on JᵀJ.
        generator: the start vector's generator (its state is restored).

    Returns:
        (σ_max, σ_min).
    """
    saved = generator.get_state() if generator is not None else None
    try:
        return _extremes(fn, x, steps, generator)
    except (RuntimeError, NotImplementedError) as e:
        if not is_attention_error([str(e)]):
            raise
    if saved is not None:
        generator.set_state(saved)
    with math_attention():
        return _extremes(fn, x, steps, generator)


def _extremes(fn: Callable[[Tensor], Tensor], x: Tensor, steps: int,
              generator: torch.Generator | None) -> tuple[float, float]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = tensors_in(fn(xg))[0]
        if not y.requires_grad:  # the output does not depend on x: J = 0
            return 0.0, 0.0
        u0 = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, xg, u0, create_graph=True, allow_unused=True)  # Jᵀu0, linear in u0

    def jjt(u: Tensor) -> Tensor:
        (w,) = torch.autograd.grad(y, xg, u.view_as(y), retain_graph=True, allow_unused=True)  # Jᵀu
        if w is None or g is None or not g.requires_grad:
            return torch.zeros_like(u)
        (jw,) = torch.autograd.grad(g, u0, w, retain_graph=True, allow_unused=True)  # J w
        return torch.zeros_like(u) if jw is None else jw.flatten()

    start = torch.randn(y.numel(), generator=generator, dtype=y.dtype).to(y.device)
    with torch.no_grad():
        lmax, lmin = lanczos_extremes(jjt, start, min(steps, y.numel()))
    return max(lmax, 0.0) ** 0.5, max(lmin, 0.0) ** 0.5


@contextmanager
def _batch_stats_untracked(block: nn.Module):
    """Train-mode BatchNorm normalizes with batch statistics either way; stop it updating its buffers."""
    norms = [m for m in block.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def block_jacobian_extremes(block: nn.Module, x: Tensor, *args, steps: int = 20, seed: int = 0,
                            **kwargs) -> tuple[float, float]:
    """`jacobian_extremes` of `block(x, *args, **kwargs)`'s first output tensor w.r.t. x.

    Only gradients with respect to x are taken (`torch.autograd.grad`), so no `.grad` appears on
    the parameters; train-mode BatchNorm layers use their batch statistics without updating their
    running ones, and the global RNG state is restored afterwards, so the model's state is unchanged
    (other layers that write to buffers in forward are not supported). Hooks on the block fire.

    Args:
        block: the block.
        x: its input.
        *args: further positional inputs of the block.
        steps: Lanczos steps.
        seed: the start vector's seed.
        **kwargs: keyword inputs of the block.

    Returns:
        (σ_max, σ_min).
    """

    def fn(inp: Tensor) -> Tensor:
        return block(inp, *args, **kwargs)

    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _batch_stats_untracked(block):
        return jacobian_extremes(fn, x, steps, torch.Generator().manual_seed(seed))
