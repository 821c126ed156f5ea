"""Singularities of a layer's units over the samples (docs/methods.md §A.2: elimination, overlap, linear dependence).

Units are the branch activations z_l (ReLU outputs; one column of Z_l [N, n] per unit, N
rows: samples, or samples × tokens / pixels with units on the last / channel dim). Statistics:

- dead_frac: fraction of units with max_x |z_i(x)| ≤ `dead_tol` (default 0: zero on every sample).
- overlap_act (kept for comparability with earlier results): mean over units i of max_{j≠i} cos(z_i, z_j),
  cosines of the UNCENTERED N-vectors; overlap_act_frac: fraction of units whose max exceeds `threshold`
  (0.99). Biased for ReLU units: two independent units z = ReLU(g), g ~ N(0, 1), have
  cos = E[z]²/E[z²] = (1/2π)/(1/2) = 1/π ≈ 0.32, so this never approaches 0 even without any overlap.
- overlap_act_centered / overlap_act_centered_frac: the same on the CENTERED activations, i.e. the
  Pearson correlation of the two units over the samples (0 for independent units, 1 for duplicates).
  Units of zero variance (dead or constant) are left out.
- overlap_act_pairs / overlap_act_centered_pairs: the fraction of unordered pairs {i, j} of valid units
  whose (uncentered / centered) cosine exceeds `pair_threshold` (0.95).
- eff_rank: (Σ s_k²)² / Σ s_k⁴ / n and small_sv_frac: fraction of k with s_k / s_1 < `small_sv`
  (1e-3), where s_k are the singular values of the CENTERED Z_l (all n units: dead or constant units
  give zero singular values). If every s_k is 0, eff_rank = 0 and small_sv_frac = 1. The two answer
  different questions: eff_rank measures how evenly variance spreads (a few large directions lower it
  even when every unit is independent); small_sv_frac counts exactly (numerically) dependent directions
  (one unit equal to a sum of others barely moves eff_rank but adds 1/n here). Report both.
- On incoming weights [w_i; b_i] (a row of the layer's weight, flattened, with its bias):
  weight_norm_{mean,min,q25,median,q75,max} (the distribution of ‖[w_i; b_i]‖), overlap_weight /
  overlap_weight_frac as above and overlap_weight_pairs (pairs with cosine > `pair_threshold`), zero
  rows left out. The overlap singularity of the paper is w_i = w_j (and b_i = b_j): the weight cosine
  tests it directly; the activation cosines test its consequence on the data.

One data pass, batched: per batch one `bmm` over all layers of equal width adds (Z − c)ᵀ(Z − c) to a
Gram accumulator (c: the first batch's mean, a shift that keeps the centering well conditioned), and
running sums and max |z|; N need not fit in memory. From the accumulators, Σ zzᵀ gives the uncentered
cosines, Σ (z − μ)(z − μ)ᵀ = G_c − N (μ − c)(μ − c)ᵀ the centered ones and s_k² as `eigvalsh` of an
n×n matrix, batched over layers: all pairs come from one n×n matrix, no loop over units. Grams are
float64 by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError

ACT_METRICS = ("dead_frac", "overlap_act", "overlap_act_frac", "eff_rank", "small_sv_frac",
               "overlap_act_centered", "overlap_act_centered_frac", "overlap_act_pairs", "overlap_act_centered_pairs")
WEIGHT_METRICS = ("weight_norm_mean", "weight_norm_min", "weight_norm_q25", "weight_norm_median",
                  "weight_norm_q75", "weight_norm_max", "overlap_weight", "overlap_weight_frac",
                  "overlap_weight_pairs")
PAIR_THRESHOLD = 0.95
_VAR_RTOL = 1e-12  # a unit is "constant" when its variance is below this fraction of its mean square


def units_matrix(z: Tensor) -> Tensor:
    """Activations as [vectors, units]: units on dim 1 for [B, C, H, ...], on the last dim otherwise.

    Args:
        z: activations.

    Returns:
        [vectors, units].
    """
    if z.dim() >= 4:
        z = z.movedim(1, -1)
    return z.reshape(-1, z.shape[-1])


def _cosines(gram: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """(cos_ij [L, n, n], mask of valid off-diagonal pairs) from Gram matrices."""
    norms = gram.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    cos = gram / (norms.unsqueeze(-1) * norms.unsqueeze(-2))
    ok = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    ok &= ~torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
    return cos, ok


def max_offdiag_cosine(gram: Tensor, valid: Tensor) -> Tensor:
    """max_{j≠i, j valid} cos_ij from Gram matrices [L, n, n]; NaN where unit i is invalid or alone.

    Args:
        gram: [L, n, n] Gram matrices.
        valid: [L, n] the units that count.

    Returns:
        [L, n].
    """
    cos, ok = _cosines(gram, valid)
    best = cos.masked_fill(~ok, -torch.inf).amax(-1)
    return best.masked_fill(~valid | torch.isinf(best), torch.nan)


def pair_fraction(gram: Tensor, valid: Tensor, threshold: float = PAIR_THRESHOLD) -> Tensor:
    """Fraction of unordered valid pairs {i, j} with cos_ij > threshold, per layer (NaN with no pair).

    Args:
        gram: [L, n, n] Gram matrices.
        valid: [L, n] the units that count.
        threshold: the cosine above which a pair overlaps.

    Returns:
        [L].
    """
    cos, ok = _cosines(gram, valid)
    pairs = ok.sum((-2, -1))
    return ((cos > threshold) & ok).sum((-2, -1)) / pairs.where(pairs > 0, torch.nan)


def _overlap(best: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(mean of the finite maxima, fraction above threshold) per layer; NaN when none is finite."""
    has = ~torch.isnan(best)
    count = has.sum(-1)
    mean = torch.where(has, best, 0).sum(-1) / count
    frac = (has & (best > threshold)).sum(-1) / count
    return mean, frac


