"""Stage 2: hierarchical SAR–optical fusion network (seed 001, Yan et al. 2025).

* one ResNet-50-style encoder per modality (bottleneck blocks, LeakyReLU, inputs in
  [-1, 1], trained from scratch, width configurable), 5 feature levels:
  level 1 = stem at full resolution, levels 2-5 = the four bottleneck stages at 1/2 … 1/16
  (channels ``w, 4w, 8w, 16w, 32w``; ``blocks=[3, 4, 6, 3]`` is ResNet-50's depth);
* level-wise fusion: CBAM attention at 3 levels and element-wise addition at 2
  (default CBAM at levels 3, 4, 5 and addition at the detail levels 1, 2; configurable);
* DenseASPP on the fused deepest level;
* the Layered Strictly Nested (LSNF) decoder: nodes ``X[i][j]`` (level i, column j) as in
  UNet++, but node ``X[i][j]`` receives **only** ``X[i][j-1]`` (its own level, previous
  column) and the upsampled ``X[i+1][j-1]`` (the adjacent deeper level) — no dense skips
  to older columns, no jumps over levels; the output is ``X[0][4]``;
* a 1×1 head + tanh gives the fused luminance in [-1, 1].

Colour: the network fuses the luminance Y of the optical image with SAR;
``recompose_rgb`` puts the optical chroma back (YCbCr with the original Cb, Cr; being
linear, that is ``RGB + (Y_fused - Y)`` per channel).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cyclegan import PatchDiscriminator  # noqa: F401  (the fusion discriminator)

LUMA = (0.299, 0.587, 0.114)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr (BT.601) of an RGB tensor; works in any affine range such as [-1, 1]."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


def recompose_rgb(rgb: torch.Tensor, y_fused: torch.Tensor) -> torch.Tensor:
    """RGB from the fused Y and the optical Cb, Cr (exact YCbCr inverse), clamped to [-1, 1]."""
    return torch.clamp(rgb + (y_fused - luminance(rgb)), -1.0, 1.0)


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), act())


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn_act(cin, planes, 1)
        self.conv2 = conv_bn_act(planes, planes, 3, stride)
        self.conv3 = nn.Sequential(nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = act()

    def forward(self, x):
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.short(x))


class ResNetEncoder(nn.Module):
    """ResNet-50-style multi-level encoder: returns 5 feature maps (H, H/2, H/4, H/8, H/16)."""

    def __init__(self, in_ch: int, width: int = 64, blocks: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_ch, width), conv_bn_act(width, width))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers = [Bottleneck(cin, planes, stride=2)]
            cin = planes * Bottleneck.expansion
            layers += [Bottleneck(cin, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.channels = [width] + [width * 2 ** i * Bottleneck.expansion for i in range(len(blocks))]

    def forward(self, x) -> List[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel then spatial attention."""

    def __init__(self, ch: int, reduction: int = 8, kernel: int = 7):
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(ch, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, ch, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        ca = torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True)))
        x = x * ca
        sa = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * sa


class CBAMFusion(nn.Module):
    """Fuse two same-shape feature maps: concat -> 1×1 conv -> CBAM (+ the element-wise sum)."""

    def __init__(self, ch: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(2 * ch, ch, 1, bias=False), nn.BatchNorm2d(ch), act())
        self.cbam = CBAM(ch)

    def forward(self, a, b):
        return self.cbam(self.reduce(torch.cat([a, b], 1))) + a + b


class AddFusion(nn.Module):
    def forward(self, a, b):
        return a + b


