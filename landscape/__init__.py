"""landscape: loss-landscape and optimization diagnostics for PyTorch.

Public API (imported lazily so `import landscape` stays fast):
  load_checkpoint, save_checkpoint                      landscape.checkpoint
  load_data                                             landscape.data
  build                                                 landscape.models
  TrainConfig (and landscape.train.train)               landscape.train
  HessianOperator, GGNOperator, slq_density,
  top_eigenpairs, hutchinson_trace, hutchpp_trace,
  exact_hessian                                         landscape.hessian
  probe, run_probes                                     landscape.probes
  LandscapeError                                        landscape.errors
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_checkpoint": "landscape.checkpoint",
    "save_checkpoint": "landscape.checkpoint",
    "load_data": "landscape.data",
    "build": "landscape.models",
    "TrainConfig": "landscape.train",
    "HessianOperator": "landscape.hessian",
    "GGNOperator": "landscape.hessian",
    "slq_density": "landscape.hessian",
    "top_eigenpairs": "landscape.hessian",
    "hutchinson_trace": "landscape.hessian",
    "hutchpp_trace": "landscape.hessian",
    "exact_hessian": "landscape.hessian",
    "probe": "landscape.probes",
    "run_probes": "landscape.probes",
    "LandscapeError": "landscape.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
