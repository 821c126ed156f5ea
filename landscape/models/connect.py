"""`Connect`: how a block's update f joins the residual stream x.

Modes (one string, optionally `name:value`, or the name plus a keyword):

| mode                      | out                                   | source            |
|---------------------------|---------------------------------------|-------------------|
| `none`                    | f (no skip)                           | plain nets        |
| `identity`                | x + f                                 | ResNet            |
| `scaled:λ`                | λ·x + f                               | xSkip, docs/methods.md §D.1   |
| `scaled_ln:λ`             | LN(λ·x + f)                           | xSkip+LN, D.1     |
| `recursive_ln:K`          | y₁ = LN₁(x+f), y_k = LN_k(x+y_{k−1})  | rSkip+LN, D.1     |
| `scaled_bn:λ`             | BN(λ·x + f)                           | D.1 BN ablation   |
| `recursive_bn:K`          | rSkip with BN in place of LN          | D.1 BN ablation   |
| `ortho_feature[:π]`       | x + f − (⟨x,f⟩/(‖x‖²+ε))·x per vector | docs/methods.md §B.1          |
| `ortho_global[:π]`        | same, one projection per sample       | docs/methods.md §B.1          |
| `dense_orthogonal[:ρ]`    | Q x + f, Q fixed (a buffer)           | docs/methods.md §A.1          |

Aliases: `plain`→none, `linear`→identity, `xskip`→scaled, `xskip_ln`→scaled_ln,
`rskip_ln`→recursive_ln, `xskip_bn`→scaled_bn, `rskip_bn`→recursive_bn, `dense_orth`→dense_orthogonal.

The vectors: `kind="fc"` ([B, d]) and `"tokens"` ([B, T, d]) reduce over the last dim;
`kind="conv"` ([B, C, H, W]) and `"conv1d"` ([B, C, L]) reduce feature-wise over the channel
dim 1, i.e. one vector per pixel / position (docs/methods.md §B.1, HEAD). `ortho_global` reduces
over all but the batch dim (the reference's `x.flatten(1)`; note the reference ViT forces feature-wise instead).
LN is `LayerNorm(d)` for fc/tokens and `GroupNorm(1, C)` (LN over C, H, W per sample,
per-channel affine; docs/methods.md §D.1 [R]) for conv; each recursion step has its own LN [TD].
BN (the ablation) normalizes each feature / channel over everything but that dim: BatchNorm1d
over [B, d] (fc), over batch × tokens (tokens), over batch × positions (conv1d), BatchNorm2d (conv).

Orthogonal update (docs/methods.md §B.1): ε = 1e-6 is ADDED to ‖x‖², which is accumulated in at
least float32 (the reference casts to float32; float64 inputs stay float64 so gradcheck
is exact); s is cast back to x's dtype; gradients flow through the projection.
Stochastic orthogonal updates (`ortho_*:π`, reference `--orthogonal_prob`): in training
mode every forward draws one Bernoulli(π) from the global torch RNG, orthogonal on
success, linear (x + f) otherwise; `last_orthogonal` records the draw. In eval mode the
update is deterministic: orthogonal when π > 0 (the reference keeps whatever was last
drawn; we choose the mode the run was configured for, so evaluation is reproducible).

Dense orthogonal (docs/methods.md §A.1 [R]): Q is Haar-random orthogonal. With a degenerate
fraction ρ (`dense_orthogonal:ρ`) the skip is instead the the ablation of docs/methods.md §A.1
Q = U diag(λ) Uᵀ with U Haar-random, λ_i ∈ {0, 1} and round(ρ·d) of them zero; ρ = 0
gives Q = I. Random draws use `generator` (or the global RNG).

Inputs are never modified in place; probes hook the module itself (the forward hook sees
(x, f) and out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError

MODES = (
    "none",
    "identity",
    "scaled",
    "scaled_ln",
    "recursive_ln",
    "scaled_bn",
    "recursive_bn",
    "ortho_feature",
    "ortho_global",
    "dense_orthogonal",
)
KINDS = ("fc", "tokens", "conv", "conv1d")
_ALIASES = {
    "plain": "none",
    "linear": "identity",
    "xskip": "scaled",
    "xskip_ln": "scaled_ln",
    "rskip_ln": "recursive_ln",
    "xskip_bn": "scaled_bn",
    "rskip_bn": "recursive_bn",
    "dense_orth": "dense_orthogonal",
}
# the keyword each parameterised mode takes, and its default
_PARAM = {
    "scaled": ("scale", 1.0),
    "scaled_ln": ("scale", 1.0),
    "recursive_ln": ("steps", 1),
    "scaled_bn": ("scale", 1.0),
    "recursive_bn": ("steps", 1),
    "ortho_feature": ("prob", 1.0),
    "ortho_global": ("prob", 1.0),
    "dense_orthogonal": ("degenerate", None),
}


_NORMED = ("scaled_ln", "recursive_ln", "scaled_bn", "recursive_bn")


class ChannelBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the feature dim of [B, d] (fc), [B, T, d] (tokens) or [B, C, L] (conv1d)."""

    def __init__(self, features: int, kind: str):
        super().__init__(features)
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        """BatchNorm over the channel dim: token streams [B, T, C] are normalized over C, other streams as BatchNorm.

        Args:
            x: the stream.

        Returns:
            The normalized stream, the shape of x.
        """
        if self.kind == "tokens":
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


