"""Norm-preserving projection of conv operators (docs/methods.md §C.3, Zaeemzadeh et al. 2020).

Singular values of a stride-1 convolution with circular padding on an H×W grid (Sedghi,
Gupta & Long 2019): with A(u,v) = FFT₂ of the kernel zero-padded to H×W, an out×in complex
matrix per frequency, the operator's singular values are those of all A(u,v).

Procrustes step: A(u,v) ← c·U Vᴴ (the polar factor, from A = U S Vᴴ by `torch.linalg.svd`;
every singular value becomes c, default c = √(n_out/n_in)), inverse FFT, keep the real
part, crop to the original k×k support. Exact for 1×1 kernels; for larger kernels the crop
makes one step approximate, and repeating it converges. `reference_conj=True` reproduces the
reference code, which rebuilds A' as R' − iI', i.e. conj of the polar factor: the result is
the crop of a circularly flipped copy of the exact projection (equal for 1×1). The reference's
10-step Newton–Schulz inverse square root is replaced by the exact SVD in both variants.

1-D convolutions (weights [out, in, k], e.g. ProcResNet-1D) work the same way with a 1-D FFT
over a length-L grid: A(u) = FFT of the zero-padded kernel, one out×in matrix per frequency.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError


def _grid(weight: Tensor, grid: int | tuple[int, ...]) -> tuple[int, ...]:
    if weight.ndim not in (3, 4):
        raise LandscapeError(
            f"expected a conv weight [out, in, k] or [out, in, kh, kw], got shape {tuple(weight.shape)}"
        )
    spatial = weight.ndim - 2
    size = (grid,) * spatial if isinstance(grid, int) else tuple(grid)
    kernel = tuple(weight.shape[2:])
    if len(size) != spatial or any(g < k for g, k in zip(size, kernel)):
        raise LandscapeError(f"grid {'x'.join(map(str, size))} is smaller than the kernel {'x'.join(map(str, kernel))}")
    return size


def kernel_spectrum(weight: Tensor, grid: int | tuple[int, ...]) -> Tensor:
    """A = FFT of the zero-padded kernel: [H, W, out, in] (2-D) or [L, out, in] (1-D) complex, float64.

    Args:
        weight: [out, in, *kernel] conv weight.
        grid: the (spatial) grid size of the circular convolution.

    Returns:
        The per-frequency matrices.
    """
    size = _grid(weight, grid)
    dims = tuple(range(2, weight.ndim))
    spec = torch.fft.fftn(weight.detach().to(torch.float64), s=size, dim=dims)
    return spec.movedim((0, 1), (-2, -1))


def conv_singular_values(weight: Tensor, grid: int | tuple[int, ...]) -> Tensor:
    """Singular values of the circular conv on the grid: [H, W, min(out, in)] (or [L, ...]), descending.

    Args:
        weight: [out, in, *kernel] conv weight.
        grid: the grid size.

    Returns:
        The singular values.
    """
    return torch.linalg.svdvals(kernel_spectrum(weight, grid))


def procrustes_project(
    weight: Tensor, grid: int | tuple[int, ...], target: float | None = None, reference_conj: bool = False
) -> Tensor:
    """The kernel whose per-frequency matrices are target·(polar factor of A), cropped to the kernel support.

    Args:
        weight: [out, in, *kernel] conv weight.
        grid: the grid size.
        target: c, the singular value every frequency gets (None: √(out/in)).
        reference_conj: conjugate the polar factor before the inverse FFT, as the reference code does.

    Returns:
        The projected weight, the shape of `weight`.
    """
    out_c, in_c, *kernel = weight.shape
    c = (out_c / in_c) ** 0.5 if target is None else float(target)
    u, _, vh = torch.linalg.svd(kernel_spectrum(weight, grid), full_matrices=False)
    polar = c * (u @ vh)
    if reference_conj:
        polar = polar.conj()
    spatial = len(kernel)
    full = torch.fft.ifftn(polar.movedim((-2, -1), (0, 1)), dim=tuple(range(2, 2 + spatial))).real
    crop = full[(..., *[slice(0, k) for k in kernel])]
    return crop.to(dtype=weight.dtype, device=weight.device).contiguous()


class ProcrustesRegularizer:
    """Call `.step()` after every optimizer step: with probability p (one Bernoulli draw per step)
    every target conv is replaced by its Procrustes projection (docs/methods.md §C.3).

    Targets default to `model.procrustes_targets()` ((conv, grid) pairs; ProcResNet: stem at 32,
    transitions at 16 and 8); `target` overrides c = √(n_out/n_in).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        p: float = 0.5,
        generator: torch.Generator | None = None,
        *,
        targets: list[tuple[nn.Module, int]] | None = None,
        target: float | None = None,
        reference_conj: bool = False,
    ):
        if not 0.0 <= p <= 1.0:
            raise LandscapeError(f"ProcrustesRegularizer: p must lie in [0, 1], got {p}")
        if targets is None:
            if model is None or not hasattr(model, "procrustes_targets"):
                raise LandscapeError("ProcrustesRegularizer: give targets= (model lacks procrustes_targets)")
            targets = model.procrustes_targets()
        self.targets, self.p, self.generator = list(targets), float(p), generator
        self.target, self.reference_conj = target, reference_conj

    @torch.no_grad()
    def project(self) -> None:
        """Project every target conv now."""
        for conv, grid in self.targets:
            conv.weight.copy_(procrustes_project(conv.weight, grid, self.target, self.reference_conj))

    def step(self) -> bool:
        """One Bernoulli(p) draw; project when it succeeds. Returns whether it did."""
        applied = bool(torch.rand((), generator=self.generator) < self.p)
        if applied:
            self.project()
        return applied
