"""Directions in parameter space for loss surfaces: random (filter-, layer- or un-normalized), Hessian
eigenvectors, PCA of a training trajectory, and the difference of two checkpoints.

A direction is a dict {parameter name: tensor of that parameter's shape} over the model's parameters
(`named_parameters()` order; buffers are never part of a direction). The surface at coordinates c is
the loss at θ(c) = θ₀ + Σ_j c_j d_j.

Filter normalization (Li et al. 2018, §4; docs/methods.md §F.1): draw d ~ N(0, I), then rescale every
filter of every weight tensor — the slice along the output dimension 0, a row of a Linear weight, an
output channel of a convolution — to the norm of the matching filter of the weights:
    d_i ← d_i · ‖θ_i‖ / ‖d_i‖.
Parameters with at most one dimension (biases, normalization scales and shifts) are zero in the
direction by default; with `include_bias_norm=True` each is one filter (its whole vector) normalized the
same way. "layer" rescales each whole tensor to ‖θ_l‖; "none" keeps the raw draw.

PCA (Li et al. 2018, §7): the rows θ_i − θ_final of the saved trajectory, centred over i, are
factored by a thin SVD M = U S Vᵀ; the first n right singular vectors are orthonormal directions, the
explained variance ratios are s_j² / Σ s², and each θ_i projects to (θ_i − θ_final) · v_j.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError

Direction = dict[str, Tensor]
NORMS = ("filter", "layer", "none")


def parameters_of(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{name: detached parameter} of a model (or a copy of a given name→tensor mapping).

    Args:
        model: a model, or {name: tensor}.

    Returns:
        {name: detached tensor}.
    """
    if isinstance(model, nn.Module):
        return {n: p.detach() for n, p in model.named_parameters()}
    return {n: t.detach() for n, t in model.items()}


def _is_bias_or_norm(t: Tensor) -> bool:
    return t.dim() <= 1


def normalize_direction(direction: Mapping[str, Tensor], weights: Mapping[str, Tensor], *, norm: str = "filter",
                        include_bias_norm: bool = False, eps: float = 1e-10) -> Direction:
    """A copy of `direction` scaled per filter ("filter"), per tensor ("layer") or not ("none") to `weights`.

    Biases and normalization parameters (tensors with ≤ 1 dimension) become zero unless
    `include_bias_norm`, in which case each is normalized as a single filter.

    Args:
        direction: {name: tensor}.
        weights: {name: tensor} of the same shapes.
        norm: "filter", "layer" or "none": d_f ← d_f · ‖w_f‖ / (‖d_f‖ + eps) per filter f (or per tensor).
        include_bias_norm: normalize ≤1-D tensors too instead of zeroing them.
        eps: ε.

    Returns:
        The normalized direction.
    """
    if norm not in NORMS:
        raise LandscapeError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    out = {}
    for name, d in direction.items():
        w = weights[name].to(d)
        if _is_bias_or_norm(w) and not include_bias_norm:
            out[name] = torch.zeros_like(d)
        elif norm == "none":
            out[name] = d.clone()
        elif norm == "layer" or _is_bias_or_norm(w):
            out[name] = d * (torch.linalg.vector_norm(w) / (torch.linalg.vector_norm(d) + eps))
        else:
            dims = tuple(range(1, d.dim()))
            wn = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
            dn = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
            out[name] = d * (wn / (dn + eps))
    return out


def random_directions(model: nn.Module | Mapping[str, Tensor], n: int = 2, *, seed: int = 0, norm: str = "filter",
                      include_bias_norm: bool = False) -> list[Direction]:
    """`n` Gaussian directions, normalized to the model's weights (see module docstring).

    Drawn on the CPU from one generator seeded with `seed`, parameter by parameter in order and in each
    parameter's dtype, then moved to its device: the same seed gives the same directions anywhere.

    Args:
        model: a model, or {name: tensor}.
        n: the number of directions.
        seed: the generator's seed.
        norm: "filter", "layer" or "none" (`normalize_direction`).
        include_bias_norm: keep (and normalize) the ≤1-D parameters.

    Returns:
        The directions.
    """
    if n < 1:
        raise LandscapeError(f"the number of directions must be at least 1, got {n}")
    weights = parameters_of(model)
    if not weights:
        raise LandscapeError("the model has no parameters")
    gen = torch.Generator().manual_seed(int(seed))
    dirs = []
    for _ in range(n):
        raw = {name: torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device) for name, w in weights.items()}
        dirs.append(normalize_direction(raw, weights, norm=norm, include_bias_norm=include_bias_norm))
    return dirs


