"""Curvature of any nn.Module + loss + data: Hessian / GGN operators applied k vectors per data pass,
batched Lanczos, SLQ spectral density, top eigenpairs, stochastic traces, exact small-model matrices.

    op = HessianOperator(model, loss_fn, data)            # data: (X, y), [(X, y), ...] or a DataLoader
    sd = slq_density(op, iters=80, vectors=8, top_k=5)   # SpectralDensity: .density(), .summary(), .top
    top = top_eigenpairs(op, k=5)                         # Eigenpairs (.residuals, .converged)
    tr = hutchpp_trace(op, products=99)                   # TraceEstimate
    mon = CurvatureMonitor(loss_fn, measurement_set(data, 1000), optimizer=opt, every=50)   # a step callback (§G)
    spec = block_spectra(op)                              # per-block spectra (attention, MLP, norms...), §E.7
    het = heterogeneity(spec.spectra)                     # pairwise JS distances between block densities
    op = FSDPHessianOperator(fully_shard_model, loss_fn, my_batches)   # under torchrun, sharded vectors (§E.8)
"""

from landscape.hessian.blocks import (
    BlockSpectra,
    Heterogeneity,
    ParamBlock,
    RestrictedOperator,
    block_spectra,
    heterogeneity,
    js_distance,
    param_blocks,
)
from landscape.hessian.monitor import CurvatureMonitor, MonitorOptions
from landscape.hessian.operators.exact import exact_ggn, exact_hessian
from landscape.hessian.operators.fsdp import FSDPHessianOperator
from landscape.hessian.operators.ggn import GGNOperator
from landscape.hessian.operators.operator import CurvatureOperator, HessianOperator
from landscape.hessian.solvers.eigen import Eigenpairs, top_eigenpairs
from landscape.hessian.solvers.lanczos import Checkpoint, lanczos
from landscape.hessian.solvers.protocol import LinearOperator, as_operator
from landscape.hessian.solvers.slq import TopK, slq_density
from landscape.hessian.solvers.spectrum import SpectralDensity
from landscape.hessian.solvers.trace import TraceEstimate, hutchinson_trace, hutchpp_trace
from landscape.hessian.solvers.tridiagonal import LanczosResult, tridiag_to_ritz

__all__ = [
    "BlockSpectra",
    "Heterogeneity",
    "ParamBlock",
    "RestrictedOperator",
    "block_spectra",
    "heterogeneity",
    "js_distance",
    "param_blocks",
    "Checkpoint",
    "CurvatureMonitor",
    "CurvatureOperator",
    "Eigenpairs",
    "FSDPHessianOperator",
    "GGNOperator",
    "HessianOperator",
    "LanczosResult",
    "LinearOperator",
    "MonitorOptions",
    "SpectralDensity",
    "TopK",
    "TraceEstimate",
    "as_operator",
    "exact_ggn",
    "exact_hessian",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "slq_density",
    "top_eigenpairs",
    "tridiag_to_ritz",
]
