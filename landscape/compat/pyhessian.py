"""PyHessian's `hessian` class (Yao et al. 2020, PyHessian 0.1) on the landscape engine.

Change one import and keep the rest of the script:

    from landscape.compat.pyhessian import hessian      # was: from pyhessian import hessian
    hessian_comp = hessian(model, criterion, data=(inputs, targets), cuda=True)
    top_eigenvalues, top_eigenvectors = hessian_comp.eigenvalues(top_n=2)
    trace = hessian_comp.trace()                          # list of Hutchinson samples vᵀHv
    density_eigen, density_weight = hessian_comp.density(iter=100, n_v=1)

Same arguments and return formats as PyHessian 0.1: `eigenvalues` → (list of floats, list of
eigenvectors, each a list of per-parameter tensors); `trace` → list of per-vector estimates;
`density` → (n_v lists of `iter` Ritz values, n_v lists of `iter` weights). Differences, all on
purpose:
- Eigenpairs come from restarted block Krylov iteration to a residual tolerance instead of power
  iteration with deflation, so they are accurate (largest magnitude first, as power iteration finds
  them); `tol` is accepted and ignored, `maxIter` caps the data passes per requested eigenvalue, and a
  warning says so when that cap stops the solver before every residual is small.
- Lanczos runs all `n_v` vectors in one batch with full reorthogonalization when their basis fits the
  memory budget (selective orthogonalization otherwise, docs/methods.md §E.3) and a symmetric
  tridiagonal solver (PyHessian calls `torch.eig`, removed in torch 1.9); Ritz values are ascending.
  As in PyHessian, the vectors are Rademacher draws from torch's global RNG, and `iter` is clamped to
  the number of parameters (a Krylov space cannot be larger), so a small model gets its exact spectrum.
- `trace` stops by PyHessian's rule (relative change of the running mean below `tol`) but with
  |mean| in the denominator, so a negative trace does not stop it at the second sample.
- `cuda` does not move anything: the model's device is used (a warning says so when `cuda` disagrees
  with it). The model is evaluated in eval mode, as PyHessian does, but its train/eval flags are
  restored afterwards and no `.grad` is left on it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.hessian import HessianOperator, lanczos, top_eigenpairs
from landscape.hessian.solvers.linalg import rademacher
from landscape.modes import preserved_modes


class hessian:  # noqa: N801 - PyHessian's name
    """Hessian information of `criterion(model(inputs), targets)` over one batch (`data`) or a loader."""

    def __init__(self, model: nn.Module, criterion: Any, data: Any = None, dataloader: Any = None, cuda: bool = True):
        if (data is None) == (dataloader is None):
            raise LandscapeError("hessian: pass exactly one of data=(inputs, targets) or dataloader=")
        self.model, self.criterion = model, criterion
        self.full_dataset = dataloader is not None
        self.data = dataloader if self.full_dataset else data
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise LandscapeError("hessian: the model has no parameters that require grad")
        self.device = self.params[0].device
        if cuda != (self.device.type == "cuda"):
            warnings.warn(
                f"hessian: cuda={cuda} but the model is on {self.device}; computing on {self.device}",
                stacklevel=2,
            )
        with preserved_modes(model, train=False):
            self.op = HessianOperator(model, criterion, self.data, params=self.params)

    def _to_params(self, v: Tensor) -> list[Tensor]:
        return [t.to(p.dtype) for t, p in zip(self.op.unflatten(v).values(), self.params)]

    def dataloader_hv_product(self, v: list[Tensor]) -> tuple[float, list[Tensor]]:
        """(vᵀHv, Hv) for v given per parameter, as PyHessian's method of that name.

        Args:
            v: one tensor per parameter.

        Returns:
            (vᵀHv, Hv per parameter).
        """
        flat = torch.cat([t.reshape(-1) for t in v]).to(device=self.device, dtype=self.op.dtype)
        hv = self.op.matvec(flat)
        return float(flat @ hv), self._to_params(hv)

    def eigenvalues(self, maxIter: int = 100, tol: float = 1e-3, top_n: int = 1) -> tuple[list, list]:  # noqa: N803
        """The top_n largest-magnitude eigenvalues and their eigenvectors (lists of per-parameter tensors).

        Args:
            maxIter: data passes per eigenvalue (the block Krylov solver gets maxIter · top_n products).
            tol: PyHessian's relative tolerance (kept for its signature; the solver's default tolerance applies).
            top_n: how many eigenpairs.

        Returns:
            (eigenvalues, eigenvectors as lists of per-parameter tensors).
        """
        if top_n < 1:
            raise LandscapeError(f"eigenvalues: top_n must be at least 1, got {top_n}")
        pairs = top_eigenpairs(self.op, k=top_n, which="LM", max_matmats=max(1, maxIter) * top_n)
        if not pairs.converged:
            worst = float(np.max(np.asarray(pairs.residuals) / np.maximum(np.abs(pairs.eigenvalues), 1e-30)))
            warnings.warn(
                f"eigenvalues: not converged within maxIter={maxIter} data passes per eigenvalue (largest "
                f"relative residual {worst:.1e}); the values are Ritz estimates: raise maxIter",
                stacklevel=2,
            )
        vectors = [self._to_params(pairs.eigenvectors[:, i]) for i in range(top_n)]
        return [float(e) for e in pairs.eigenvalues], vectors

    def trace(self, maxIter: int = 100, tol: float = 1e-3) -> list[float]:  # noqa: N803
        """Hutchinson samples vᵀHv (Rademacher v) until the running mean changes by less than tol
        (relative) or maxIter samples; 10 vectors share each data pass.

        Args:
            maxIter: at most this many samples.
            tol: stop when |mean_new − mean_old| ≤ tol·|mean_old|.

        Returns:
            The samples vᵀHv; their mean estimates tr H.
        """
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        samples: list[float] = []
        mean = 0.0
        while len(samples) < maxIter:
            k = min(10, maxIter - len(samples))
            Z = rademacher(k, self.op.dim, gen).T.to(device=self.device, dtype=self.op.dtype)
            for s in torch.sum(Z * self.op.matmat(Z), dim=0, dtype=torch.float64).tolist():
                samples.append(s)
                new = float(np.mean(samples))
                if abs(new - mean) / (abs(mean) + 1e-6) < tol:
                    return samples
                mean = new
        return samples

    def density(self, iter: int = 100, n_v: int = 1) -> tuple[list, list]:  # noqa: A002
        """SLQ: per vector, the min(iter, dim) Ritz values and their weights (squared first eigenvector
        components); the n_v Rademacher vectors [dim, n_v] come from torch's global RNG.

        Args:
            iter: Lanczos steps per vector.
            n_v: random vectors.

        Returns:
            (eigen_list, weight_list): per vector the Ritz values and weights.
        """
        if iter < 1 or n_v < 1:
            raise LandscapeError(f"density: iter and n_v must be at least 1, got iter={iter}, n_v={n_v}")
        start = torch.randint(0, 2, (self.op.dim, n_v), dtype=torch.float64).mul_(2).sub_(1)
        seed = int(torch.randint(0, 2**62, (1,)).item())  # fresh vectors after a breakdown
        nodes, weights = lanczos(self.op, iters=min(iter, self.op.dim), start=start, seed=seed).ritz()
        return nodes.tolist(), weights.tolist()
