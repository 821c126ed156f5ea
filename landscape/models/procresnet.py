"""ResNet-164-style and ProcResNet of docs/methods.md §C.2 (Zaeemzadeh et al. 2020, PyTorch repo `models/`).

ResNet (depth 9n+2: 164, 272, 632, 1001 for n = 18, 30, 70, 111):
    stem  = Conv3×3(in → w, no bias) → BN → ReLU
    block = pre-activation bottleneck, convs without bias, stride on the 3×3 conv, planes → 4·planes;
            shortcut BN-ReLU-Conv1×1(stride) when the shape changes, else identity;
            out = connect(shortcut(x), F(x))
    stages planes w, 2w, 4w (outputs 4w, 8w, 16w), first block of stages 2 and 3 strided
    head  = BN → ReLU → global average pool → Linear

ProcResNet (depth 9n+4: 166, 274, 634, 1003): all shortcuts are identities; the dimension
changes happen in standalone transitions that `ProcrustesRegularizer` keeps norm-preserving:
    stem = Conv3×3(in → 4w, no bias)   (no BN / ReLU after it)
    n blocks (4w → w → 4w), Transition Conv1×1(4w → 8w, stride 2, no bias),
    n blocks (8w → 2w → 8w), Transition Conv1×1(8w → 16w, stride 2, no bias),
    n blocks (16w → 4w → 16w), head BN → ReLU → pool → Linear.
The transitions are entries of `model.blocks` (a `Transition` with a `none` Connect), so every
block's output is the next block's input. Init is PyTorch's default (the Chainer version used
HeNormal(√½) for the stem and transitions). `connect` lists one mode per residual block.
"""

from __future__ import annotations

from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect, modes_per_block
from landscape.models.resnet import make_block


class Transition(nn.Module):
    """A standalone dimension-changing 1×1 conv: x_{l+1} = conv(x_l) (Connect mode `none`)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, 2, bias=False)
        self.connect = Connect("none", cout, "conv")

    def forward(self, x: Tensor) -> Tensor:
        """connect(x, conv(x)): the dimension-changing block.

        Args:
            x: [B, C, H, W] feature map.

        Returns:
            The next stage's feature map.
        """
        return self.connect(x, self.conv(x))


def _blocks_per_stage(name: str, depth: int, offset: int) -> int:
    if not isinstance(depth, int) or depth - offset < 9 or (depth - offset) % 9:
        raise LandscapeError(
            f"{name}: depth must be 9n+{offset} with n >= 1 (e.g. {9 * 18 + offset}), got {depth!r}"
        )
    return (depth - offset) // 9


def _head(channels: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, n_classes),
    )


class ZaeemzadehResNet(nn.Module):
    """Pre-activation bottleneck ResNet-(9n+2) of the ProcResNet repository."""

    def __init__(
        self,
        *,
        depth: int = 164,
        width: int = 16,
        in_channels: int = 3,
        n_classes: int = 10,
        connect: str | list = "identity",
    ):
        super().__init__()
        n = _blocks_per_stage("resnet_zaeemzadeh", depth, 2)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        modes = iter(modes_per_block(connect, 3 * n, "block"))
        blocks, cin = [], width
        for s in range(3):
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                blocks.append(
                    make_block(
                        "bottleneck",
                        cin,
                        width * 2**s,
                        stride,
                        next(modes),
                        bias=False,
                        preact_shortcut=True,
                        stride_on_3x3=True,
                    )
                )
                cin = 4 * width * 2**s
        self.blocks = nn.ModuleList(blocks)
        self.head = _head(cin, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, C, H, W] images.

        Returns:
            [B, classes] logits.
        """
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ProcResNet(nn.Module):
    """ProcResNet-(9n+4): identity-shortcut stages joined by standalone transition convs."""

    def __init__(
        self,
        *,
        depth: int = 166,
        width: int = 16,
        in_channels: int = 3,
        n_classes: int = 10,
        img_size: int = 32,
        connect: str | list = "identity",
    ):
        super().__init__()
        n = _blocks_per_stage("procresnet", depth, 4)
        if img_size % 4:
            raise LandscapeError(f"procresnet: img_size must be a multiple of 4, got {img_size}")
        self.img_size = img_size
        self.stem = nn.Conv2d(in_channels, 4 * width, 3, 1, 1, bias=False)
        modes = iter(modes_per_block(connect, 3 * n, "residual block"))
        blocks = []
        for s in range(3):
            c = 4 * width * 2**s
            if s > 0:
                blocks.append(Transition(c // 2, c))
            blocks += [make_block("bottleneck", c, c // 4, 1, next(modes), bias=False) for _ in range(n)]
        self.blocks = nn.ModuleList(blocks)
        self.head = _head(16 * width, n_classes)

    def procrustes_targets(self) -> list[tuple[nn.Conv2d, int]]:
        """(conv, FFT grid) pairs the Procrustes step projects: stem at img_size, transitions at /2 and /4."""
        trans = [b.conv for b in self.blocks if isinstance(b, Transition)]
        return [(self.stem, self.img_size), (trans[0], self.img_size // 2), (trans[1], self.img_size // 4)]

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, C, H, W] images.

        Returns:
            [B, classes] logits.
        """
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