@dataclass(frozen=True)
class ConnectMode:
    """A parsed connection mode: `name` plus its one parameter (`value`, None when unused)."""

    name: str
    value: float | int | None = None

    def __str__(self) -> str:
        default = _PARAM.get(self.name, (None, None))[1]
        return self.name if self.value is None or self.value == default else f"{self.name}:{self.value:g}"


def parse_mode(mode: str | ConnectMode, **param: float | int | None) -> ConnectMode:
    """Parse `name[:value]` (or a name plus its keyword: scale, steps, prob, degenerate) and validate it.

    Args:
        mode: "name[:value]" or a ConnectMode.
        **param: the mode's value given as a keyword (scale, steps, prob, degenerate).

    Returns:
        The validated ConnectMode.
    """
    if isinstance(mode, ConnectMode):
        mode = str(mode)
    if not isinstance(mode, str):
        raise LandscapeError(f"connection mode must be a string, got {mode!r}")
    head, _, tail = mode.strip().partition(":")
    name = _ALIASES.get(head.strip().lower(), head.strip().lower())
    if name not in MODES:
        raise LandscapeError(f"unknown connection mode {mode!r}; known: {', '.join(MODES)}")
    given = {k: v for k, v in param.items() if v is not None}
    key, default = _PARAM.get(name, (None, None))
    if set(given) - {key}:
        raise LandscapeError(f"connection mode {name!r} takes no parameter {sorted(set(given) - {key})}")
    if tail and given:
        raise LandscapeError(f"connection mode {mode!r}: give {key} in the string or as keyword, not both")
    if tail and key is None:
        raise LandscapeError(f"connection mode {name!r} takes no ':value' (got {mode!r})")
    value = given.get(key, default) if not tail else tail
    if value is None:
        return ConnectMode(name, None)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LandscapeError(f"connection mode {mode!r}: {key} must be a number, got {value!r}") from None
    if name in ("recursive_ln", "recursive_bn"):
        if value != int(value) or value < 1:
            raise LandscapeError(f"{name} needs an integer number of steps >= 1, got {value:g}")
        value = int(value)
    elif name.startswith("ortho") or name == "dense_orthogonal":
        if not 0.0 <= value <= 1.0:
            raise LandscapeError(f"connection mode {name!r}: {key} must lie in [0, 1], got {value:g}")
    elif not math.isfinite(value):
        raise LandscapeError(f"connection mode {name!r}: scale must be finite, got {value}")
    return ConnectMode(name, value)


def reduce_dims_for(kind: str, globally: bool = False) -> tuple[int, ...]:
    """Dims of the per-vector reduction: the feature dim, or all but the batch dim when `globally`.

    Args:
        kind: the stream kind ("fc", "tokens", "conv", "conv1d").
        globally: reduce over every dim but the batch dim.

    Returns:
        The dims.
    """
    if kind not in KINDS:
        raise LandscapeError(f"unknown stream kind {kind!r}; known: {', '.join(KINDS)}")
    if globally:
        return {"fc": (1,), "tokens": (1, 2), "conv": (1, 2, 3), "conv1d": (1, 2)}[kind]
    return (1,) if kind in ("conv", "conv1d") else (-1,)