class DenseASPP(nn.Module):
    """DenseASPP (Yang et al. 2018): atrous branches densely connected, each sees the input
    and all previous branch outputs; output projected back to ``ch`` channels."""

    def __init__(self, ch: int, dilations: Sequence[int] = (3, 6, 12, 18), growth: Optional[int] = None):
        super().__init__()
        growth = growth or max(ch // 4, 8)
        mid = max(ch // 2, 8)
        self.branches = nn.ModuleList()
        cin = ch
        for d in dilations:
            self.branches.append(nn.Sequential(conv_bn_act(cin, mid, 1), conv_bn_act(mid, growth, 3, dilation=d)))
            cin += growth
        self.project = conv_bn_act(cin, ch, 1)

    def forward(self, x):
        feats = [x]
        for branch in self.branches:
            feats.append(branch(torch.cat(feats, 1)))
        return self.project(torch.cat(feats, 1))


class LSNFDecoder(nn.Module):
    """Layered Strictly Nested decoder over ``L`` levels.

    ``inputs_of[(i, j)]`` is the complete list of what node ``X[i][j]`` (j >= 1) receives:
    ``[(i, j - 1), (i + 1, j - 1)]``; ``forward`` builds every node from exactly that list, so
    the structure can be checked (and is, in the tests).
    """

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.levels = len(channels)
        self.channels = list(channels)
        self.inputs_of: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
        self.nodes = nn.ModuleDict()
        for j in range(1, self.levels):
            for i in range(self.levels - j):
                self.inputs_of[(i, j)] = [(i, j - 1), (i + 1, j - 1)]
                cin = channels[i] + channels[i + 1]
                self.nodes[f"{i}_{j}"] = nn.Sequential(conv_bn_act(cin, channels[i]),
                                                       conv_bn_act(channels[i], channels[i]))
        self.last_trace: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}

    def node_order(self):
        return [(i, j) for j in range(1, self.levels) for i in range(self.levels - j)]

    def forward(self, feats: Sequence[torch.Tensor], return_all: bool = False):
        x: Dict[Tuple[int, int], torch.Tensor] = {(i, 0): f for i, f in enumerate(feats)}
        self.last_trace = {}
        for (i, j) in self.node_order():
            srcs = self.inputs_of[(i, j)]
            target = x[srcs[0]]
            parts = [x[k] if k[0] == i else
                     F.interpolate(x[k], size=target.shape[-2:], mode="bilinear", align_corners=False)
                     for k in srcs]
            self.last_trace[(i, j)] = list(srcs)
            x[(i, j)] = self.nodes[f"{i}_{j}"](torch.cat(parts, 1))
        out = x[(0, self.levels - 1)]
        return (out, x) if return_all else out


class HierarchicalFusionNet(nn.Module):
    """SAR + optical luminance (+ optional pseudo-modal images) -> fused luminance, all [-1, 1]."""

    def __init__(self, width: int = 64, blocks: Sequence[int] = (3, 4, 6, 3),
                 cbam_levels: Sequence[int] = (3, 4, 5), aspp_dilations: Sequence[int] = (3, 6, 12, 18),
                 use_pseudo: bool = False):
        super().__init__()
        self.use_pseudo = use_pseudo
        in_ch = 2 if use_pseudo else 1
        self.enc_sar = ResNetEncoder(in_ch, width, blocks)
        self.enc_opt = ResNetEncoder(in_ch, width, blocks)
        ch = self.enc_sar.channels
        self.cbam_levels = [int(v) for v in cbam_levels]   # 1-based levels
        self.fuse = nn.ModuleList([CBAMFusion(c) if (i + 1) in self.cbam_levels else AddFusion()
                                   for i, c in enumerate(ch)])
        self.aspp = DenseASPP(ch[-1], aspp_dilations)
        self.decoder = LSNFDecoder(ch)
        self.head = nn.Conv2d(ch[0], 1, 1)
        self.downsampling = 2 ** len(blocks)

    def forward(self, sar, y, pseudo_sar=None, pseudo_opt=None):
        if self.use_pseudo:
            s_in, o_in = torch.cat([sar, pseudo_sar], 1), torch.cat([y, pseudo_opt], 1)
        else:
            s_in, o_in = sar, y
        fs, fo = self.enc_sar(s_in), self.enc_opt(o_in)
        fused = [f(a, b) for f, a, b in zip(self.fuse, fs, fo)]
        fused[-1] = self.aspp(fused[-1])
        return torch.tanh(self.head(self.decoder(fused)))


class FusionPipeline(nn.Module):
    """What gets exported: real SAR (1 band) + optical RGB -> fused RGB, all in [-1, 1].

    Frozen CycleGAN generators (when the net uses pseudo-modal inputs) are part of the graph,
    so the ONNX needs only the two real images."""

    def __init__(self, net: HierarchicalFusionNet, G_s2o: Optional[nn.Module] = None,
                 G_o2s: Optional[nn.Module] = None):
        super().__init__()
        self.net, self.G_s2o, self.G_o2s = net, G_s2o, G_o2s

    def fused_y(self, sar, optical):
        y = luminance(optical)
        if self.net.use_pseudo:
            return self.net(sar, y, self.G_o2s(y), self.G_s2o(sar))
        return self.net(sar, y)

    def forward(self, sar, optical):
        return recompose_rgb(optical, self.fused_y(sar, optical))

    @property
    def size_multiple(self) -> int:
        m = self.net.downsampling
        if self.net.use_pseudo:
            m = max(m, 4)
        return m


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
