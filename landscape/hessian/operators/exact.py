"""Exact float64 curvature matrices of small models: the test oracle, and exact spectra of small nets.

    exact_hessian: H = Σ_b w_b ∇²ℓ_b / Σ_b w_b (`landscape.objective`: w_b samples or tokens), column
                   blocks H[:, j:j+c] = vmap over identity columns of jvp(grad(ℓ_b)) (double backward
                   with batched grad_outputs when forward AD is missing or its result is not symmetric)
    exact_ggn:     G = Σ_b w_b J_bᵀ (∇²_f ℓ_b) J_b / Σ_b w_b from the explicit Jacobian J_b (jacrev) and the
                   explicit output-space loss Hessian (torch.func.hessian): brute force by design.

Both refuse (LandscapeError) above `max_params` parameters: a dense dim×dim float64 matrix takes
8·dim² bytes (20,000 parameters: 3.2 GB). Parameters, buffers and floating inputs are cast to float64
copies; the model is untouched. Attention runs through the math SDPA kernel (the reference kernel, with
every derivative). Checks, as the operators make them: a fixed model (no train-mode BatchNorm/dropout),
a deterministic one (the first batch's loss gradient computed twice must agree to 1e3·eps: functional
dropout would otherwise give one random mask's Hessian), and a symmetric result (‖H − Hᵀ‖_F ≤
10·√eps·‖H‖_F before symmetrizing: a wrong double backward is refused, not averaged away).

This is the test oracle of `HessianOperator` / `GGNOperator`: it shares only the objective and its snapshot
with them (what is differentiated), none of their product machinery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, hessian, jacrev, jvp, vmap

from landscape.errors import LandscapeError
from landscape.hessian.operators import checks
from landscape.hessian.operators.flat import Snapshot
from landscape.objective import Batch, Objective, math_attention

MAX_PARAMS = 20_000


def _setup(objective: Objective, max_params: int) -> tuple[Snapshot, Tensor, Any]:
    """The float64 snapshot, its flat parameter vector θ and `forward(θ, batch)` → predictions."""
    checks.check_fixed(objective.model)
    snap = Snapshot(objective, torch.float64)
    layout = snap.layout
    if layout.dim > max_params:
        raise LandscapeError(
            f"exact curvature of {layout.dim:,} parameters needs {8 * layout.dim**2 / 1e9:.1f} GB; the limit "
            f"is max_params={max_params:,} (raise it, or use HessianOperator with Lanczos)"
        )
    flat = torch.cat([p.reshape(-1) for p in snap.params.values()])
    return snap, flat, lambda theta, batch: snap.output(layout.unflatten(theta), batch)


def _hessian_columns(f, flat: Tensor, chunk_size: int) -> Tensor:
    """∇²f(flat) as a dense matrix, built from Hessian-vector products with identity columns:
    forward-over-reverse (vmap of jvp(grad f)); reverse-over-reverse (batched double backward) when
    forward-mode AD is missing or its result is not symmetric (an op whose gradient follows a convention
    its forward derivative does not, e.g. nn.Embedding's padding_idx)."""
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    try:
        g = grad(f)
        H = vmap(lambda e: jvp(g, (flat,), (e,))[1], chunk_size=chunk_size)(eye)
        if _asymmetry(H) <= checks.symmetry_tolerance(H.dtype):
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
    model: nn.Module | Objective,
    loss_fn: Any = None,
    data: Any = None,
    params: Iterable[str | Tensor] | None = None,
    *,
    max_params: int = MAX_PARAMS,
    chunk_size: int = 256,
) -> Tensor:
    """The exact Hessian [dim, dim] (float64, symmetrized) of the data-set loss; flat order as in
    `HessianOperator`, which takes the same (model, loss_fn, data, params) or an Objective.

    Args:
        model: an nn.Module or an Objective.
        loss_fn: batch-mean loss (None: the model's own).
        data: any form `landscape.objective.Batches` accepts.
        params: the differentiated parameters.
        max_params: refuse above this many parameters (8·dim² bytes).
        chunk_size: identity columns per vmapped product.

    Returns:
        H = Σ_b w_b ∇²ℓ_b / Σ_b w_b as a dense float64 tensor.
    """
    objective = Objective.of(model, loss_fn, data, params)
    snap, flat, forward = _setup(objective, max_params)
    total = torch.zeros(snap.layout.dim, snap.layout.dim, dtype=torch.float64, device=flat.device)
    weight = 0
    with math_attention():
        for i, batch in enumerate(snap.batches()):
            w = objective.weight(batch)

            def f(t: Tensor, b: Batch = batch) -> Tensor:
                return snap.loss(snap.layout.unflatten(t), b)

            if i == 0:
                objective.check(batch, snap.state(snap.params))
                _check_deterministic(f, flat)
            total += w * _hessian_columns(f, flat, chunk_size)
            weight += w
    H = _mean(total, weight)
    _check_symmetric(H)
    return (H + H.T) / 2


