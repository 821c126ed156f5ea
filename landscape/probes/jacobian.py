"""Extreme singular values of a block's input-output Jacobian (the bounds of SPEC C.1).

The whole batch is one vector: J = ∂ vec(x_{l+1}) / ∂ vec(x_l). Since ∂L/∂x_l = Jᵀ ∂L/∂x_{l+1},
the measured ratio r_l = ‖Jᵀg‖ / ‖g‖ lies in [sqrt(λ_min(J Jᵀ)), sqrt(λ_max(J Jᵀ))] — these are what
we return as (σ_max, σ_min). For a square J they are its extreme singular values; when the block
widens (more outputs than inputs) σ_min is 0. Per-sample blocks (eval-mode BN, no attention across
samples) have a block-diagonal J, so the batch values are the max / min over samples.

Method: Lanczos with full reorthogonalization on u ↦ J Jᵀ u, one `torch.func.vjp` (Jᵀu, reusing a
single linearization) and one `torch.func.jvp` (J w) per step. Lanczos is power iteration that keeps
its Krylov basis, so both ends of the spectrum converge together, where power iteration for σ_min on
(c − J Jᵀ) needs ~1/gap steps; the Ritz values bracket inward (σ_max from below, σ_min from above)
and are exact once `steps` reaches the output dimension. Memory: `steps` vectors of the output's size.
Stochastic blocks (dropout, drop-path, stochastic Connects in training mode) have no fixed Jacobian:
use eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from landscape.probes.grad_norm import tensors_in


def lanczos_extremes(matvec: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[float, float]:
    """(λ_max, λ_min) Ritz values of a symmetric PSD operator on flat vectors after `steps` Lanczos steps."""
    basis = (start / start.norm()).unsqueeze(0)
    alphas: list[float] = []
    betas: list[float] = []
    for _ in range(steps):
        q = basis[-1]
        w = matvec(q)
        alphas.append(float(w @ q))
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        if len(alphas) == steps or beta <= 1e-12 * max(abs(a) for a in alphas):
            break
        betas.append(beta)
        basis = torch.cat([basis, (w / beta).unsqueeze(0)])
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(t)
    return float(ritz[-1]), float(ritz[0])


def jacobian_extremes(fn: Callable[[Tensor], Tensor], x: Tensor, steps: int = 20,
                      generator: torch.Generator | None = None) -> tuple[float, float]:
    """(σ_max, σ_min) of J = ∂fn(x)/∂x, batch as one vector; see the module docstring for σ_min."""
    x = x.detach()
    y, pullback = vjp(fn, x)

    def jjt(u: Tensor) -> Tensor:
        (w,) = pullback(u.view(y.shape))
        return jvp(fn, (x,), (w,))[1].flatten()

    start = torch.randn(y.numel(), generator=generator, dtype=y.dtype).to(y.device)
    lmax, lmin = lanczos_extremes(jjt, start, min(steps, y.numel()))
    return max(lmax, 0.0) ** 0.5, max(lmin, 0.0) ** 0.5


def block_jacobian_extremes(block: nn.Module, x: Tensor, *args, steps: int = 20, seed: int = 0,
                            **kwargs) -> tuple[float, float]:
    """`jacobian_extremes` of `block(x, *args, **kwargs)`'s first output tensor w.r.t. x.

    The block runs with detached parameters and cloned buffers (train-mode BatchNorm updates the
    clones), and the global RNG state is restored afterwards, so the model's state is unchanged.
    """
    params = {k: p.detach() for k, p in block.named_parameters()}
    buffers = {k: b.clone() for k, b in block.named_buffers()}

    def fn(inp: Tensor) -> Tensor:
        return tensors_in(functional_call(block, (params, buffers), (inp, *args), kwargs))[0]

    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        return jacobian_extremes(fn, x, steps, torch.Generator().manual_seed(seed))
