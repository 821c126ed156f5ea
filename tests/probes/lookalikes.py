"""Small models for the probe tests: landscape-style blocks (FC, tokens, conv) written here to the
landscape contract, and look-alikes of third-party blocks (torchvision BasicBlock and VisionTransformer,
timm ViT Block and ConvNeXt), so the probes are tested on structures they must recognise without
importing those libraries. The look-alikes keep their originals' module names, nesting and forward
arithmetic (torchvision 0.2x `models/vision_transformer.py`, timm 1.0 `models/convnext.py`); only sizes,
initialization and options the probes never see (pretrained weights, gradient checkpointing) differ."""

from __future__ import annotations

from collections import OrderedDict

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


# ---- torchvision VisionTransformer: encoder.layers.encoder_layer_<i> are EncoderBlocks ----

class MLPBlock(nn.Sequential):
    """torchvision `MLPBlock` (a `torchvision.ops.MLP`): Linear, GELU, Dropout, Linear, Dropout."""

    def __init__(self, d: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__(nn.Linear(d, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, d),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    """torchvision `EncoderBlock`: x = dropout(self_attention(ln_1(input))) + input; return x + mlp(ln_2(x))."""

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout)

    def forward(self, input):
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x)
        x = x + input
        y = self.ln_2(x)
        y = self.mlp(y)
        return x + y


class Encoder(nn.Module):
    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim)) for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, input):
        return self.ln(self.layers(self.dropout(input + self.pos_embedding)))


class TorchvisionViT(nn.Module):
    """torchvision `VisionTransformer`: conv_proj patches, class token, encoder, heads.head on the class token."""

    def __init__(self, image_size=8, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
                 num_classes=3):
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


# ---- timm ConvNeXt: stages.<i>.blocks.<j> are ConvNeXtBlocks ----

class LayerNorm2d(nn.LayerNorm):
    """timm `LayerNorm2d`: LayerNorm over the channels of [B, C, H, W]."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class TimmMlp(nn.Module):
    """timm `Mlp`: fc1, act, drop1, norm, fc2, drop2."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(d, hidden), nn.GELU(), nn.Dropout(0.0)
        self.norm, self.fc2, self.drop2 = nn.Identity(), nn.Linear(hidden, d), nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class ConvNeXtBlock(nn.Module):
    """timm `ConvNeXtBlock` (conv_mlp=False): x = drop_path(γ · mlp(norm(conv_dw(x)))) + shortcut(x)."""

    def __init__(self, c: int, ls_init_value: float = 0.5):
        super().__init__()
        self.use_conv_mlp = False
        self.conv_dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.mlp = TimmMlp(c, 4 * c)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(c))
        self.shortcut = nn.Identity()
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        x = x.permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


class ConvNeXtStage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int):
        super().__init__()
        self.downsample = nn.Identity() if cin == cout else nn.Sequential(LayerNorm2d(cin, eps=1e-6),
                                                                          nn.Conv2d(cin, cout, 2, stride=2))
        self.blocks = nn.Sequential(*[ConvNeXtBlock(cout) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class NormMlpClassifierHead(nn.Module):
    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.norm, self.fc = LayerNorm2d(c, eps=1e-6), nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class TimmConvNeXt(nn.Module):
    """timm `ConvNeXt`: stem (patchify conv + LayerNorm2d), stages, norm_pre, head."""

    def __init__(self, dims=(4, 6), depths=(2, 1), num_classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 2, stride=2), LayerNorm2d(dims[0], eps=1e-6))
        cins = (dims[0], *dims[:-1])
        self.stages = nn.Sequential(*[ConvNeXtStage(a, b, d) for a, b, d in zip(cins, dims, depths)])
        self.norm_pre = nn.Identity()
        self.head = NormMlpClassifierHead(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.norm_pre(self.stages(self.stem(x))))
