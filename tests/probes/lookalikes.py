"""Small models for the probe tests: landscape-style blocks (FC, tokens, conv) written here to the
landscape contract, and look-alikes of third-party blocks (torchvision BasicBlock, timm ViT Block),
so the probes are tested on structures they must recognise without importing those libraries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Connect(nn.Module):
    """Contract look-alike: forward(x, f), attributes mode and reduce_dims; never in place."""

    def __init__(self, mode: str = "identity", reduce_dims=(-1,), eps: float = 1e-6):
        super().__init__()
        self.mode, self.reduce_dims, self.eps = mode, tuple(reduce_dims), eps

    def forward(self, x, f):
        if self.mode == "none":
            return f
        if self.mode == "identity":
            return x + f
        dot = (x * f).sum(self.reduce_dims, keepdim=True)
        n2 = (x * x).sum(self.reduce_dims, keepdim=True) + self.eps
        return x + f - dot / n2 * x


class Branch(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return F.relu(self.lin(x))


class FCBlock(nn.Module):
    def __init__(self, width: int, mode: str = "identity"):
        super().__init__()
        self.branch_linear = nn.Linear(width, width)
        self.branch = Branch(self.branch_linear)
        self.connect = Connect(mode, (-1,))

    def forward(self, x):
        return self.connect(x, self.branch(x))


class FCNet(nn.Module):
    def __init__(self, in_dim=6, width=8, depth=4, n_classes=3, mode="identity"):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(FCBlock(width, mode) for _ in range(depth))
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        x = F.relu(self.inp(x))
        for b in self.blocks:
            x = b(x)
        return self.out(x)


class TokenBlock(nn.Module):
    """Pre-LN transformer-ish block with two Connects (connect_attn, connect_mlp) on [B, T, d]."""

    def __init__(self, d: int, mode: str = "identity"):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mix = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.connect_attn = Connect(mode, (-1,))
        self.connect_mlp = Connect(mode, (-1,))

    def forward(self, x):
        a = self.mix(self.ln1(x)).mean(1, keepdim=True).expand_as(x) + self.mix(self.ln1(x))
        x = self.connect_attn(x, a)
        return self.connect_mlp(x, self.mlp(self.ln2(x)))


class TokenNet(nn.Module):
    def __init__(self, d=6, depth=2, n_classes=3, mode="identity"):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.blocks = nn.ModuleList(TokenBlock(d, mode) for _ in range(depth))
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):  # x: [B, T, 4]
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(1))


class ConvBlock(nn.Module):
    def __init__(self, c: int, mode: str = "identity", reduce_dims=(1,)):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.connect = Connect(mode, reduce_dims)

    def forward(self, x):
        return self.connect(x, torch.tanh(self.conv(x)))


class ConvNet(nn.Module):
    def __init__(self, c=3, depth=2, n_classes=3, mode="identity", reduce_dims=(1,)):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 3, padding=1)
        self.blocks = nn.ModuleList(ConvBlock(c, mode, reduce_dims) for _ in range(depth))
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


class BasicBlock(nn.Module):
    """torchvision BasicBlock look-alike: post-activation, `out += identity`, in-place ReLU."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """torchvision-ResNet look-alike: conv1/bn1 stem, layer1 (2 blocks), layer2 (stride 2, downsample)."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 6, 2), BasicBlock(6, 6))
        self.fc = nn.Linear(6, n_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


class Mlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.proj(F.scaled_dot_product_attention(q, k, v))


class TimmBlock(nn.Module):
    """timm ViT `Block` look-alike: x = x + drop_path1(ls1(attn(norm1(x)))); same with mlp."""

    def __init__(self, d):
        super().__init__()
        self.norm1, self.attn, self.ls1, self.drop_path1 = nn.LayerNorm(d), Attention(d), nn.Identity(), nn.Identity()
        self.norm2, self.mlp, self.ls2, self.drop_path2 = nn.LayerNorm(d), Mlp(d), nn.Identity(), nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class TinyViT(nn.Module):
    def __init__(self, d=8, depth=2, n_classes=3):
        super().__init__()
        self.patch_embed = nn.Linear(4, d)
        self.blocks = nn.Sequential(*[TimmBlock(d) for _ in range(depth)])
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        return self.head(self.blocks(self.patch_embed(x)).mean(1))
