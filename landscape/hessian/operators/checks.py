"""Preconditions for a curvature matrix to exist: a fixed, deterministic, symmetric, differentiable model.

Shared by the operators and by the exact oracle (`exact.py`), which must not import the operator it checks.

- `check_fixed`: no module whose train-mode output depends on the batch or on randomness (BatchNorm,
  dropout, attention dropout in training mode).
- `check_same`: two evaluations of one quantity must agree to `1e3·eps` relative (else the model or loss
  draws random numbers, e.g. functional dropout, and "the" Hessian is one random draw's).
- `check_symmetric`: for random vectors v_i, the bilinear form must be symmetric,
      |v_iᵀ(H v_j) − v_jᵀ(H v_i)|  ≤  tol · s_ij,   s_ij = (‖v_i‖·‖H v_j‖ + ‖v_j‖·‖H v_i‖) / (2 √dim),
  pooled over pairs as a root-sum-square ratio. s_ij is the size of a random bilinear form vᵀHu (about
  ‖H‖_F for Gaussian vectors), so the ratio is about ‖H − Hᵀ‖_F / ‖H‖_F whatever the dimension, while
  rounding of the products contributes about their relative error. tol = 10·√eps of the dtype (float32:
  3.5e-3, float64: 1.5e-7). A Hessian is symmetric by definition, so a failure means some operation's
  second derivative is wrong, and every eigenvalue computed from the products would be wrong too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from landscape.errors import LandscapeError, NonFiniteError


def check_fixed(model: nn.Module) -> None:
    """Refuse modules whose train-mode output depends on the batch or on randomness.

    Args:
        model: the model in the mode it is measured in.

    Raises:
        LandscapeError: BatchNorm, dropout or attention dropout in train mode.
    """
    for name, m in model.named_modules():
        if not m.training:
            continue
        random = isinstance(m, _DropoutNd) and m.p > 0
        random |= isinstance(m, nn.MultiheadAttention) and m.dropout > 0
        if isinstance(m, _BatchNorm) or random:
            raise LandscapeError(
                f"{name or 'model'} ({type(m).__name__}) is in train mode: the operator would not be a "
                "fixed matrix: call model.eval()"
            )


def check_finite(values: Tensor, what: str) -> None:
    """Refuse NaN/inf products: non-finite weights, inputs or loss make every later number meaningless.

    Args:
        values: the products (or losses).
        what: what they are, for the message.

    Raises:
        NonFiniteError: a NaN or inf among them.
    """
    if not bool(torch.isfinite(values).all()):
        raise NonFiniteError(
            f"{what} are not finite: the model's weights, the inputs or the loss hold NaN or inf "
            "(a diverged checkpoint?)"
        )


def check_same(first: Tensor, second: Tensor, what: str) -> None:
    """Require two evaluations of one quantity to agree to 1e3·eps relative.

    Args:
        first: the first evaluation.
        second: the second.
        what: what they are, for the message.

    Raises:
        LandscapeError: ‖first − second‖ > 1e3·eps·‖first‖.
    """
    scale = max(float(first.norm()), 1e-30)
    diff = float((first - second).norm())
    if not math.isfinite(diff) or diff > 1e3 * torch.finfo(first.dtype).eps * scale:
        raise LandscapeError(
            f"two {what} with the same input differ (relative {diff / scale:.1e}): the model or loss "
            "is random (dropout? stochastic depth?) and the curvature would not be a fixed matrix"
        )


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """10·√eps of `dtype`: far above product rounding, far below a wrong second derivative.

    Args:
        dtype: the compute dtype.

    Returns:
        The relative tolerance.
    """
    return 10 * math.sqrt(torch.finfo(dtype).eps)


def asymmetry(V: Tensor, HV: Tensor) -> float:
    """Pooled |v_iᵀHv_j − v_jᵀHv_i| / s_ij over pairs of the rows of V [k, dim], HV [k, dim] (see above).

    Args:
        V: [k, dim] vectors.
        HV: their products [k, dim].

    Returns:
        The pooled relative asymmetry (0 for a symmetric operator up to rounding).
    """
    k, dim = V.shape
    G, nv, nh = _gram64(V, HV)  # G[i, j] = v_iᵀ H v_j
    S = (nv[:, None] * nh[None, :] + nh[:, None] * nv[None, :]) / (2 * math.sqrt(dim))
    iu = torch.triu_indices(k, k, offset=1)
    diff = (G - G.T)[iu[0], iu[1]]
    scale = S[iu[0], iu[1]]
    denom = float(scale.square().sum().sqrt())
    if denom == 0:
        return 0.0
    return float(diff.square().sum().sqrt()) / denom


def _gram64(V: Tensor, HV: Tensor, chunk: int = 1 << 20) -> tuple[Tensor, Tensor, Tensor]:
    """(V HVᵀ, ‖rows of V‖, ‖rows of HV‖) in float64, summed over column chunks of `chunk` entries, so that no
    float64 copy of V or HV is made (a [3, 11M] one would be 256 MiB each)."""
    k, dim = V.shape
    G = torch.zeros(k, k, dtype=torch.float64, device=V.device)
    nv, nh = torch.zeros(k, dtype=torch.float64, device=V.device), torch.zeros_like(G[0])
    for lo in range(0, dim, chunk):
        v, h = V[:, lo : lo + chunk].double(), HV[:, lo : lo + chunk].double()
        G += v @ h.T
        nv += v.square().sum(1)
        nh += h.square().sum(1)
    return G, nv.sqrt(), nh.sqrt()


def check_symmetric(V: Tensor, HV: Tensor, model: nn.Module, dtype: torch.dtype) -> float:
    """Raise a LandscapeError naming the likely cause when the products of V are not symmetric; return
    the measured asymmetry.

    Args:
        V: [k, dim] vectors.
        HV: their products.
        model: the model (for the likely cause).
        dtype: the compute dtype (the tolerance is `symmetry_tolerance` of it).

    Returns:
        The asymmetry.
    """
    ratio = asymmetry(V, HV)
    tol = symmetry_tolerance(dtype)
    if not ratio <= tol:
        raise LandscapeError(
            f"the curvature products are not symmetric (uᵀHv vs vᵀHu differ by {ratio:.1e} of their scale, "
            f"tolerance {tol:.0e} in {str(dtype).replace('torch.', '')}): some operation's second derivative "
            f"is wrong, so no eigenvalue would be right; likely cause: {likely_asymmetry_cause(model)}"
        )
    return ratio


def likely_asymmetry_cause(model: nn.Module) -> str:
    """Name the modules known to have a wrong double backward, else the usual suspects.

    Args:
        model: the model.

    Returns:
        A sentence for the error message.
    """
    normed = []
    for name, m in model.named_modules():
        params = getattr(m, "parametrizations", None)
        wn_param = params is not None and any(
            type(p).__name__ == "_WeightNorm" for plist in params.values() for p in plist
        )
        wn_hook = any(type(h).__name__ == "WeightNorm" for h in getattr(m, "_forward_pre_hooks", {}).values())
        if wn_param or wn_hook:
            normed.append(repr(name) if name else "the model")
    padded = [repr(name) if name else "the model" for name, m in model.named_modules()
              if isinstance(m, nn.Embedding) and m.padding_idx is not None]
    if padded and not normed:
        return (f"nn.Embedding with padding_idx ({', '.join(padded[:3])}): its gradient skips the padding row "
                "but its forward-mode derivative does not, so forward-over-reverse products mix the two; "
                "use backend='double_backward' (the padding row then counts as constant)")
    if normed:
        more = f" (+{len(normed) - 3} more)" if len(normed) > 3 else ""
        return (
            f"weight_norm on {', '.join(normed[:3])}{more}: torch._weight_norm's double backward is wrong "
            "upstream; write the weight as g * v / v.norm(dim=..., keepdim=True) in forward instead"
        )
    return (
        "a custom autograd.Function whose backward is not itself correctly differentiable, or an operation "
        "with a wrong double backward (torch._weight_norm is one)"
    )
