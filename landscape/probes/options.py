"""`ProbeOptions`: how a probe computes its metrics, one frozen value instead of a row of keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass

from landscape.errors import LandscapeError
from landscape.probes.stream import REDUCTIONS


@dataclass(frozen=True)
class ProbeOptions:
    """How a probe computes its metrics (which blocks it hooks is `find_blocks`' choice).

    Args:
        reduce: stream statistics per vector over the feature dims ("feature") or over everything but the
            batch dim ("global"); docs/methods.md §B.3.
        eps: B.3's ε, the clamp of the squared norms.
        dead_tol: a unit is dead when max_x |z_i(x)| ≤ dead_tol (§A.2).
        threshold: a unit overlaps when its largest cosine with another unit exceeds this (§A.2).
        small_sv: singular values s_k / s_1 below this count as linearly dependent directions (§A.2).
        jacobian_steps: Lanczos steps per extreme singular value of a block Jacobian (§C.1).
        seed: seed of the Jacobian's start vectors.
    """

    reduce: str = "feature"
    eps: float = 1e-6
    dead_tol: float = 0.0
    threshold: float = 0.99
    small_sv: float = 1e-3
    jacobian_steps: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.reduce not in REDUCTIONS:
            raise LandscapeError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
