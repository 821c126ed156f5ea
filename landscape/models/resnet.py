"""Pre-activation ResNetV2 of docs/methods.md §B.2 (Oh et al. 2025, `preactresnet.py`), any `Connect` mode per block.

    block:    out = connect(shortcut(x), F(x))            (projection against the SHORTCUT output)
    basic:    F = BN-ReLU-Conv3×3(stride)-BN-ReLU-Conv3×3
    bottle:   F = BN-ReLU-Conv1×1(stride)-BN-ReLU-Conv3×3-BN-ReLU-Conv1×1(×4)
    shortcut: identity, or Conv1×1(cin, cout, stride) with bias and no BN when the shape changes
    stem:     Conv3×3(in → w) + BN + ReLU;  head: global average pool → Linear (no final BN-ReLU)

All convs keep PyTorch's default bias. ImageNet-style depths 18/34/50/101/152 use four stages
(w, 2w, 4w, 8w; strides 1/2/2/2; w = 64); CIFAR-style depths use three stages (w, 2w, 4w;
strides 1/2/2; w = 16) of n blocks: basic for depth 6n+2, bottleneck for 9n+2 (`block` picks
when both fit; by default bottleneck from depth 164 on, as in He et al. 2016).
With mode `none` a block has no shortcut at all (a plain net).
"""

from __future__ import annotations

from torch import Tensor, nn

from landscape.errors import LandscapeError
from landscape.models.connect import Connect, modes_per_block

IMAGENET = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def conv_layers(dim: int = 2) -> tuple[type[nn.Module], type[nn.Module]]:
    """(Conv, BatchNorm) classes for 1-D ([B, C, L]) or 2-D ([B, C, H, W]) feature maps.

    Args:
        dim: 1 or 2.

    Returns:
        (Conv, BatchNorm).
    """
    if dim not in (1, 2):
        raise LandscapeError(f"conv nets are 1-D or 2-D, got dim={dim!r}")
    return (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)


