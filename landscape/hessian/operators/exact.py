"""Exact float64 curvature matrices of small models: the test oracle, and exact spectra of small nets.

    exact_hessian: H = (1/N) Σ_b n_b ∇²L_b, column blocks H[:, j:j+c] = vmap over identity columns of
                   jvp(grad(L_b)) (double backward with batched grad_outputs when forward AD is missing
                   or its result is not symmetric)
    exact_ggn:     G = (1/N) Σ_b n_b J_bᵀ (∇²_f L_b) J_b from the explicit Jacobian J_b (jacrev) and the
                   explicit output-space loss Hessian (torch.func.hessian): brute force by design.

Both refuse (LandscapeError) above `max_params` parameters: a dense dim×dim float64 matrix takes
8·dim² bytes (20,000 parameters: 3.2 GB). Parameters, buffers and floating inputs are cast to float64
copies; the model is untouched. Attention runs through the math SDPA kernel (the reference kernel, with
every derivative). Checks, as the operators make them: a fixed model (no train-mode BatchNorm/dropout),
a deterministic one (the first batch's loss gradient computed twice must agree to 1e3·eps: functional
dropout would otherwise give one random mask's Hessian), and a symmetric result (‖H − Hᵀ‖_F ≤
10·√eps·‖H‖_F before symmetrizing: a wrong double backward is refused, not averaged away).

This is the test oracle of `HessianOperator` / `GGNOperator` and imports nothing from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap

from landscape.errors import LandscapeError
from landscape.hessian.operators import checks as _checks
from landscape.hessian.operators import data as _data
from landscape.hessian.operators.flat import FlatLayout, select_params, snapshot

MAX_PARAMS = 20_000


def _setup(model: nn.Module, params: Iterable[str | Tensor] | None, max_params: int):
    _checks.check_fixed(model)
    names = select_params(model, params)
    all_params, buffers = snapshot(model, torch.float64)
    layout = FlatLayout(names, [all_params[n].shape for n in names])
    if layout.dim > max_params:
        raise LandscapeError(
            f"exact curvature of {layout.dim:,} parameters needs {8 * layout.dim**2 / 1e9:.1f} GB; the limit "
            f"is max_params={max_params:,} (raise it, or use HessianOperator with Lanczos)"
        )
    consts = {**{n: p for n, p in all_params.items() if n not in names}, **buffers}
    flat = torch.cat([all_params[n].reshape(-1) for n in names])

    def forward(theta: Tensor, inputs: Any) -> Tensor:
        ps = layout.unflatten(theta)
        return functional_call(model, {**consts, **ps}, _data.as_args(inputs))

    return layout, flat, forward


def _hessian_columns(f, flat: Tensor, chunk_size: int) -> Tensor:
    """∇²f(flat) as a dense matrix, built from Hessian-vector products with identity columns:
    forward-over-reverse (vmap of jvp(grad f)); reverse-over-reverse (batched double backward) when
    forward-mode AD is missing or its result is not symmetric (an op whose gradient follows a convention
    its forward derivative does not, e.g. nn.Embedding's padding_idx)."""
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    try:
        g = grad(f)
        H = vmap(lambda e: jvp(g, (flat,), (e,))[1], chunk_size=chunk_size)(eye)
        if _asymmetry(H) <= _checks.symmetry_tolerance(H.dtype):
            return H
    except (RuntimeError, NotImplementedError):
        pass
    theta = flat.detach().requires_grad_()
    with torch.enable_grad():
        (gr,) = torch.autograd.grad(f(theta), theta, create_graph=True)
        cols = [
            torch.autograd.grad(gr, theta, e, retain_graph=True, is_grads_batched=True)[0]
            for e in eye.split(chunk_size)
        ]
    return torch.cat(cols)


def _asymmetry(M: Tensor) -> float:
    return float((M - M.T).norm() / M.norm().clamp_min(1e-300))


def exact_hessian(
    model: nn.Module,
    loss_fn: Any,
    data: Any,
    params: Iterable[str | Tensor] | None = None,
    *,
    max_params: int = MAX_PARAMS,
    chunk_size: int = 256,
) -> Tensor:
    """The exact Hessian [dim, dim] (float64, symmetrized) of the data-set loss; flat order as in
    `HessianOperator`. `data` takes every form `HessianOperator` accepts."""
    layout, flat, forward = _setup(model, params, max_params)
    total = torch.zeros(layout.dim, layout.dim, dtype=torch.float64, device=flat.device)
    count = 0
    with _checks.math_attention():
        for i, batch in enumerate(_data.DataSource(data)):
            batch = _data.to_device(batch, flat.device, torch.float64)
            n = _data.batch_size(batch[0])

            def f(t: Tensor, b: _data.Batch = batch) -> Tensor:
                return loss_fn(forward(t, b[0]), b[1])

            if i == 0:
                _check_deterministic(f, flat)
            total += n * _hessian_columns(f, flat, chunk_size)
            count += n
    H = _data.sample_average(total, count)
    _check_symmetric(H)
    return (H + H.T) / 2


def _check_deterministic(f, flat: Tensor) -> None:
    """The loss gradient at `flat`, computed twice, must agree (else the model or loss is random)."""
    def gradient() -> Tensor:
        theta = flat.detach().requires_grad_()
        with torch.enable_grad():
            return torch.autograd.grad(f(theta), theta)[0]

    g1, g2 = gradient(), gradient()
    _checks.check_finite(g1, "the loss gradients")
    _checks.check_same(g1, g2, "loss gradients")


def _check_symmetric(M: Tensor) -> None:
    """‖M − Mᵀ‖_F ≤ 10·√eps·‖M‖_F, else a wrong second derivative (see `_checks`)."""
    _checks.check_finite(M, "the exact curvature entries")
    ratio = _asymmetry(M)
    tol = _checks.symmetry_tolerance(M.dtype)
    if not ratio <= tol:
        raise LandscapeError(f"the exact Hessian is not symmetric (‖H − Hᵀ‖/‖H‖ = {ratio:.1e}): some operation's "
                             f"second derivative is wrong")


def exact_ggn(
    model: nn.Module,
    loss_fn: Any,
    data: Any,
    params: Iterable[str | Tensor] | None = None,
    *,
    max_params: int = MAX_PARAMS,
) -> Tensor:
    """The exact generalized Gauss-Newton matrix [dim, dim] (float64): Jᵀ (∇²_f L) J per batch with the
    Jacobian of all outputs and the full output-space loss Hessian formed explicitly (small problems)."""
    layout, flat, forward = _setup(model, params, max_params)
    total = torch.zeros(layout.dim, layout.dim, dtype=torch.float64, device=flat.device)
    count = 0
    with _checks.math_attention():
        for i, batch in enumerate(_data.DataSource(data)):
            batch = _data.to_device(batch, flat.device, torch.float64)
            n = _data.batch_size(batch[0])
            out = forward(flat, batch[0])
            if i == 0:
                _checks.check_finite(out, "the model outputs")
                _checks.check_same(out, forward(flat, batch[0]), "model outputs")
            J = jacrev(lambda t, b=batch: forward(t, b[0]))(flat).reshape(out.numel(), layout.dim)
            H_out = hessian(lambda o, b=batch: loss_fn(o, b[1]))(out).reshape(out.numel(), out.numel())
            total += n * (J.T @ H_out @ J)
            count += n
    G = _data.sample_average(total, count)
    return (G + G.T) / 2
