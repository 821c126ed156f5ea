"""Training landscape models: resumable bit-for-bit on CPU, signal-safe, DDP under torchrun, with callbacks.

    from landscape.train import TrainConfig, train
    result = train(TrainConfig(model="fc", epochs=5, out="runs/x"), step_callbacks=[...], epoch_callbacks=[...])

or `python -m landscape.train --help` (also reachable as `landscape.fit`). The package, one job per module:
  config     TrainConfig: every option, its validation, TOML loading, model sizes from the data
  optim      the optimizer and the learning-rate schedule (a pure function of the step)
  setup      building a run before the first step: data, model, checks of bad input, config.json's record
  state      checkpoint and resume: what checkpoint.pt holds, the checks before a resume
  callbacks  probes built from their names (--probes), probes.jsonl and TensorBoard sinks
  loop       train() and evaluate()
  cli        the command line; __main__ runs it
"""

from landscape.train.callbacks import PROBES, ProbeContext, build_probe_callbacks
from landscape.train.cli import build_parser, config_from_args, main
from landscape.train.config import OPTIMIZERS, SCHEDULES, TrainConfig, load_toml, resolved_model_config
from landscape.train.loop import NonFiniteLoss, evaluate, train
from landscape.train.optim import lr_factor, make_optimizer
from landscape.train.setup import git_version

__all__ = [
    "OPTIMIZERS", "PROBES", "SCHEDULES", "NonFiniteLoss", "ProbeContext", "TrainConfig", "build_parser",
    "build_probe_callbacks", "config_from_args", "evaluate", "git_version", "load_toml", "lr_factor", "main",
    "make_optimizer", "resolved_model_config", "train",
]