def spectrum_stats(eig: Tensor, small_sv: float) -> tuple[Tensor, Tensor]:
    """(effective rank / n, fraction of s_k/s_1 < small_sv) from eigenvalues s_k² of the centered Gram.

    Args:
        eig: [..., n] eigenvalues of the centered Gram.
        small_sv: the relative singular-value threshold.

    Returns:
        (eff_rank / n, small_sv_frac), effective rank = (Σ s²)² / Σ s⁴.
    """
    lam = eig.clamp_min(0)
    n = lam.shape[-1]
    total = lam.sum(-1)
    eff = torch.where(total > 0, total.square() / lam.square().sum(-1).clamp_min(1e-300), 0) / n
    top = lam.amax(-1, keepdim=True)
    small = torch.where(top > 0, lam < small_sv**2 * top, True).double().mean(-1)
    return eff, small


class SingularityAccumulator:
    """Running per-layer sums for the activation statistics; `add` a batch, then `compute`."""

    def __init__(self, gram_dtype: torch.dtype = torch.float64):
        self.gram_dtype = gram_dtype
        self.state: dict[int, dict[str, Tensor | int]] = {}

    @torch.no_grad()
    def add(self, layers: Sequence[int], z: Tensor) -> None:
        """Add a batch for several layers at once: z [K, M, n], one slice per entry of `layers`.

        Args:
            layers: the layer indices.
            z: [K, M, n] activations of the K layers.
        """
        z = z.to(self.gram_dtype)
        for k, layer in enumerate(layers):
            if layer not in self.state:
                n = z.shape[-1]
                self.state[layer] = {"shift": z[k].mean(0), "gram": z.new_zeros(n, n), "sum": z.new_zeros(n),
                                     "maxabs": z.new_zeros(n), "count": 0}
        shift = torch.stack([self.state[layer]["shift"] for layer in layers]).unsqueeze(1)
        zs = z - shift
        grams = torch.bmm(zs.transpose(1, 2), zs)
        sums = z.sum(1)
        maxabs = z.abs().amax(1)
        for k, layer in enumerate(layers):
            st = self.state[layer]
            st["gram"] += grams[k]
            st["sum"] += sums[k]
            torch.maximum(st["maxabs"], maxabs[k], out=st["maxabs"])
            st["count"] += z.shape[1]

    @torch.no_grad()
    def compute(self, dead_tol: float = 0.0, threshold: float = 0.99, small_sv: float = 1e-3,
                pair_threshold: float = PAIR_THRESHOLD) -> dict[int, dict[str, float]]:
        """The ACT_METRICS of every layer seen, batched over layers of equal width.

        Args:
            dead_tol: a unit with max |z_i| ≤ dead_tol over the samples is dead.
            threshold: the cosine of an overlapping unit.
            small_sv: the relative singular-value threshold.
            pair_threshold: the cosine of an overlapping pair.

        Returns:
            {layer: {metric: value}}.
        """
        by_width: dict[int, list[int]] = {}
        for layer, st in self.state.items():
            by_width.setdefault(st["gram"].shape[0], []).append(layer)
        out: dict[int, dict[str, float]] = {}
        for layers in by_width.values():
            st = {key: torch.stack([self.state[la][key] for la in layers]) for key in ("shift", "gram", "sum",
                                                                                    "maxabs")}
            count = torch.tensor([float(self.state[la]["count"]) for la in layers], dtype=st["gram"].dtype,
                                 device=st["gram"].device).view(-1, 1, 1)
            c, s = st["shift"].unsqueeze(-1), st["sum"].unsqueeze(-1)
            d = s / count - c
            centered = st["gram"] - count * d * d.transpose(1, 2)
            raw = st["gram"] + c * s.transpose(1, 2) + s * c.transpose(1, 2) - count * c * c.transpose(1, 2)
            alive = st["maxabs"] > dead_tol
            overlap, frac = _overlap(max_offdiag_cosine(raw, alive), threshold)
            eff, small = spectrum_stats(torch.linalg.eigvalsh(centered), small_sv)
            dead = (~alive).double().mean(-1)
            var = centered.diagonal(dim1=-2, dim2=-1)
            varies = alive & (var > _VAR_RTOL * raw.diagonal(dim1=-2, dim2=-1))
            c_overlap, c_frac = _overlap(max_offdiag_cosine(centered, varies), threshold)
            pairs = pair_fraction(raw, alive, pair_threshold)
            c_pairs = pair_fraction(centered, varies, pair_threshold)
            values = torch.stack([dead, overlap.double(), frac.double(), eff.double(), small, c_overlap.double(),
                                  c_frac.double(), pairs.double(), c_pairs.double()], -1).tolist()
            out.update({la: dict(zip(ACT_METRICS, v)) for la, v in zip(layers, values)})
        return out