def preact(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True, dim: int = 2) -> list[nn.Module]:
    """BN-ReLU-Conv k×k (padding k//2); `dim=1` for 1-D signals.

    Args:
        cin: input channels.
        cout: output channels.
        k: kernel size.
        stride: the stride.
        bias: the conv has a bias.
        dim: 1 or 2.

    Returns:
        [BatchNorm, ReLU, Conv].
    """
    conv, bn = conv_layers(dim)
    return [bn(cin), nn.ReLU(), conv(cin, cout, k, stride, k // 2, bias=bias)]


def branch(
    block: str, cin: int, planes: int, stride: int, bias: bool = True, stride_on_3x3: bool = False, dim: int = 2
) -> nn.Sequential:
    """Pre-activation residual function F; the bottleneck outputs 4·planes channels.

    Args:
        block: "basic" or "bottleneck".
        cin: input channels.
        planes: the block's width.
        stride: the stride.
        bias: the convs have biases.
        stride_on_3x3: put the bottleneck's stride on its 3×3 conv (else on the first 1×1).
        dim: 1 or 2.

    Returns:
        F as a Sequential.
    """
    if block == "basic":
        return nn.Sequential(*preact(cin, planes, 3, stride, bias, dim), *preact(planes, planes, 3, 1, bias, dim))
    s1, s3 = (1, stride) if stride_on_3x3 else (stride, 1)
    return nn.Sequential(
        *preact(cin, planes, 1, s1, bias, dim),
        *preact(planes, planes, 3, s3, bias, dim),
        *preact(planes, 4 * planes, 1, 1, bias, dim),
    )


class ResBlock(nn.Module):
    """x_{l+1} = connect(shortcut(x_l), branch(x_l)); `shortcut` is None for the `none` mode."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None, connect: Connect):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.connect = connect

    def forward(self, x: Tensor) -> Tensor:
        """connect(shortcut(x), F(x)).

        Args:
            x: [B, C, ...] feature map.

        Returns:
            The block's output.
        """
        f = self.branch(x)
        return self.connect(x if self.shortcut is None else self.shortcut(x), f)


def make_block(
    block: str,
    cin: int,
    planes: int,
    stride: int,
    mode,
    *,
    bias: bool = True,
    preact_shortcut: bool = False,
    stride_on_3x3: bool = False,
    dim: int = 2,
) -> ResBlock:
    """One residual block; a 1×1-conv shortcut (optionally BN-ReLU first) when the shape changes.

    Args:
        block: "basic" or "bottleneck".
        cin: input channels.
        planes: the block's width.
        stride: the stride.
        mode: the connection mode.
        bias: the convs have biases.
        preact_shortcut: BN-ReLU before the 1×1 shortcut conv.
        stride_on_3x3: the bottleneck's stride on its 3×3 conv.
        dim: 1 or 2.

    Returns:
        The block.
    """
    cout = planes * EXPANSION[block]
    conv_cls, bn_cls = conv_layers(dim)
    connect = Connect(mode, cout, "conv" if dim == 2 else "conv1d")
    shortcut = None
    if connect.name != "none":
        if stride != 1 or cin != cout:
            conv = conv_cls(cin, cout, 1, stride, bias=bias)
            shortcut = nn.Sequential(bn_cls(cin), nn.ReLU(), conv) if preact_shortcut else conv
        else:
            shortcut = nn.Identity()
    return ResBlock(branch(block, cin, planes, stride, bias, stride_on_3x3, dim), shortcut, connect)


def resolve_layout(depth: int, block: str | None, style: str | None) -> tuple[str, str, list[int]]:
    """(style, block, blocks per stage) of a ResNetV2 depth.

    Args:
        depth: the ResNet depth.
        block: "basic" or "bottleneck" (None: the style's default).
        style: "cifar" or "imagenet" (None: from the depth).

    Returns:
        (style, block, blocks per stage).
    """
    if style is None:
        style = "imagenet" if depth in IMAGENET else "cifar"
    if style == "imagenet":
        if depth not in IMAGENET:
            raise LandscapeError(f"resnetv2: ImageNet-style depth must be in {sorted(IMAGENET)}, got {depth}")
        kind, stages = IMAGENET[depth]
        if block not in (None, kind):
            raise LandscapeError(f"resnetv2: depth {depth} (ImageNet style) has {kind} blocks, not {block!r}")
        return style, kind, stages
    if style != "cifar":
        raise LandscapeError(f"resnetv2: unknown style {style!r}; known: imagenet, cifar")
    fits = {"basic": (depth - 2) % 6 == 0 and depth > 2, "bottleneck": (depth - 2) % 9 == 0 and depth > 2}
    if block is None:
        block = "bottleneck" if fits["bottleneck"] and (depth >= 164 or not fits["basic"]) else "basic"
    if block not in fits:
        raise LandscapeError(f"resnetv2: unknown block {block!r}; known: basic, bottleneck")
    if not fits[block]:
        rule = "6n+2" if block == "basic" else "9n+2"
        raise LandscapeError(f"resnetv2: CIFAR-style depth {depth} does not fit {block} blocks ({rule})")
    n = (depth - 2) // (6 if block == "basic" else 9)
    return style, block, [n, n, n]


class ResNetV2(nn.Module):
    """Pre-activation ResNetV2; `connect` is one mode or one per block (in forward order)."""

    def __init__(
        self,
        *,
        depth: int = 18,
        block: str | None = None,
        style: str | None = None,
        width: int | None = None,
        in_channels: int = 3,
        n_classes: int = 10,
        connect: str | list = "identity",
    ):
        super().__init__()
        style, block, stages = resolve_layout(depth, block, style)
        w = width if width is not None else (64 if style == "imagenet" else 16)
        if not isinstance(w, int) or w < 1:
            raise LandscapeError(f"resnetv2: width must be a positive integer, got {width!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU())
        modes = iter(modes_per_block(connect, sum(stages), "block"))
        blocks, cin = [], w
        for s, n in enumerate(stages):
            planes = w * 2**s
            for i in range(n):
                blocks.append(make_block(block, cin, planes, 2 if (s > 0 and i == 0) else 1, next(modes)))
                cin = planes * EXPANSION[block]
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: [B, C, H, W] images (or [B, C, L] signals for a 1-D net).

        Returns:
            [B, classes] logits.
        """
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.pool(x).flatten(1))
