"""landscape: loss-landscape and optimization diagnostics for PyTorch.

Public API (imported lazily so `import landscape` stays fast):
  fit (= landscape.train.train), TrainConfig            landscape.train
  load_checkpoint, save_checkpoint                      landscape.checkpoint
  load_data                                             landscape.data
  build                                                 landscape.models
  HessianOperator, GGNOperator, slq_density,
  top_eigenpairs, hutchinson_trace, hutchpp_trace,
  exact_hessian                                         landscape.hessian
  probe, run_probes                                     landscape.probes
  random_directions, evaluate_grid, linear_path, Surface landscape.surface
  LandscapeError                                        landscape.errors

`landscape.train` is the training package (its `train` function is `landscape.fit`), so that the name
means the same thing whether or not the package was imported.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "fit": ("landscape.train", "train"),
    "TrainConfig": ("landscape.train", "TrainConfig"),
    "load_checkpoint": ("landscape.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("landscape.checkpoint", "save_checkpoint"),
    "load_data": ("landscape.data", "load_data"),
    "build": ("landscape.models", "build"),
    "HessianOperator": ("landscape.hessian", "HessianOperator"),
    "GGNOperator": ("landscape.hessian", "GGNOperator"),
    "slq_density": ("landscape.hessian", "slq_density"),
    "top_eigenpairs": ("landscape.hessian", "top_eigenpairs"),
    "hutchinson_trace": ("landscape.hessian", "hutchinson_trace"),
    "hutchpp_trace": ("landscape.hessian", "hutchpp_trace"),
    "exact_hessian": ("landscape.hessian", "exact_hessian"),
    "probe": ("landscape.probes", "probe"),
    "run_probes": ("landscape.probes", "run_probes"),
    "random_directions": ("landscape.surface", "random_directions"),
    "evaluate_grid": ("landscape.surface", "evaluate_grid"),
    "linear_path": ("landscape.surface", "linear_path"),
    "Surface": ("landscape.surface", "Surface"),
    "LandscapeError": ("landscape.errors", "LandscapeError"),
}
# subpackages reachable as attributes before they are imported (`landscape.train.TrainConfig`)
_SUBPACKAGES = ("train", "probes", "hessian", "models", "experiment", "surface")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBPACKAGES:
        try:
            return importlib.import_module(f"landscape.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"landscape.{name}":
                raise
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