def incoming_weights(layer: nn.Module) -> Tensor:
    """[n_units, fan_in (+1)]: each unit's incoming weight row, flattened, with its bias appended.

    Args:
        layer: a Linear or Conv layer.

    Returns:
        The rows.
    """
    w = getattr(layer, "weight", None)
    if not isinstance(w, Tensor):
        raise LandscapeError(f"{type(layer).__name__} has no weight tensor to read incoming weights from")
    rows = w.detach().flatten(1)
    b = getattr(layer, "bias", None)
    return torch.cat([rows, b.detach().unsqueeze(1)], 1) if isinstance(b, Tensor) else rows


@torch.no_grad()
def weight_stats(layers: Sequence[nn.Module], threshold: float = 0.99,
                 pair_threshold: float = PAIR_THRESHOLD) -> list[dict[str, float]]:
    """The WEIGHT_METRICS of each layer (norm quantiles and overlap of [w_i; b_i]), batched by shape.

    Args:
        layers: the layers.
        threshold: the cosine of an overlapping unit.
        pair_threshold: the cosine of an overlapping pair.

    Returns:
        One {metric: value} per layer.
    """
    mats = [incoming_weights(layer).double() for layer in layers]
    out: list[dict[str, float] | None] = [None] * len(mats)
    by_shape: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        by_shape.setdefault((tuple(m.shape), m.device), []).append(i)
    qs = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    for idx in by_shape.values():
        w = torch.stack([mats[i] for i in idx])
        norms = w.norm(dim=-1)
        gram = torch.bmm(w, w.transpose(1, 2))
        overlap, frac = _overlap(max_offdiag_cosine(gram, norms > 0), threshold)
        pairs = pair_fraction(gram, norms > 0, pair_threshold)
        quant = torch.quantile(norms, qs.to(norms.device), dim=-1).T
        rows = torch.cat([norms.mean(-1, keepdim=True), quant, overlap.unsqueeze(-1), frac.unsqueeze(-1),
                          pairs.unsqueeze(-1)], -1)
        for i, v in zip(idx, rows.tolist()):
            out[i] = dict(zip(WEIGHT_METRICS, v))
    return out


def singularity_stats(z: Tensor, layer: nn.Module | None = None, dead_tol: float = 0.0,
                      threshold: float = 0.99, small_sv: float = 1e-3,
                      pair_threshold: float = PAIR_THRESHOLD) -> dict[str, float]:
    """All statistics of one layer from its activations z (any shape, see `units_matrix`) in one go.

    Args:
        z: the layer's activations.
        layer: the layer, for the weight statistics (None: activations only).
        dead_tol: a unit with max |z_i| ≤ dead_tol over the samples is dead.
        threshold: the cosine of an overlapping unit.
        small_sv: the relative singular-value threshold.
        pair_threshold: the cosine of an overlapping pair.

    Returns:
        {metric: value}.
    """
    acc = SingularityAccumulator()
    acc.add([0], units_matrix(z).unsqueeze(0))
    stats = acc.compute(dead_tol, threshold, small_sv, pair_threshold)[0]
    if layer is not None:
        stats.update(weight_stats([layer], threshold, pair_threshold)[0])
    return stats
