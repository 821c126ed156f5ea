"""1-D conv ResNetV2 and ProcResNet-1D on signals such as MNIST-1D (docs/methods.md §C.2, §C.6).

CPU-sized stand-ins for Zaeemzadeh et al.'s ResNet-164 / ProcResNet-166 that keep what their claims
are about: identity-shortcut residual blocks, and dimension-changing transitions (channels ×2, length
/2) which in the plain ResNet are residual blocks with a projection shortcut and in ProcResNet are
standalone 1×1 convs that the Procrustes step keeps norm-preserving.

Input [B, L] (a signal, treated as one channel) or [B, C, L]. Three stages of `n_blocks` blocks,
channels W, 2W, 4W (W = `width` · expansion), lengths L, L/2, L/4. Blocks are pre-activation basic
(BN-ReLU-Conv3-BN-ReLU-Conv3) or bottleneck (BN-ReLU-Conv1 → BN-ReLU-Conv3 → BN-ReLU-Conv1, ×4)
convs without bias, joined by `Connect` (kind "conv1d"; mode `none` removes the skip: a plain net).

    resnet1d:       stem Conv3(C_in → W) → BN → ReLU; stage s's first block (s > 0) has stride 2 on its
                    3-tap conv and a BN-ReLU-Conv1(stride 2) shortcut (the ProcResNet repository's
                    ResNet); head BN → ReLU → global average pool → Linear.
    procresnet1d:   stem Conv3(C_in → W, no BN / ReLU); all blocks keep their shape (identity
                    shortcuts); between stages a `Transition` Conv1(stride 2, no bias); same head.
                    `procrustes_targets()` = (stem, L), (transition 1, L/2), (transition 2, L/4), as in
                    the 2-D ProcResNet, for `ProcrustesRegularizer` (train with procrustes_p > 0).

`model.transitions` lists the indices into `model.blocks` of the dimension-changing blocks, so the
norm-preservation statistics can be taken over the residual blocks only and the transitions
reported on their own. Init is PyTorch's default.
"""

from __future__ import annotations

from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect, modes_per_block
from landscape.models.resnet import EXPANSION, make_block


class Transition1d(nn.Module):
    """x_{l+1} = Conv1×1(x_l) with stride 2 and no bias (Connect mode `none`): a ProcResNet transition."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 1, 2, bias=False)
        self.connect = Connect("none", cout, "conv1d")

    def forward(self, x: Tensor) -> Tensor:
        """connect(x, conv(x)): the dimension-changing block.

        Args:
            x: [B, C, L] feature map.

        Returns:
            The next stage's feature map.
        """
        return self.connect(x, self.conv(x))


def _check(name: str, n_blocks, width, block: str, signal_len) -> None:
    for key, val in (("n_blocks", n_blocks), ("width", width), ("signal_len", signal_len)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise LandscapeError(f"{name}: {key} must be a positive integer, got {val!r}")
    if block not in EXPANSION:
        raise LandscapeError(f"{name}: unknown block {block!r}; known: {', '.join(EXPANSION)}")
    if signal_len % 4:
        raise LandscapeError(f"{name}: signal_len must be a multiple of 4 (two stride-2 stages), got {signal_len}")


def _head(channels: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(channels), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(channels, n_classes))


def _as_signal(x: Tensor) -> Tensor:
    return x.unsqueeze(1) if x.dim() == 2 else x


class ResNet1D(nn.Module):
    """Pre-activation 1-D ResNet: three stages, strided transition blocks with projection shortcuts."""

    def __init__(
        self,
        *,
        n_blocks: int = 2,
        width: int = 16,
        block: str = "basic",
        in_channels: int = 1,
        signal_len: int = 40,
        n_classes: int = 10,
        connect: str | list = "identity",
    ):
        super().__init__()
        _check("resnet1d", n_blocks, width, block, signal_len)
        exp = EXPANSION[block]
        self.stem = nn.Sequential(nn.Conv1d(in_channels, width * exp, 3, 1, 1, bias=False),
                                  nn.BatchNorm1d(width * exp), nn.ReLU())
        modes = iter(modes_per_block(connect, 3 * n_blocks, "block"))
        blocks, cin, self.transitions = [], width * exp, []
        for s in range(3):
            for i in range(n_blocks):
                stride = 2 if (s > 0 and i == 0) else 1
                if stride == 2:
                    self.transitions.append(len(blocks))
                blocks.append(make_block(block, cin, width * 2**s, stride, next(modes), bias=False,
                                         preact_shortcut=True, stride_on_3x3=True, dim=1))
                cin = width * 2**s * exp
        self.blocks = nn.ModuleList(blocks)
        self.head = _head(cin, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, L] or [B, C, L] signals.

        Returns:
            [B, classes] logits.
        """
        x = self.stem(_as_signal(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ProcResNet1D(nn.Module):
    """1-D ProcResNet: shape-keeping residual stages joined by standalone 1×1 stride-2 transitions."""

    def __init__(
        self,
        *,
        n_blocks: int = 2,
        width: int = 16,
        block: str = "basic",
        in_channels: int = 1,
        signal_len: int = 40,
        n_classes: int = 10,
        connect: str | list = "identity",
    ):
        super().__init__()
        _check("procresnet1d", n_blocks, width, block, signal_len)
        exp = EXPANSION[block]
        self.signal_len = signal_len
        self.stem = nn.Conv1d(in_channels, width * exp, 3, 1, 1, bias=False)
        modes = iter(modes_per_block(connect, 3 * n_blocks, "residual block"))
        blocks, self.transitions = [], []
        for s in range(3):
            c = width * exp * 2**s
            if s > 0:
                self.transitions.append(len(blocks))
                blocks.append(Transition1d(c // 2, c))
            blocks += [make_block(block, c, c // exp, 1, next(modes), bias=False, dim=1) for _ in range(n_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.head = _head(4 * width * exp, n_classes)

    def procrustes_targets(self) -> list[tuple[nn.Conv1d, int]]:
        """(conv, FFT length) pairs the Procrustes step projects: stem at L, transitions at L/2 and L/4."""
        trans = [self.blocks[i].conv for i in self.transitions]
        return [(self.stem, self.signal_len), (trans[0], self.signal_len // 2), (trans[1], self.signal_len // 4)]

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, L] or [B, C, L] signals.

        Returns:
            [B, classes] logits.
        """
        x = self.stem(_as_signal(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)
