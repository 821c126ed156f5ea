"""Singularity probes (docs/methods.md §A.2) equal explicit loops over unit pairs and numpy's SVD, do not depend on
how the probe set is batched, and count dead, duplicated and linearly dependent units exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.probes import ACT_METRICS, WEIGHT_METRICS, records_by_block, run_probes, singularity_stats

from .lookalikes import FCNet


def reference(Z: np.ndarray, W: np.ndarray | None = None, thr=0.99, small=1e-3, pair_thr=0.95) -> dict:
    """A.2 statistics by brute force: loops over unit pairs, numpy SVD of the centered activations."""
    n = Z.shape[1]
    alive = [i for i in range(n) if np.abs(Z[:, i]).max() > 0]
    Zc = Z - Z.mean(0)
    varies = [i for i in alive if Zc[:, i].std() > 1e-6 * np.sqrt((Z[:, i] ** 2).mean())]

    def cos(V, i, j):
        return V[:, i] @ V[:, j] / np.sqrt((V[:, i] @ V[:, i]) * (V[:, j] @ V[:, j]))

    def overlap(V, units):
        best = [max(cos(V, i, j) for j in units if j != i) for i in units]
        return np.mean(best), np.mean(np.array(best) > thr)

    def pairs(V, units):
        return np.mean([cos(V, i, j) > pair_thr for i, j in itertools.combinations(units, 2)])

    s = np.linalg.svd(Zc, compute_uv=False)
    out = {"dead_frac": 1 - len(alive) / n}
    out["overlap_act"], out["overlap_act_frac"] = overlap(Z, alive)
    out["overlap_act_centered"], out["overlap_act_centered_frac"] = overlap(Zc, varies)
    out["overlap_act_pairs"], out["overlap_act_centered_pairs"] = pairs(Z, alive), pairs(Zc, varies)
    out["eff_rank"] = (s**2).sum() ** 2 / (s**4).sum() / n
    out["small_sv_frac"] = np.mean(s / s[0] < small) if len(s) == n else np.nan
    if W is not None:
        norms = np.linalg.norm(W, axis=1)
        out.update({"weight_norm_mean": norms.mean(), "weight_norm_min": norms.min(),
                    "weight_norm_median": np.median(norms), "weight_norm_max": norms.max(),
                    "weight_norm_q25": np.quantile(norms, 0.25), "weight_norm_q75": np.quantile(norms, 0.75)})
        nonzero = [i for i in range(n) if norms[i] > 0]
        out["overlap_weight"], out["overlap_weight_frac"] = overlap(W.T, nonzero)
        out["overlap_weight_pairs"] = pairs(W.T, nonzero)
    return out


def check(got, expect):
    for m, v in expect.items():
        assert got[m] == pytest.approx(v, rel=1e-9, abs=1e-12), m


def test_fc_probe_set_matches_brute_force_for_any_batching():
    torch.manual_seed(0)
    model = FCNet(in_dim=6, width=8, depth=3)
    with torch.no_grad():
        model.blocks[1].branch_linear.bias[[2, 5]] = -1e3  # two dead units
    X = torch.randn(40, 6)
    whole = records_by_block(run_probes(model, None, X, metrics="singularity"))
    batched = records_by_block(run_probes(model, None, (X, None), metrics="singularity", batch_size=7))
    x = F.relu(model.inp(X))
    for i, b in enumerate(model.blocks):
        z = b.branch(x)
        lin = b.branch_linear
        W = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().numpy()
        expect = reference(z.detach().numpy(), W)
        check(whole[f"blocks.{i}"], expect)
        check(batched[f"blocks.{i}"], expect)
        x = b(x)
    assert whole["blocks.1"]["dead_frac"] == 0.25
    assert set(whole["blocks.0"]) == set(ACT_METRICS) | set(WEIGHT_METRICS)


def test_known_dead_duplicated_and_dependent_units_are_counted_exactly():
    torch.manual_seed(1)
    lin = nn.Linear(12, 10)
    with torch.no_grad():
        w, b = lin.weight, lin.bias
        b[:5] = 0.0
        w[5], b[5] = w[0], b[0]              # u5 duplicates u0
        w[6], b[6] = w[1] + w[2], 0.0        # u6 = u1 + u2: dependent, not overlapping
        w[7], b[7] = 3 * w[3], 0.0           # u7 = 3·u3: overlapping and dependent
        w[8:], b[8:] = 0.0, 0.0              # u8, u9 dead
    Z = lin(torch.randn(200, 12))
    got = singularity_stats(Z, lin)
    assert got["dead_frac"] == 0.2
    assert got["overlap_act_frac"] == 0.5            # u0, u5, u3, u7 among the 8 live units
    assert got["overlap_weight_frac"] == 0.5         # the same four weight rows (zero rows left out)
    assert got["small_sv_frac"] == 0.5               # rank 5 of 10: u5..u9 add no direction
    assert got["weight_norm_min"] == 0.0
    check(got, reference(Z.detach().numpy(), torch.cat([lin.weight, lin.bias[:, None]], 1).detach().numpy()))


def test_centering_is_accurate_for_large_offsets():
    torch.manual_seed(2)
    Z = 1e6 + torch.randn(500, 6) @ torch.randn(6, 6)
    got = singularity_stats(Z)
    s = np.linalg.svd((Z - Z.mean(0)).numpy(), compute_uv=False)
    assert got["eff_rank"] == pytest.approx((s**2).sum() ** 2 / (s**4).sum() / 6, rel=1e-9)


def test_conv_and_token_units_are_channels_and_features():
    torch.manual_seed(3)
    z = F.relu(torch.randn(4, 5, 3, 3))
    flat = z.movedim(1, -1).reshape(-1, 5).numpy()
    check(singularity_stats(z), reference(flat))
    t = F.relu(torch.randn(4, 7, 5))
    check(singularity_stats(t), reference(t.reshape(-1, 5).numpy()))


def test_degenerate_layers():
    got = singularity_stats(torch.zeros(10, 3))
    assert got["dead_frac"] == 1.0 and np.isnan(got["overlap_act"]) and got["eff_rank"] == 0.0
    assert got["small_sv_frac"] == 1.0
    one_alive = torch.zeros(10, 3)
    one_alive[:, 1] = torch.arange(10.0)
    assert np.isnan(singularity_stats(one_alive)["overlap_act"])


def test_batched_layers_of_different_widths_match_one_at_a_time():
    torch.manual_seed(4)
    layers = [nn.Linear(5, 4), nn.Linear(5, 6), nn.Linear(5, 4)]
    X = torch.randn(30, 5)
    from landscape.probes import SingularityAccumulator, weight_stats

    acc = SingularityAccumulator()
    acc.add([0, 2], torch.stack([layers[0](X), layers[2](X)]).detach())
    acc.add([1], layers[1](X).detach().unsqueeze(0))
    got = acc.compute()
    ws = weight_stats(layers)
    for i, layer in enumerate(layers):
        one = singularity_stats(layer(X).detach(), layer)
        check({**got[i], **ws[i]}, one)
    assert list(itertools.chain(got)) == [0, 2, 1]


def test_independent_relu_units_overlap_only_uncentered():
    """Old artifact: independent ReLU units have uncentered cosine 1/pi, so overlap_act reports ~0.33 with no
    overlap at all. The centered overlap is ~0 and no pair passes 0.95 in either definition."""
    torch.manual_seed(5)
    Z = F.relu(torch.randn(40_000, 12, dtype=torch.float64))
    got = singularity_stats(Z)
    assert got["overlap_act"] > 1 / np.pi  # the max over 11 partners of cosines centred on 1/pi
    assert got["overlap_act"] == pytest.approx(1 / np.pi, abs=0.02)
    assert got["overlap_act_centered"] < 0.03
    assert got["overlap_act_pairs"] == 0.0 and got["overlap_act_centered_pairs"] == 0.0


def test_duplicated_units_are_found_by_centered_activation_and_weight_pairs():
    """A layer whose units come in duplicated pairs (w_i = w_j): every centered / weight cosine of a pair is 1,
    so the pair fractions equal 4 duplicated pairs / 28 pairs, and the centered overlap is 1."""
    torch.manual_seed(6)
    lin = nn.Linear(10, 8)
    with torch.no_grad():
        lin.weight[4:], lin.bias[4:] = lin.weight[:4], lin.bias[:4]
    Z = F.relu(lin(torch.randn(5000, 10)))
    got = singularity_stats(Z.detach(), lin)
    assert got["overlap_act_centered"] == pytest.approx(1.0) and got["overlap_weight"] == pytest.approx(1.0)
    assert got["overlap_act_centered_pairs"] == pytest.approx(4 / 28)
    assert got["overlap_weight_pairs"] == pytest.approx(4 / 28)
    # positively shifted ReLU units with unrelated weights look overlapping to the uncentered cosine only
    shifted = F.relu(torch.randn(5000, 6, dtype=torch.float64) + 6.0)  # cos ≈ 36/37
    s = singularity_stats(shifted)
    assert s["overlap_act_pairs"] == 1.0 and s["overlap_act_centered_pairs"] == 0.0


def test_each_linear_dependence_statistic_sees_what_the_other_misses():
    """Exact dependence (u39 = (u0 + u1)/sqrt 2) moves eff_rank by ~0.05 (population value 40/42 vs 1) but
    sets small_sv_frac = 1/40; a strongly anisotropic but full-rank layer has a low eff_rank and
    small_sv_frac = 0."""
    torch.manual_seed(7)
    base = torch.randn(4000, 40, dtype=torch.float64)
    dep = base.clone()
    dep[:, 39] = (dep[:, 0] + dep[:, 1]) / 2**0.5
    a, b = singularity_stats(base), singularity_stats(dep)
    assert a["small_sv_frac"] == 0.0 and b["small_sv_frac"] == pytest.approx(1 / 40)
    assert a["eff_rank"] - b["eff_rank"] == pytest.approx(1 - 40 / 42, abs=0.02)
    aniso = base * torch.logspace(0, -2, 40, dtype=torch.float64)
    c = singularity_stats(aniso)
    assert c["eff_rank"] < 0.3 and c["small_sv_frac"] == 0.0
