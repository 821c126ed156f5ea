"""This process's shards of an FSDP2 model's parameters as one flat vector, and their place in the full vector.

`torch.distributed.fsdp.fully_shard` (FSDP2) splits every parameter of the modules it wraps along dim 0 over
the W processes of a 1-D device mesh, as torch.chunk does: with c = ⌈n₀/W⌉, rank r holds rows
[r·c, min(n₀, (r+1)·c)) (none past the end) as the local tensor of a DTensor. The full flat vector is the
unsharded operator's (the chosen parameters in `named_parameters()` order, each row-major), so rank r's part
of it is one contiguous slice per parameter, and its local flat vector is those slices concatenated:

    local = [θ₁[rows of r] | θ₂[rows of r] | ...]        local_dim = Σ_p (rows of r in p) · (numel p / n₀ p)

`ShardLayout` is the solvers' `Sharding` (landscape.hessian.solvers.protocol): `local(full rows)` cuts full
vectors to this rank's part, `all_reduce` completes float64 partial sums, `gather` rebuilds full vectors
(one all_gather; for tests and output, never inside a solver).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from landscape import distributed as _dist
from landscape.errors import LandscapeError


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The modules `fully_shard` wrapped.

    Args:
        model: any module.

    Returns:
        Its FSDP2 modules (empty for a model without FSDP2, or a torch without it).
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def reshard(model: nn.Module) -> None:
    """Every FSDP2 module of `model` back to its sharded parameters, in place (a forward without a backward
    leaves the root's parameters gathered, and `named_parameters()` would then show the full tensors).

    Args:
        model: any module (a no-op without FSDP2 modules).
    """
    for m in fsdp_modules(model):
        m.reshard()


class ShardLayout:
    """This rank's rows of the chosen parameters of an FSDP2 model (a `protocol.Sharding`).

    Args:
        model: a model whose chosen parameters are all sharded by `fully_shard` over every process.
        names: the chosen parameters, in flat order.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        from torch.distributed.tensor import DTensor, Shard

        if not _dist.active():
            raise LandscapeError("an FSDP model needs torch.distributed (start under torchrun)")
        reshard(model)
        world, rank = _dist.world_size(), _dist.rank()
        params = dict(model.named_parameters())
        self.names = list(names)
        self.full_shapes: list[torch.Size] = []
        for n in self.names:
            p = params[n]
            if not isinstance(p, DTensor) or tuple(p.placements) != (Shard(0),) or p.device_mesh.size() != world:
                raise LandscapeError(f"parameter {n} is not sharded by fully_shard over all {world} processes "
                                     "(wrap every module that holds a measured parameter, or the root)")
            self.full_shapes.append(p.shape)
        self.world, self.rank = world, rank
        self.sizes = [math.prod(s) for s in self.full_shapes]
        self.dim = sum(self.sizes)
        self.slices = self.slices_of(rank)
        for n, (_, length), full in zip(self.names, self.slices, self.full_shapes):
            local = params[n].to_local()
            if local.numel() != length:
                raise LandscapeError(f"parameter {n}: rank {rank} holds {local.numel()} entries, expected {length} "
                                     f"(dim-0 chunks of {tuple(full)} over {world} processes)")
        self.local_shapes = [torch.Size([length // max(1, self._row(full)), *full[1:]])
                             for (_, length), full in zip(self.slices, self.full_shapes)]
        self.local_dim = sum(length for _, length in self.slices)

    @staticmethod
    def _row(shape: torch.Size) -> int:
        return math.prod(shape[1:])

    def slices_of(self, rank: int) -> list[tuple[int, int]]:
        """Where `rank`'s entries lie in the full flat vector.

        Args:
            rank: a rank of the process group.

        Returns:
            (start, length) per parameter: its rows held by `rank`, one contiguous slice each.
        """
        out, offset = [], 0
        for shape, size in zip(self.full_shapes, self.sizes):
            rows = shape[0] if len(shape) else 1
            chunk = -(-rows // self.world)
            lo, hi = min(rows, rank * chunk), min(rows, (rank + 1) * chunk)
            row = self._row(shape) if len(shape) else 1
            out.append((offset + lo * row, (hi - lo) * row))
            offset += size
        return out

    def local_tensors(self, model: nn.Module) -> list[Tensor]:
        """This rank's shards of the chosen parameters, as the model holds them now.

        Args:
            model: the sharded model (resharded first).

        Returns:
            The local tensors (views: writing to them writes the shards).
        """
        reshard(model)
        return [model.get_parameter(n).to_local() for n in self.names]

    def local(self, rows: Tensor) -> Tensor:
        """This rank's entries of full rows.

        Args:
            rows: [k, dim].

        Returns:
            [k, local_dim] (a copy).
        """
        return torch.cat([rows[:, start:start + length] for start, length in self.slices], 1)

    def all_reduce(self, partial: Tensor) -> Tensor:
        """Σ over the processes of a tensor of partial sums.

        Args:
            partial: this rank's sums (float64).

        Returns:
            The same tensor, summed over the ranks in place.
        """
        return _dist.all_reduce_sum(partial)

    def norm(self, parts: Sequence[Tensor]) -> float:
        """‖x‖ of a sharded vector (a collective).

        Args:
            parts: this rank's per-parameter parts of x.

        Returns:
            The norm over all entries (float64 sums completed across the ranks).
        """
        local = sum((p.double().square().sum() for p in parts), torch.zeros((), dtype=torch.float64))
        return float(self.all_reduce(local.reshape(1).to(_dist.comm_device())).sqrt())

    def split(self, flat: Tensor) -> list[Tensor]:
        """Local rows as per-parameter tensors.

        Args:
            flat: [k, local_dim].

        Returns:
            Per parameter [k, *local shape] (views).
        """
        k = flat.shape[0]
        parts = flat.split([length for _, length in self.slices], dim=1)
        return [t.reshape(k, *s) for t, s in zip(parts, self.local_shapes)]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """Per-parameter tensors as local rows.

        Args:
            parts: per parameter [k, *local shape].

        Returns:
            [k, local_dim].
        """
        k = parts[0].shape[0]
        return torch.cat([p.reshape(k, -1) for p in parts], dim=1)

    def gather(self, rows: Tensor) -> Tensor:
        """The full rows on every rank (a collective: one all_gather; for tests and output).

        Args:
            rows: this rank's entries [k, local_dim].

        Returns:
            [k, dim], the same on every rank.
        """
        import torch.distributed as dist

        k, dev = rows.shape[0], _dist.comm_device()
        width = max(sum(length for _, length in self.slices_of(r)) for r in range(self.world))
        mine = torch.zeros(k, width, dtype=rows.dtype, device=dev)
        mine[:, : rows.shape[1]] = rows.to(dev)
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine)
        full = torch.empty(k, self.dim, dtype=rows.dtype, device=rows.device)
        for r, part in enumerate(parts):
            at = 0
            for start, length in self.slices_of(r):
                full[:, start:start + length] = part[:, at:at + length].to(rows.device)
                at += length
        return full
