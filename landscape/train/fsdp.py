"""Training with the model sharded by FSDP2 (`--fsdp` under torchrun): the states a checkpoint holds.

`landscape.distributed.shard_model` shards the model after it is built and its resumed state restored (as
one process would restore it), and the optimizer is rebuilt over the sharded parameters with that state
moved onto them. FSDP averages the W ranks' gradients as DDP does, so the loop's weighting of unequal
slices is unchanged. Checkpoints hold the full, unsharded model and optimizer states in the format of a
single-process run (optimizer state keyed by parameter index), gathered by every rank and written by rank
0: a run sharded over W ranks resumes in one process, or over another W, and the hessian CLI reads it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from landscape import distributed
from landscape.errors import LandscapeError


def check_options(cfg: Any) -> None:
    """Refuse what --fsdp cannot do yet (each would run a collective forward on rank 0 alone, or write
    sharded parameters in place).

    Args:
        cfg: the TrainConfig.

    Raises:
        LandscapeError: one line naming the option, or saying torchrun is needed.
    """
    if not distributed.launched():
        raise LandscapeError("--fsdp needs torchrun (e.g. torchrun --nproc_per_node 2 -m landscape.train ...)")
    for name, on in (("--probes", bool(cfg.probes)), ("--procrustes-p", cfg.procrustes_p > 0),
                     ("--bias-reg", cfg.bias_reg > 0), ("--keep-epochs", cfg.keep_epochs)):
        if on:
            raise LandscapeError(f"{name} is not available with --fsdp; train without it, or measure the "
                                 "checkpoints afterwards (python -m landscape.hessian CKPT --fsdp)")


def _index_keys(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """{parameter name: its index in the optimizer's state_dict()} (indices run over the groups in order)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {n: i for i, n in enumerate(order)}


def shard(model: nn.Module, optimizer: torch.optim.Optimizer, rebuild) -> torch.optim.Optimizer:
    """Shard `model` in place and move the optimizer onto the shards.

    Args:
        model: the built (and possibly restored) model.
        optimizer: its optimizer over the unsharded parameters, with any restored state.
        rebuild: `rebuild(model)` makes the same optimizer over the sharded parameters.

    Returns:
        The new optimizer, carrying `optimizer`'s state (momenta, Adam moments, step counts).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    full = optimizer.state_dict()
    keys = _index_keys(model, optimizer)
    distributed.shard_model(model)
    sharded = rebuild(model)
    if full["state"]:
        by_name = {i: n for n, i in keys.items()}
        state = {"state": {by_name[i]: s for i, s in full["state"].items()},
                 "param_groups": [{**g, "params": [by_name[i] for i in g["params"]]} for g in full["param_groups"]]}
        set_optimizer_state_dict(model, sharded, state, options=StateDictOptions(full_state_dict=True))
    return sharded


class Gathered:
    """A sharded model's or optimizer's full state, gathered once, read where a checkpoint calls state_dict().

    Args:
        state: the full state.
        build_spec: the model's (for the checkpoint's meta).
    """

    def __init__(self, state: dict, build_spec: dict | None = None):
        self.state, self.build_spec = state, build_spec

    def state_dict(self) -> dict:
        """The full state."""
        return self.state


def gather(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Gathered, Gathered] | None:
    """The full states of a sharded run, for its checkpoint (a collective: every rank calls it).

    Args:
        model: the sharded model.
        optimizer: its optimizer.

    Returns:
        On rank 0, (model, optimizer) stand-ins whose state_dict() are the full states on the CPU in a single
        process's format (optimizer state keyed by parameter index); None on the other ranks.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    if not distributed.is_main():
        return None
    keys = _index_keys(model, optimizer)
    optim = {"state": {keys[n]: s for n, s in optim_state["state"].items()},
             "param_groups": [{**g, "params": [keys[n] for n in g["params"]]} for g in optim_state["param_groups"]]}
    return Gathered(model_state, getattr(model, "build_spec", None)), Gathered(optim)
