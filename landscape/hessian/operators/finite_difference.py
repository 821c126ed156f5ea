"""Hessian-vector products by central differences of first-order gradients (no double backward anywhere).

    H v ≈ D(h) = (∇L(θ + h v) − ∇L(θ − h v)) / (2h)          two gradients per vector

Only the gradient θ ↦ ∇L(θ) is needed, so products go through any kernel that has a first derivative: fused
SDPA (flash, memory-efficient) attention, custom autograd Functions without a double backward, and a
sharded model whose gradient is `.backward()` into `.grad` (the functions below take the gradient as a
callable on per-parameter tensors and never look inside it).

Error of D(h) (Taylor with remainder, rounding ε = the dtype's machine epsilon; δ = h‖v‖ the perturbation):
    truncation  ‖D(h) − Hv‖ ≈ h² ‖∇³L[v, v, ·]‖ / 6       ∝ δ²
    rounding    ≈ ε · (size of the gradient's computation) / h        ∝ 1/δ
The step starts from the standard central-difference interval, the cube root of ε scaled by the variables'
magnitude (Nocedal & Wright, *Numerical Optimization*, 2nd ed. 2006, §8.1, eq. (8.7); Gill, Murray & Wright,
*Practical Optimization* 1981, §8.6):

    δ₀ = ∛ε · (1 + ‖θ‖),      h = δ / ‖v‖     (float32: ∛ε = 4.9e-3; float64: 6.1e-6)

and is then calibrated on the first batch, because the constant in front of it depends on the model (measured
best δ/δ₀ from 0.1 for a GPT-2 to 1 for an MLP). A Richardson pair gives the error estimate

    e(δ) = ‖D(δ) − D(2δ)‖ / ‖D(δ)‖

(truncation: D(2δ) − D(δ) = 3·(D(δ)'s error), rounding: about 1.1× it, so e bounds D(δ)'s relative error from
above). e is measured at δ₀/8 and δ₀ on the first vector, fitted by e(tδ₀)² = X t⁴ + Y t⁻² (truncation and
rounding), and the step moved to the model's minimum t = (Y / 2X)^(1/6), kept within [1/64, 4]. At that step
the Richardson pair of every trial vector gives the operator's `error_estimate`; above `TOLERANCE` the backend
is refused with one line (a saturated loss in float32 is the usual case: its tiny curvature drowns in the
gradients' rounding). Cost: 8 gradients for the calibration, 4 per trial vector, then 2 per vector per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from landscape.errors import LandscapeError
from landscape.hessian.operators.backends import Sizing
from landscape.hessian.operators.flat import Snapshot
from landscape.memory import tensor_bytes
from landscape.objective import Batch

Gradient = Callable[[list[Tensor]], list[Tensor]]
"""θ as per-parameter tensors → ∇L(θ) as per-parameter tensors of the same shapes (first order only)."""
Norm = Callable[[Sequence[Tensor]], float]
"""‖x‖ of a vector given as per-parameter tensors (a sharded vector's parts: completed across processes)."""

TOLERANCE = 1e-3
"""The largest Richardson error estimate (relative to the product's norm) the backend accepts."""
_T_RANGE = (1 / 64, 4.0)
_PROBE = 8.0


def _norm(parts: Sequence[Tensor]) -> float:
    """‖x‖ of a vector given as per-parameter tensors (accumulated in float64)."""
    return math.sqrt(sum(float(p.double().square().sum()) for p in parts))


def initial_step(theta_norm: float, dtype: torch.dtype) -> float:
    """δ₀ = ∛ε·(1 + ‖θ‖), the central-difference perturbation norm before calibration.

    Args:
        theta_norm: ‖θ‖ over the differentiated parameters.
        dtype: the precision gradients are computed in (ε is its machine epsilon).

    Returns:
        δ₀ (the step along a vector v is h = δ₀/‖v‖).
    """
    return torch.finfo(dtype).eps ** (1 / 3) * (1.0 + theta_norm)


def central_difference(gradient: Gradient, theta: list[Tensor], v: list[Tensor], delta: float,
                       norm: Norm = _norm) -> list[Tensor]:
    """D = (∇L(θ + h v) − ∇L(θ − h v)) / (2h) with h = δ/‖v‖: two gradients; the zero vector gives zeros.

    Args:
        gradient: θ ↦ ∇L(θ) per parameter (see `Gradient`).
        theta: θ per parameter.
        v: the vector per parameter.
        delta: δ = h‖v‖, the perturbation's norm.

    Returns:
        D per parameter (≈ H v).
    """
    size = norm(v)
    if size == 0:
        return [torch.zeros_like(t) for t in theta]
    h = delta / size
    plus = gradient([torch.add(t, d, alpha=h) for t, d in zip(theta, v)])
    minus = gradient([torch.add(t, d, alpha=-h) for t, d in zip(theta, v)])
    return [(a - b).div_(2 * h) for a, b in zip(plus, minus)]


def richardson_error(d: list[Tensor], d2: list[Tensor], norm: Norm = _norm) -> float:
    """e = ‖D(δ) − D(2δ)‖ / ‖D(δ)‖, an upper estimate of D(δ)'s relative error (0 when both are zero).

    Args:
        d: D(δ) per parameter.
        d2: D(2δ) per parameter.

    Returns:
        e (inf when D(δ) is zero and D(2δ) is not).
    """
    diff = norm([a - b for a, b in zip(d, d2)])
    scale = norm(d)
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def calibrate(gradient: Gradient, theta: list[Tensor], v: list[Tensor], dtype: torch.dtype,
              norm: Norm = _norm) -> float:
    """The perturbation norm δ* minimizing the fitted Richardson error along v (see the module docstring).

    Args:
        gradient: θ ↦ ∇L(θ) per parameter.
        theta: θ per parameter.
        v: a trial vector per parameter (nonzero).
        dtype: the precision of the gradients.

    Returns:
        δ* = t·δ₀ with t = (Y / 2X)^(1/6) in [1/64, 4] (8 gradients).
    """
    d0 = initial_step(norm(theta), dtype)
    lo, hi = d0 / _PROBE, d0

    def estimate(delta: float) -> float:
        return richardson_error(central_difference(gradient, theta, v, delta, norm),
                                central_difference(gradient, theta, v, 2 * delta, norm), norm)

    e_lo, e_hi = estimate(lo), estimate(hi)
    if not (math.isfinite(e_lo) and math.isfinite(e_hi)):
        return d0
    r2 = _PROBE ** 2
    trunc = max(0.0, (r2 * e_hi**2 - e_lo**2) / (r2 - _PROBE ** -4))   # X: truncation² at δ₀
    rounding = max(0.0, e_hi**2 - trunc)                                # Y: rounding² at δ₀
    if trunc == 0:
        t = _T_RANGE[1]
    elif rounding == 0:
        t = _T_RANGE[0]
    else:
        t = min(max((rounding / (2 * trunc)) ** (1 / 6), _T_RANGE[0]), _T_RANGE[1])
    return t * d0


class FiniteDifferenceHessian:
    """Central differences of two first-order gradients per vector, the step calibrated on the first product.

    The first `apply` calibrates δ on the first vector (`calibrate`), measures the Richardson error of every
    vector it was given, and raises a LandscapeError when the largest exceeds `TOLERANCE`; later calls reuse δ.
    Memory: one gradient pass (the forward's saved tensors) plus 3·P numbers (θ ± hv and the gradient) beside
    the k·P of the products; nothing is kept between calls but the batch.

    Args:
        snap: the objective at θ.
        sizing: memory facts (unused: vectors run one after another).
    """

    needs_trial = True
    """Even a plan without checks runs a trial product: it calibrates the step and estimates the error."""

    def __init__(self, snap: Snapshot, sizing: Sizing):
        self.snap, self.sizing = snap, sizing
        self.delta: float | None = None
        self.error_estimate: float | None = None

    def prepare(self, batch: Batch) -> Batch:
        """Nothing is shared between vectors but the batch itself.

        Args:
            batch: the prepared batch.

        Returns:
            The batch.
        """
        return batch

    def state_bytes(self, state: Batch, n: int) -> int:
        """Bytes the kept state holds (the batch's tensors).

        Args:
            state: the batch.
            n: its samples (unused).

        Returns:
            Bytes.
        """
        return tensor_bytes(state.tensors())

    def gradient(self, batch: Batch) -> Gradient:
        """θ ↦ ∇ℓ_b(θ) on `batch` (`Snapshot.gradient`: one first-order backward pass).

        Args:
            batch: the batch.

        Returns:
            The gradient function of the parameter list.
        """
        names = self.snap.layout.names
        return lambda theta: self.snap.gradient(dict(zip(names, theta)), batch)

    def apply(self, batch: Batch, tangents: list[Tensor]) -> list[Tensor]:
        """H_b V ≈ D(δ) for the tangents [k, *shape] per parameter (calibrating δ on the first call).

        Args:
            batch: the batch.
            tangents: one [k, *shape] tensor per parameter.

        Returns:
            The approximate H_b V per parameter.
        """
        theta = list(self.snap.params.values())
        gradient = self.gradient(batch)
        k = tangents[0].shape[0]
        vectors = [[t[i] for t in tangents] for i in range(k)]
        if self.delta is None:
            return self._calibrated(gradient, theta, vectors)
        out = [central_difference(gradient, theta, v, self.delta) for v in vectors]
        return [torch.stack(parts) for parts in zip(*out)]

    def _calibrated(self, gradient: Gradient, theta: list[Tensor], vectors: list[list[Tensor]]) -> list[Tensor]:
        """Calibrate δ on the first nonzero vector, estimate every vector's error, refuse above TOLERANCE."""
        live = [v for v in vectors if _norm(v) > 0]
        delta = calibrate(gradient, theta, live[0], self.snap.dtype) if live else initial_step(_norm(theta),
                                                                                              self.snap.dtype)
        out, worst = [], 0.0
        for v in vectors:
            d = central_difference(gradient, theta, v, delta)
            if _norm(v) > 0:
                worst = max(worst, richardson_error(d, central_difference(gradient, theta, v, 2 * delta)))
            out.append(d)
        if not worst <= TOLERANCE:
            dtype = str(self.snap.dtype).replace("torch.", "")
            raise LandscapeError(
                f"finite-difference products are too inaccurate here: their Richardson error estimate is "
                f"{worst:.1e} of their norm (tolerance {TOLERANCE:.0e}, {dtype} gradients, step δ = {delta:.2e}); "
                "use an exact backend ('double_backward', 'func'), dtype=torch.float64, or check for a saturated loss")
        self.delta, self.error_estimate = delta, worst
        return [torch.stack(parts) for parts in zip(*out)]

    def describe(self) -> dict:
        """The calibrated step and error estimate (for `CurvatureOperator.info()`)."""
        return {"step": self.delta, "error_estimate": self.error_estimate, "tolerance": TOLERANCE}


POWER_STEPS = 3
"""Power iterations that turn the random trial vector toward the top eigenvector before `scan_step`."""
_HALVINGS = 16
_SETTLED = 1e-2
"""A Richardson error below which the scan is in the Taylor regime (above it, e may rise before it falls)."""


def top_direction(gradient: Gradient, theta: list[Tensor], v: list[Tensor], dtype: torch.dtype,
                  norm: Norm = _norm, steps: int = POWER_STEPS) -> list[Tensor]:
    """A trial vector turned toward the top eigenvector: the sharp directions, where finite differences err
    most (`scan_step`).

    Args:
        gradient: θ ↦ ∇L(θ) per parameter.
        theta: θ per parameter.
        v: the start vector per parameter.
        dtype: the precision of the gradients.
        norm: ‖·‖ of per-parameter vectors (a sharded one completes its sums across ranks).
        steps: power iterations v ← D(v)/‖D(v)‖, 2 gradients each, at δ₀/64 (a direction, not a product,
            is wanted).

    Returns:
        The unit vector per parameter.
    """
    delta = initial_step(norm(theta), dtype) / 64
    for _ in range(steps):
        d = central_difference(gradient, theta, v, delta, norm)
        size = norm(d)
        if not size > 0:
            break
        v = [t / size for t in d]
    return v


def scan_step(gradient: Gradient, theta: list[Tensor], v: list[Tensor], dtype: torch.dtype,
              norm: Norm = _norm) -> tuple[float, float]:
    """(δ, e(δ)): the perturbation norm with the smallest Richardson error along v among δ₀·2^−i, i = 1..16,
    scanned down until the error, once below 1e-2 (the Taylor regime: falling as δ², or as δ where ReLU kinks
    are crossed), has risen 4-fold again (rounding): 2 gradients per halving, each D in two Richardson pairs.

    Along the top eigenvectors of a transformer's Hessian the truncation error at δ₀ is O(1) and still
    ∝ δ² at δ₀/128 (measured: 1.3% error in λmax at the step `calibrate` picks from a random vector, whose own
    error there is 5e-5), so the step is calibrated on `top_direction` by this scan rather than by a fit.

    Args:
        gradient: θ ↦ ∇L(θ) per parameter.
        theta: θ per parameter.
        v: the vector to calibrate on (`top_direction`'s).
        dtype: the precision of the gradients (ε of δ₀).
        norm: ‖·‖ of per-parameter vectors.

    Returns:
        δ and its error estimate e(δ) = ‖D(δ) − D(2δ)‖ / ‖D(δ)‖.
    """
    delta = initial_step(norm(theta), dtype)
    previous = central_difference(gradient, theta, v, delta, norm)
    best = (delta, math.inf)
    for _ in range(_HALVINGS):
        delta /= 2
        d = central_difference(gradient, theta, v, delta, norm)
        e = richardson_error(d, previous, norm)
        if e < best[1]:
            best = (delta, e)
        elif best[1] < _SETTLED and e > 4 * best[1]:  # past the minimum: rounding grows as 1/δ from here
            break
        previous = d
    return best
