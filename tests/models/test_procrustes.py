"""Procrustes projection of conv operators (docs/methods.md §C.3) against dense operators and a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.models import build
from landscape.models.procrustes import ProcrustesRegularizer, conv_singular_values, procrustes_project


def _weight(out_c, in_c, k, seed=0):
    return torch.randn(out_c, in_c, k, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _numpy_full_projection(w: np.ndarray, grid: int, c: float) -> np.ndarray:
    """Per-frequency polar factor on the full grid, before the crop (independent numpy reference)."""
    a = np.fft.fft2(w, s=(grid, grid))  # [out, in, H, W]
    full = np.zeros_like(a)
    for u in range(grid):
        for v in range(grid):
            U, _, Vh = np.linalg.svd(a[:, :, u, v], full_matrices=False)
            full[:, :, u, v] = c * U @ Vh
    return np.fft.ifft2(full).real


def test_singular_values_equal_those_of_the_dense_circular_operator():
    w = _weight(2, 3, 3)
    n = 5
    basis = torch.eye(3 * n * n, dtype=torch.float64).reshape(-1, 3, n, n)
    cols = F.conv2d(F.pad(basis, (1, 1, 1, 1), mode="circular"), w)  # circular cross-correlation
    dense = cols.reshape(3 * n * n, -1).T
    ref = torch.linalg.svdvals(dense)[: 2 * n * n]
    got = conv_singular_values(w, n)
    assert got.shape == (n, n, 2)
    torch.testing.assert_close(got.flatten().sort(descending=True).values, ref)


def test_one_projection_makes_a_1x1_transition_exactly_norm_preserving():
    w = _weight(8, 4, 1, seed=1)
    before = conv_singular_values(w, 4)
    assert before.max() - before.min() > 0.5
    for reference in (False, True):
        s = conv_singular_values(procrustes_project(w, 4, reference_conj=reference), 4)
        assert (s - 2**0.5).abs().max() < 1e-4
    torch.testing.assert_close(procrustes_project(w, 4, reference_conj=True), procrustes_project(w, 4))
    s = conv_singular_values(procrustes_project(w.float(), 4, target=0.3), 4)
    assert (s - 0.3).abs().max() < 1e-4


def test_exact_and_reference_match_the_numpy_reference_for_3x3():
    w = _weight(6, 3, 3, seed=2)
    c = 2**0.5
    full = _numpy_full_projection(w.numpy(), 8, c)
    exact = procrustes_project(w, 8)
    torch.testing.assert_close(exact, torch.from_numpy(full[..., :3, :3]).contiguous())
    flipped = np.roll(np.flip(full, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1))  # p[(-i) mod H, (-j) mod W]
    reference = procrustes_project(w, 8, reference_conj=True)
    torch.testing.assert_close(reference, torch.from_numpy(flipped[..., :3, :3].copy()))
    assert (reference - exact).abs().max() > 1e-2
    # one step is only approximate for a 3x3 kernel (the crop)
    assert (conv_singular_values(exact, 8) - c).abs().max() > 1e-3


def test_repeated_projection_drives_a_3x3_stem_to_the_target():
    """Exact: alternating projections, so the distance to the flat-spectrum set never grows."""
    w0 = _weight(16, 3, 3, seed=3)
    c = (16 / 3) ** 0.5
    pad = ((0, 0), (0, 0), (0, 5), (0, 5))
    w, dist = w0, []
    for i in range(60):
        if i < 10:
            dist.append(np.linalg.norm(_numpy_full_projection(w.numpy(), 8, c) - np.pad(w.numpy(), pad)))
        w = procrustes_project(w, 8)
    assert all(a >= b - 1e-12 for a, b in zip(dist, dist[1:]))
    dev0 = (conv_singular_values(w0, 8) - c).abs().max()
    assert (conv_singular_values(w, 8) - c).abs().max() < 0.01 * dev0
    reference = w0
    for _ in range(20):
        reference = procrustes_project(reference, 8, reference_conj=True)
    assert (conv_singular_values(reference, 8) - c).abs().max() < 1e-4
    # the reference variant gets there by collapsing the kernel onto a single tap
    energy = reference.square().sum((0, 1))
    assert energy[0, 0] > 0.999 * energy.sum()


def test_regularizer_draws_once_per_step():
    model = build("procresnet", depth=13, width=1, img_size=8)
    reg = ProcrustesRegularizer(model, p=1.0)
    assert reg.step()
    for conv, grid in model.procrustes_targets()[1:]:
        s = conv_singular_values(conv.weight, grid)
        assert (s - 2**0.5).abs().max() < 1e-4
    stem = model.stem.weight.detach().clone()
    assert not ProcrustesRegularizer(model, p=0.0).step()
    assert torch.equal(model.stem.weight, stem)
    draws = [ProcrustesRegularizer(model, 0.5, torch.Generator().manual_seed(5)) for _ in range(2)]
    seqs = [[r.step() for _ in range(200)] for r in draws]
    assert seqs[0] == seqs[1] and 70 < sum(seqs[0]) < 130


def test_errors():
    with pytest.raises(LandscapeError, match="smaller than the kernel"):
        conv_singular_values(_weight(2, 2, 3), 2)
    with pytest.raises(LandscapeError, match="conv weight"):
        conv_singular_values(torch.randn(3, 3), 4)
    with pytest.raises(LandscapeError, match="targets"):
        ProcrustesRegularizer(build("fc", depth=2, width=2))
    with pytest.raises(LandscapeError, match="p must"):
        ProcrustesRegularizer(targets=[], p=2.0)
