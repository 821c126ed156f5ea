"""Hand-written references for the probe tests, independent of landscape.probes."""

from __future__ import annotations


def reference_stream(x, f, eps=1e-6):
    """B.3's six statistics per vector over the feature dim (the last; dim 1 of a 4-D map), averaged."""
    x, f = x.double(), f.double()
    if x.dim() == 4:
        x, f = x.movedim(1, -1), f.movedim(1, -1)
    n2 = (x * x).sum(-1).clamp_min(eps)
    s = (x * f).sum(-1) / n2
    par = s[..., None] * x
    perp = f - par
    par2, perp2 = (par * par).sum(-1).clamp_min(eps), (perp * perp).sum(-1).clamp_min(eps)
    cos = (x * f).sum(-1) / (n2 * (f * f).sum(-1).clamp_min(eps)).sqrt()
    stats = {"x_norm2": n2, "f_par_norm2": par2, "f_ortho_norm2": perp2, "rho_par": par2 / n2,
             "rho_ortho": perp2 / n2, "cos_x_out": cos}
    return {k: float(v.mean()) for k, v in stats.items()}