def as_direction(model: nn.Module | Mapping[str, Tensor], d: Mapping[str, Tensor] | Tensor,
                 what: str = "direction") -> Direction:
    """A direction in dict form over all of the model's parameters (missing names are zero).

    `d` is a dict name → tensor, or a flat vector over the parameters in `named_parameters()` order
    (the layout of `landscape.hessian` operators over all parameters). Wrong names, shapes or lengths
    raise `LandscapeError`.

    Args:
        model: a model, or {name: tensor}.
        d: {name: tensor} or a flat vector.
        what: the argument's name, for messages.

    Returns:
        {name: tensor} over every parameter.
    """
    weights = parameters_of(model)
    if isinstance(d, Tensor):
        dim = sum(w.numel() for w in weights.values())
        if d.dim() != 1 or d.numel() != dim:
            raise LandscapeError(f"{what}: a flat direction must be a vector of {dim} entries (the model's "
                                 f"parameter count), got shape {list(d.shape)}")
        parts = d.split([w.numel() for w in weights.values()])
        return {n: p.reshape(w.shape).to(w) for (n, w), p in zip(weights.items(), parts)}
    unknown = [k for k in d if k not in weights]
    if unknown:
        raise LandscapeError(f"{what}: {unknown[0]!r} is not a parameter of the model")
    out = {}
    for name, w in weights.items():
        t = d.get(name)
        if t is None:
            out[name] = torch.zeros_like(w)
        elif tuple(t.shape) != tuple(w.shape):
            raise LandscapeError(f"{what}: {name} has shape {list(t.shape)}, the parameter has {list(w.shape)}")
        else:
            out[name] = t.detach().to(w)
    return out


def flatten(d: Mapping[str, Tensor]) -> Tensor:
    """A direction (dict) as one flat vector in its key order.

    Args:
        d: {name: tensor}.

    Returns:
        The flat vector.
    """
    return torch.cat([t.reshape(-1) for t in d.values()])


def eigen_directions(model: nn.Module, eigenvectors: Tensor, names: Sequence[str] | None = None) -> list[Direction]:
    """Directions from the columns of an eigenvector block [dim, k] (e.g. `top_eigenpairs(op).eigenvectors`).

    `names`: the parameters the operator differentiated, in its flat order (`op.param_names`; default
    all parameters); the other parameters are zero. Each direction is rescaled to unit norm, so grid
    coordinates along it are distances in parameter space.

    Args:
        model: the model.
        eigenvectors: [dim, k].
        names: the operator's parameters in its flat order (None: all).

    Returns:
        k unit-norm directions.
    """
    weights = parameters_of(model)
    names = list(weights) if names is None else list(names)
    missing = [n for n in names if n not in weights]
    if missing:
        raise LandscapeError(f"eigenvectors: {missing[0]!r} is not a parameter of the model")
    dim = sum(weights[n].numel() for n in names)
    V = torch.as_tensor(eigenvectors)
    if V.dim() == 1:
        V = V[:, None]
    if V.dim() != 2 or V.shape[0] != dim:
        raise LandscapeError(f"eigenvectors: expected shape [{dim}, k] over {len(names)} parameters, "
                             f"got {list(V.shape)}")
    out = []
    for j in range(V.shape[1]):
        v = V[:, j] / torch.linalg.vector_norm(V[:, j])
        parts = dict(zip(names, v.split([weights[n].numel() for n in names])))
        out.append({n: (parts[n].reshape(w.shape).to(w) if n in parts else torch.zeros_like(w))
                    for n, w in weights.items()})
    return out


def difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Direction:
    """b − a over the parameters of `a` (shapes must match): the direction of the path from a to b.

    Args:
        a: {name: tensor}, the start.
        b: {name: tensor}, the end.

    Returns:
        {name: b − a}.
    """
    problem = [n for n in a if n not in b or b[n].shape != a[n].shape]
    if problem or len(a) != len(b):
        n = problem[0] if problem else next(k for k in b if k not in a)
        raise LandscapeError(f"the two sets of weights do not match (parameter {n!r})")
    return {n: b[n].detach().to(a[n]) - a[n].detach() for n in a}


@dataclass
class PCADirections:
    """directions (orthonormal), explained_variance_ratio [n], singular_values [n], coords [T, n] of the
    trajectory's points in the plane (the final weights at the origin)."""

    directions: list[Direction]
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    coords: np.ndarray

    def to_dict(self) -> dict:
        """The explained variance ratios, singular values and trajectory coordinates as JSON."""
        return {"explained_variance_ratio": self.explained_variance_ratio.tolist(),
                "singular_values": self.singular_values.tolist(), "coords": self.coords.tolist()}


def pca_directions(trajectory: Sequence[Mapping[str, Tensor]], final: Mapping[str, Tensor] | None = None, n: int = 2,
                   *, center: bool = True, include_bias_norm: bool = True) -> PCADirections:
    """PCA of the trajectory's differences to the final weights (Li et al. 2018, §7).

    `trajectory`: the saved weights in order. `final`: the origin; by default the last point, which is
    then left out of the matrix (its row would be zero). `center` subtracts the mean difference before
    the SVD (as PCA does; the reference code's sklearn PCA does too). `include_bias_norm=False` zeros the
    ≤1-D parameters in the differences first.

    Args:
        trajectory: the saved weights in order.
        final: the origin (None: the last point).
        n: the number of directions.
        center: subtract the mean difference.
        include_bias_norm: keep the ≤1-D parameters.

    Returns:
        The directions, their explained variance ratios, singular values and the trajectory's coordinates.
    """
    pts = [parameters_of(t) for t in trajectory]
    if final is None:
        if len(pts) < 2:
            raise LandscapeError(f"a PCA trajectory needs at least 2 checkpoints, got {len(pts)}")
        final_w, rows = pts[-1], pts[:-1]
    else:
        final_w, rows = parameters_of(final), pts
        if len(rows) < 1:
            raise LandscapeError("a PCA trajectory needs at least 1 checkpoint besides the final weights")
    keep = [k for k, w in final_w.items() if include_bias_norm or not _is_bias_or_norm(w)]

    def diff_vec(p: Mapping[str, Tensor]) -> Tensor:
        return flatten({k: (p[k] - final_w[k]).double() for k in keep}).cpu()

    for p in pts:
        difference(final_w, p)  # same names and shapes, else one-line error
    M = torch.stack([diff_vec(p) for p in rows])                      # [T, dim']
    Mc = M - M.mean(0, keepdim=True) if center else M
    _, S, Vh = torch.linalg.svd(Mc, full_matrices=False)
    if n > Vh.shape[0]:
        raise LandscapeError(f"{n} PCA directions need at least {n + int(center)} trajectory differences, "
                             f"got {M.shape[0]}")
    total = float((S ** 2).sum())
    if total == 0:
        raise LandscapeError("the trajectory does not move: every checkpoint equals the final weights")
    V = Vh[:n]                                                         # [n, dim'] orthonormal rows
    coords = torch.stack([diff_vec(p) for p in pts]) @ V.T             # [T_all, n]
    sizes = [final_w[k].numel() for k in keep]
    dirs = []
    for j in range(n):
        parts = dict(zip(keep, V[j].split(sizes)))
        dirs.append({k: (parts[k].reshape(w.shape).to(w) if k in parts else torch.zeros_like(w))
                     for k, w in final_w.items()})
    return PCADirections(dirs, (S[:n] ** 2 / total).numpy(), S[:n].numpy(), coords.numpy())