def _mean(total: Tensor, weight: int) -> Tensor:
    if weight == 0:
        raise LandscapeError("data: no samples")
    return total / weight


def _check_deterministic(f, flat: Tensor) -> None:
    """The loss gradient at `flat`, computed twice, must agree (else the model or loss is random)."""
    def gradient() -> Tensor:
        theta = flat.detach().requires_grad_()
        with torch.enable_grad():
            return torch.autograd.grad(f(theta), theta)[0]

    g1, g2 = gradient(), gradient()
    checks.check_finite(g1, "the loss gradients")
    checks.check_same(g1, g2, "loss gradients")


def _check_symmetric(M: Tensor) -> None:
    """‖M − Mᵀ‖_F ≤ 10·√eps·‖M‖_F, else a wrong second derivative (see `_checks`)."""
    checks.check_finite(M, "the exact curvature entries")
    ratio = _asymmetry(M)
    tol = checks.symmetry_tolerance(M.dtype)
    if not ratio <= tol:
        raise LandscapeError(f"the exact Hessian is not symmetric (‖H − Hᵀ‖/‖H‖ = {ratio:.1e}): some operation's "
                             f"second derivative is wrong")


def exact_ggn(
    model: nn.Module | Objective,
    loss_fn: Any = None,
    data: Any = None,
    params: Iterable[str | Tensor] | None = None,
    *,
    max_params: int = MAX_PARAMS,
) -> Tensor:
    """The exact generalized Gauss-Newton matrix [dim, dim] (float64): Jᵀ (∇²_f ℓ) J per batch with the
    Jacobian of all predictions and the full output-space loss Hessian formed explicitly (small problems).

    Args:
        model: an nn.Module or an Objective.
        loss_fn: batch-mean loss (None: the model's own, as a function of its logits).
        data: any form `landscape.objective.Batches` accepts.
        params: the differentiated parameters.
        max_params: refuse above this many parameters.

    Returns:
        G = Σ_b w_b J_bᵀ ∇²_f ℓ_b J_b / Σ_b w_b as a dense float64 tensor.
    """
    objective = Objective.of(model, loss_fn, data, params)
    snap, flat, forward = _setup(objective, max_params)
    dim = snap.layout.dim
    total = torch.zeros(dim, dim, dtype=torch.float64, device=flat.device)
    weight = 0
    with math_attention():
        for i, batch in enumerate(snap.batches()):
            out = forward(flat, batch)
            if i == 0:
                objective.check(batch, snap.state(snap.params))
                checks.check_finite(out, "the model outputs")
                checks.check_same(out, forward(flat, batch), "model outputs")
            J = jacrev(lambda t, b=batch: forward(t, b))(flat).reshape(out.numel(), dim)
            H_out = hessian(lambda o, b=batch: objective.loss_of_output(o, b))(out).reshape(out.numel(), out.numel())
            w = objective.weight(batch)
            total += w * (J.T @ H_out @ J)
            weight += w
    G = _mean(total, weight)
    return (G + G.T) / 2