def orthogonal_split(x: Tensor, f: Tensor, dims: tuple[int, ...], eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(f_par, f_perp) with f_par = s·x, s = ⟨x,f⟩_D / (‖x‖²_D + ε) (docs/methods.md §B.1), f_perp = f − f_par.

    Args:
        x: the stream.
        f: the branch output, the shape of x.
        dims: the dims of ⟨·,·⟩_D.
        eps: ε.

    Returns:
        (f_par, f_perp).
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    dot = (x * f).sum(dims, keepdim=True)
    n2 = (x * x).sum(dims, keepdim=True).to(acc) + eps
    f_par = (dot / n2).to(x.dtype) * x
    return f_par, f - f_par


def haar_orthogonal(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """A Haar-random n×n orthogonal matrix (QR of a Gaussian with the sign of diag R fixed).

    Args:
        n: the size.
        generator: the random generator.
        dtype: the result's dtype.

    Returns:
        Q [n, n] with QᵀQ = I.
    """
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def degenerate_projection(n: int, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """U diag(λ) Uᵀ, U Haar-random, λ ∈ {0,1} with round(fraction·n) zeros (docs/methods.md §A.1 ablation).

    Args:
        n: the size.
        fraction: the fraction of zero eigenvalues.
        generator: the random generator.

    Returns:
        The float32 projection [n, n].
    """
    u = haar_orthogonal(n, generator, torch.float64)
    lam = torch.ones(n, dtype=torch.float64)
    lam[: round(fraction * n)] = 0.0
    return ((u * lam) @ u.T).float()


class Connect(nn.Module):
    """out = connect(x, f); see the module docstring for the modes.

    Args:
        mode: mode string (`"ortho_feature:0.5"`) or name with a keyword (`prob=0.5`).
        features: feature / channel count; needed by the LN modes and `dense_orthogonal`.
        kind: `"fc"` ([B, d]), `"tokens"` ([B, T, d]) or `"conv"` ([B, C, H, W]).
        eps: ε of the orthogonal projection.
        generator: RNG for the dense orthogonal Q (global RNG when None).
    """

    def __init__(
        self,
        mode: str | ConnectMode = "identity",
        features: int | None = None,
        kind: str = "fc",
        *,
        scale: float | None = None,
        steps: int | None = None,
        prob: float | None = None,
        degenerate: float | None = None,
        eps: float = 1e-6,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        parsed = parse_mode(mode, scale=scale, steps=steps, prob=prob, degenerate=degenerate)
        self.name, self.value = parsed.name, parsed.value
        self.mode = str(parsed)
        self.kind = kind
        self.eps = float(eps)
        self.reduce_dims = reduce_dims_for(kind, globally=self.name == "ortho_global")
        self.last_orthogonal: bool | None = None
        needs_features = self.name in (*_NORMED, "dense_orthogonal")
        if needs_features and (features is None or int(features) < 1):
            raise LandscapeError(f"connection mode {self.mode!r} needs the feature count (features=...)")
        self.features = features
        if self.name in _NORMED:
            steps_ = self.value if self.name.startswith("recursive") else 1
            self.norms = nn.ModuleList(self._norm(features) for _ in range(steps_))
        if self.name == "dense_orthogonal":
            q = (
                haar_orthogonal(features, generator)
                if self.value is None
                else degenerate_projection(features, self.value, generator)
            )
            self.register_buffer("Q", q)

    def _norm(self, features: int) -> nn.Module:
        if self.name.endswith("_bn"):
            return nn.BatchNorm2d(features) if self.kind == "conv" else ChannelBatchNorm(features, self.kind)
        return nn.GroupNorm(1, features) if self.kind in ("conv", "conv1d") else nn.LayerNorm(features)

    def extra_repr(self) -> str:
        """The mode, stream kind and reduction dims, for print(model)."""
        return f"mode={self.mode!r}, kind={self.kind!r}, reduce_dims={self.reduce_dims}"

    def skip(self, x: Tensor) -> Tensor:
        """Q x over the feature dim (dense_orthogonal only).

        Args:
            x: the stream.

        Returns:
            Q x, the shape of x.
        """
        if self.kind in ("conv", "conv1d"):
            return torch.einsum("oc,bc...->bo...", self.Q.to(x.dtype), x)
        return F.linear(x, self.Q.to(x.dtype))

    def _orthogonal_now(self) -> bool:
        prob = self.value
        if prob >= 1.0:
            return True
        if not self.training:
            return prob > 0.0
        return bool(torch.rand(()) < prob)

    def forward(self, x: Tensor, f: Tensor) -> Tensor:
        """The block output from the stream x and the branch output f (docs/methods.md §B: x + f, λ·x + f, the
        orthogonal or degenerate skips, ...).

        Args:
            x: the stream entering the block.
            f: the branch's output, the shape of x.

        Returns:
            The stream leaving the block.
        """
        name = self.name
        if name == "none":
            return f
        if x.shape != f.shape:
            raise LandscapeError(
                f"Connect({self.mode}): stream {tuple(x.shape)} and update {tuple(f.shape)} differ in shape"
            )
        if name == "identity":
            return x + f
        if name == "scaled":
            return self.value * x + f
        if name in ("scaled_ln", "scaled_bn"):
            return self.norms[0](self.value * x + f)
        if name in ("recursive_ln", "recursive_bn"):
            y = self.norms[0](x + f)
            for norm in self.norms[1:]:
                y = norm(x + y)
            return y
        if name == "dense_orthogonal":
            return self.skip(x) + f
        self.last_orthogonal = self._orthogonal_now()
        if not self.last_orthogonal:
            return x + f
        return x + orthogonal_split(x, f, self.reduce_dims, self.eps)[1]


def modes_per_block(connect: str | list | tuple, n: int, what: str = "blocks") -> list:
    """One mode per block: a single mode is repeated; a list must have exactly `n` entries.

    Args:
        connect: one mode, or a list of n.
        n: the number of blocks.
        what: the word for a block, for messages.

    Returns:
        The n modes.
    """
    if isinstance(connect, (str, ConnectMode)):
        return [connect] * n
    if isinstance(connect, (list, tuple)) and len(connect) == n:
        return list(connect)
    got = f"{len(connect)} entries" if isinstance(connect, (list, tuple)) else repr(connect)
    raise LandscapeError(f"connect must be one mode or a list of {n} modes (one per {what}), got {got}")
