"""Fully connected nets of docs/methods.md §A.1 (Orhan & Pitkow 2018, a reconstruction) and §B.5.

Streams s_0 = input, s_{j+1} = block_j(s_j), j = 0..depth−1, then a linear classifier.
`block="postact"` (default): block j computes the branch activation ("units")
z_j = ReLU(W_j s_j + b_j) and joins it to the stream with its `Connect`:

    block 0 (input → width):   s_1 = z_0                                  (never a skip)
    plain:                     s_{j+1} = z_j
    residual:                  s_{j+1} = c·z_j + s_j                      (c = branch_scale)
    hyper-residual:            s_{j+1} = c·z_j + s_j + a_j Σ_{k=1}^{j−1} Q_k s_k
    dense_orthogonal:          s_{j+1} = c·z_j + Q_j s_j
    any Connect mode:          s_{j+1} = connect_j(s_j, c·z_j)

Hyper-residual long skips [R/TD]: Q_k fixed Haar-random orthogonal buffers, one per source
stream k (the methods text's Q_k; its sketch's per-pair Q_{l,k} would cost O(depth²) matrices),
a_j = 1/(j−1) by default (a toolkit default) or the constant `hyper_scale`; the input s_0 has another
width and is not a source. The long skip is added inside block j (its `long_skip` argument),
so a block's output is always the next block's input.

`block="preact"` (zero-mean pre-activation branches, the transformer / ResNetV2 ordering):
    block 0:  s_1 = W_0 s_0 + b_0                    (a linear embedding: the stream is not ReLU'd)
    block j:  f_j = W_j ReLU(N_j(s_j)) + b_j,   s_{j+1} = connect_j(s_j, c·f_j)
    head:     Linear(N(s_depth))
N is `norm` ("ln": LayerNorm(width), "bn": BatchNorm1d(width), "none"). With zero-mean weights
f_j has mean 0 over the weight draw and no sign, so cos(s_j, f_j) is not positive by construction
(in the postact net both z_j ≥ 0 and, after block 0, s_j ≥ 0, so cos(s_j, z_j) ≥ 0 always).
The branch output f_j is what the singularity probe sees as units here (there is no ReLU after W_j);
`dead_fraction` and `init="cancel_skip"` are postact-only.

Depth-scaled branches: `branch_scale="inv_sqrt_depth"` sets c = 1/√L, L = depth − 1 hidden blocks.

Initialization (docs/methods.md §A.3 [R]): Glorot-normal weights, std = gain·√(2/(fan_in+fan_out)) for
the branch linears (gain 1 for the classifier), zero biases. Malicious inits (docs/methods.md §A.2 [TD]):
  - `init="cancel_skip"`: W_j ← W_j − S_j / c for the hidden blocks, S_j the linear skip map
    (I for identity/hyper, λI for scaled:λ, Q for dense_orthogonal, 0 for none), so the net
    linearized at init (ReLU → identity) equals the plain net with the same draws;
  - `dead_fraction=ρ`: in every block round(ρ·width) random units get the bias
    b_i = −(max_x w_i·s(x) + dead_margin·std_x w_i·s(x)) over 2,048 standard-normal probe
    inputs, so they are dead on such inputs (on real data the fraction is approximate).
Weights come from a generator seeded by one draw of the global RNG, so the same seed gives
the same weights for every kind (a plain and a cancel_skip residual net share their draws).
`init="he"`: std = gain·√(2/fan_in) for the branch linears (He et al. 2015), zero biases.
Stream-scale control (docs/methods.md §A.3 note): `branch_scale` c multiplies z_j in the hidden blocks,
`gain` scales the init; LN-based modes (`connect="scaled_ln:1"`) normalize the stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect, haar_orthogonal, modes_per_block
from landscape.modes import preserved_modes

KINDS = {"plain": "none", "residual": "identity", "hyper": "identity", "dense_orthogonal": "dense_orthogonal"}
INITS = ("glorot", "he", "cancel_skip")
BLOCKS = ("postact", "preact")
NORMS = ("ln", "bn", "none")
DEPTH_SCALE = "inv_sqrt_depth"


class FCBranch(nn.Module):
    """z = ReLU(W x + b): the branch activations, i.e. the units of docs/methods.md §A.2."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """ReLU(W x + b).

        Args:
            x: [B, width] stream.

        Returns:
            [B, width].
        """
        return F.relu(self.linear(x))


def make_norm(norm: str, width: int) -> nn.Module:
    """LayerNorm, BatchNorm1d or Identity over the width.

    Args:
        norm: "ln", "bn" or "none".
        width: the features.

    Returns:
        The module.
    """
    return {"ln": lambda: nn.LayerNorm(width), "bn": lambda: nn.BatchNorm1d(width), "none": nn.Identity}[norm]()


class PreActBranch(nn.Module):
    """f = W ReLU(N(x)) + b: a zero-mean pre-activation branch (N: `make_norm`)."""

    def __init__(self, width: int, norm: str = "ln"):
        super().__init__()
        self.norm = make_norm(norm, width)
        self.linear = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """W ReLU(norm(x)) + b.

        Args:
            x: [B, width] stream.

        Returns:
            [B, width].
        """
        return self.linear(F.relu(self.norm(x)))


class Embed(nn.Module):
    """f = W x + b (the preact net's input layer: no nonlinearity, so the stream starts zero-mean)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """The input layer W x + b.

        Args:
            x: [B, features] inputs.

        Returns:
            [B, width].
        """
        return self.linear(x)


class FCBlock(nn.Module):
    """x_{l+1} = connect(x_l, c·branch(x_l)) [+ long_skip]."""

    def __init__(self, in_dim: int, width: int, connect: Connect, branch_scale: float = 1.0,
                 branch: nn.Module | None = None):
        super().__init__()
        self.branch = FCBranch(in_dim, width) if branch is None else branch
        self.connect = connect
        self.branch_scale = float(branch_scale)

    @property
    def branch_linear(self) -> nn.Linear:
        """The branch's linear layer (for probes and the Procrustes projection)."""
        return self.branch.linear

    def forward(self, x: Tensor, long_skip: Tensor | None = None) -> Tensor:
        """connect(x, s·F(x)) (+ the long skip).

        Args:
            x: [B, width] stream.
            long_skip: the hyper-residual input a_j·Σ of earlier outputs, or None.

        Returns:
            [B, width].
        """
        f = self.branch(x)
        if self.branch_scale != 1.0:
            f = self.branch_scale * f
        out = self.connect(x, f)
        return out if long_skip is None else out + long_skip


class FCNet(nn.Module):
    """FC net of docs/methods.md §A.1; `depth` = number of hidden layers (blocks), each of `width` ReLU units.

    `kind` picks the hidden blocks' default connection (plain: none, residual/hyper: identity,
    dense_orthogonal: a Haar Q) and, for `hyper`, the long skips; `connect` (one mode or one
    per hidden block) overrides the connection, e.g. `kind="plain", connect="ortho_feature"`.
    """

    def __init__(
        self,
        *,
        kind: str = "plain",
        connect: str | list | None = None,
        depth: int = 4,
        width: int = 128,
        in_dim: int = 40,
        n_classes: int = 10,
        block: str = "postact",
        norm: str = "ln",
        init: str = "glorot",
        gain: float = 1.0,
        branch_scale: float | str = 1.0,
        hyper_scale: float | None = None,
        dead_fraction: float = 0.0,
        dead_margin: float = 3.0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise LandscapeError(f"fc: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if init not in INITS:
            raise LandscapeError(f"fc: unknown init {init!r}; known: {', '.join(INITS)}")
        if block not in BLOCKS:
            raise LandscapeError(f"fc: unknown block {block!r}; known: {', '.join(BLOCKS)}")
        if norm not in NORMS:
            raise LandscapeError(f"fc: unknown norm {norm!r}; known: {', '.join(NORMS)}")
        if block == "preact" and (init == "cancel_skip" or dead_fraction > 0):
            raise LandscapeError("fc: init='cancel_skip' and dead_fraction need block='postact' (ReLU branch units)")
        for key, val in (("depth", depth), ("width", width), ("in_dim", in_dim), ("n_classes", n_classes)):
            if not isinstance(val, int) or val < 1:
                raise LandscapeError(f"fc: {key} must be a positive integer, got {val!r}")
        if not 0.0 <= dead_fraction <= 1.0:
            raise LandscapeError(f"fc: dead_fraction must lie in [0, 1], got {dead_fraction!r}")
        if branch_scale == DEPTH_SCALE:
            branch_scale = 1.0 / max(depth - 1, 1) ** 0.5
        elif isinstance(branch_scale, str) or not isinstance(branch_scale, (int, float)) or branch_scale <= 0:
            raise LandscapeError(f"fc: branch_scale must be a positive number or {DEPTH_SCALE!r}, got {branch_scale!r}")
        self.kind, self.hyper, self.hyper_scale = kind, kind == "hyper", hyper_scale
        self.block_type, self.init = block, init
        wgen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        modes = modes_per_block(KINDS[kind] if connect is None else connect, depth - 1, "hidden block")
        pre = block == "preact"
        blocks = [FCBlock(in_dim, width, Connect("none", width, "fc"), branch=Embed(in_dim, width) if pre else None)]
        blocks += [FCBlock(width, width, Connect(m, width, "fc"), branch_scale,
                           branch=PreActBranch(width, norm) if pre else None) for m in modes]
        self.blocks = nn.ModuleList(blocks)
        self.head_norm = make_norm(norm, width) if pre else nn.Identity()
        self.head = nn.Linear(width, n_classes)
        n_long = max(depth - 2, 0) if self.hyper else 0
        self.register_buffer(
            "hyper_q",
            torch.stack([haar_orthogonal(width) for _ in range(n_long)])
            if n_long
            else torch.zeros(0, width, width),
        )
        self._init_weights(wgen, gain, he=init == "he")
        if init == "cancel_skip":
            self._cancel_skips()
        if dead_fraction > 0:
            self._kill_units(dead_fraction, dead_margin, wgen)

    def _init_weights(self, gen: torch.Generator, gain: float, he: bool = False) -> None:
        """Glorot-normal (or He-normal for the branches when `he`) weights, zero biases; head Glorot."""
        with torch.no_grad():
            for lin, g in [(b.branch_linear, gain) for b in self.blocks] + [(self.head, 1.0)]:
                if he and lin is not self.head:
                    std = g * (2.0 / lin.in_features) ** 0.5
                else:
                    std = g * (2.0 / (lin.in_features + lin.out_features)) ** 0.5
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * std)
                lin.bias.zero_()

    def _cancel_skips(self) -> None:
        with torch.no_grad():
            for j, block in enumerate(self.blocks[1:], start=1):
                c = block.connect
                eye = torch.eye(block.branch_linear.out_features)
                if c.name == "none":
                    skip = 0.0 * eye
                elif c.name == "identity":
                    skip = eye
                elif c.name == "scaled":
                    skip = c.value * eye
                elif c.name == "dense_orthogonal":
                    skip = c.Q
                else:
                    raise LandscapeError(
                        f"fc: init cancel_skip needs linear skips; block {j} has mode {c.mode!r}"
                    )
                block.branch_linear.weight.sub_(skip / block.branch_scale)

    def _kill_units(self, fraction: float, margin: float, gen: torch.Generator, n_probe: int = 2048) -> None:
        probe = torch.randn(n_probe, self.blocks[0].branch_linear.in_features, generator=gen)
        with preserved_modes(self, train=False):
            for block in self.blocks:
                lin = block.branch_linear
                k = round(fraction * lin.out_features)
                if k == 0:
                    continue
                seen: list[Tensor] = []
                hook = lin.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o))
                with torch.no_grad():
                    self(probe)
                hook.remove()
                pre = seen[0] - lin.bias
                units = torch.randperm(lin.out_features, generator=gen)[:k]
                with torch.no_grad():
                    lin.bias[units] = -(pre[:, units].amax(0) + margin * pre[:, units].std(0))

    def long_scale(self, j: int) -> float:
        """a_j of the hyper-residual long skip into block j (j ≥ 2).

        Args:
            j: the block index.

        Returns:
            a_j (1/(j − 1) unless `hyper_scale` is set).
        """
        return 1.0 / (j - 1) if self.hyper_scale is None else float(self.hyper_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, ...] inputs, flattened to [B, features].

        Returns:
            [B, classes] logits.
        """
        x = x.flatten(1)  # images [B, C, H, W] → [B, C·H·W]
        acc = None
        for j, block in enumerate(self.blocks):
            long_skip = self.long_scale(j) * acc if acc is not None else None
            out = block(x, long_skip)
            if j >= 1 and j - 1 < len(self.hyper_q):
                term = F.linear(x, self.hyper_q[j - 1].to(x.dtype))
                acc = term if acc is None else acc + term
            x = out
        return self.head(self.head_norm(x))
