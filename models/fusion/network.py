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
* a 1×1 head gives the output luminance.

**Start where classical fusion ends** (issue 12). With ``use_base`` (the default) the network
computes the guided-filtering fusion (GFF) of the same tile inside the graph
(``guided_base.py``, equal to the plugin's classical ``guided`` method), sees it as an extra
input channel of both encoders, and its head predicts a *correction* added to it. The head is
zero-initialised, so an untrained network returns exactly the classical result and training only
moves away from it where the losses say so. Without ``use_base`` the head predicts the fused
luminance directly (the paper's form; kept for the ablation). Normalisation is GroupNorm
(``norm="group"``) or none: BatchNorm at batch 4 made training and inference disagree. No tanh:
the output is only clamped to the valid range when RGB is recomposed.

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
from .guided_base import GuidedFusionBase

LUMA = (0.299, 0.587, 0.114)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr (BT.601) of an RGB tensor; works in any affine range such as [-1, 1]."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


def recompose_rgb(rgb: torch.Tensor, y_fused: torch.Tensor) -> torch.Tensor:
    """RGB from the fused Y and the optical Cb, Cr (exact YCbCr inverse), clamped to [-1, 1]."""
    return torch.clamp(rgb + (y_fused - luminance(rgb)), -1.0, 1.0)


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


NORMS = ("group", "none", "batch")


def make_norm(ch: int, kind: str = "group") -> nn.Module:
    """GroupNorm (groups of >= 4 channels, at most 8 groups), nothing, or BatchNorm (legacy)."""
    if kind == "group":
        groups = max(g for g in (8, 4, 2, 1) if ch % g == 0 and ch // g >= min(4, ch))
        return nn.GroupNorm(groups, ch)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                norm: str = "group") -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    norm = make_norm(cout, norm)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation,
                                   bias=isinstance(norm, nn.Identity)), norm, act())


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, norm: str = "group"):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn_act(cin, planes, 1, norm=norm)
        self.conv2 = conv_bn_act(planes, planes, 3, stride, norm=norm)
        self.conv3 = nn.Sequential(nn.Conv2d(planes, cout, 1, bias=False), make_norm(cout, norm))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(cout, norm)))
        self.act = act()

    def forward(self, x):
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.short(x))


class ResNetEncoder(nn.Module):
    """ResNet-50-style multi-level encoder: returns 5 feature maps (H, H/2, H/4, H/8, H/16)."""

    def __init__(self, in_ch: int, width: int = 64, blocks: Sequence[int] = (3, 4, 6, 3), norm: str = "group"):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_ch, width, norm=norm), conv_bn_act(width, width, norm=norm))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers = [Bottleneck(cin, planes, stride=2, norm=norm)]
            cin = planes * Bottleneck.expansion
            layers += [Bottleneck(cin, planes, norm=norm) for _ in range(n - 1)]
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

    def __init__(self, ch: int, norm: str = "group"):
        super().__init__()
        self.reduce = conv_bn_act(2 * ch, ch, 1, norm=norm)
        self.cbam = CBAM(ch)

    def forward(self, a, b):
        return self.cbam(self.reduce(torch.cat([a, b], 1))) + a + b


class AddFusion(nn.Module):
    def forward(self, a, b):
        return a + b


class DenseASPP(nn.Module):
    """DenseASPP (Yang et al. 2018): atrous branches densely connected, each sees the input
    and all previous branch outputs; output projected back to ``ch`` channels."""

    def __init__(self, ch: int, dilations: Sequence[int] = (3, 6, 12, 18), growth: Optional[int] = None,
                 norm: str = "group"):
        super().__init__()
        growth = growth or max(ch // 4, 8)
        mid = max(ch // 2, 8)
        self.branches = nn.ModuleList()
        cin = ch
        for d in dilations:
            self.branches.append(nn.Sequential(conv_bn_act(cin, mid, 1, norm=norm),
                                               conv_bn_act(mid, growth, 3, dilation=d, norm=norm)))
            cin += growth
        self.project = conv_bn_act(cin, ch, 1, norm=norm)

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

    def __init__(self, channels: Sequence[int], norm: str = "group"):
        super().__init__()
        self.levels = len(channels)
        self.channels = list(channels)
        self.inputs_of: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
        self.nodes = nn.ModuleDict()
        for j in range(1, self.levels):
            for i in range(self.levels - j):
                self.inputs_of[(i, j)] = [(i, j - 1), (i + 1, j - 1)]
                cin = channels[i] + channels[i + 1]
                self.nodes[f"{i}_{j}"] = nn.Sequential(conv_bn_act(cin, channels[i], norm=norm),
                                                       conv_bn_act(channels[i], channels[i], norm=norm))
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
    """SAR + optical luminance (+ optional pseudo-modal images) -> fused luminance, all [-1, 1].

    ``use_base``: both encoders also see the in-graph GFF result of the tile, and the output is
    that result plus a learned correction from a zero-initialised head (see the module docstring).
    """

    def __init__(self, width: int = 64, blocks: Sequence[int] = (3, 4, 6, 3),
                 cbam_levels: Sequence[int] = (3, 4, 5), aspp_dilations: Sequence[int] = (3, 6, 12, 18),
                 use_pseudo: bool = False, use_base: bool = True, norm: str = "group"):
        super().__init__()
        self.use_pseudo, self.use_base, self.norm = use_pseudo, use_base, norm
        in_ch = 1 + int(use_pseudo) + int(use_base)
        self.enc_sar = ResNetEncoder(in_ch, width, blocks, norm)
        self.enc_opt = ResNetEncoder(in_ch, width, blocks, norm)
        ch = self.enc_sar.channels
        self.cbam_levels = [int(v) for v in cbam_levels]   # 1-based levels
        self.fuse = nn.ModuleList([CBAMFusion(c, norm) if (i + 1) in self.cbam_levels else AddFusion()
                                   for i, c in enumerate(ch)])
        self.aspp = DenseASPP(ch[-1], aspp_dilations, norm=norm)
        self.decoder = LSNFDecoder(ch, norm)
        self.head = nn.Conv2d(ch[0], 1, 1)
        if use_base:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.base = GuidedFusionBase()
        self.downsampling = 2 ** len(blocks)

    def classical_base(self, sar, y):
        """GFF(Y, SAR) of the tile in [-1, 1] (the classical module works in [0, 1])."""
        return self.base(0.5 * (y + 1.0), 0.5 * (sar + 1.0)) * 2.0 - 1.0

    def forward_with_base(self, sar, y, pseudo_sar=None, pseudo_opt=None):
        s_in, o_in = [sar], [y]
        if self.use_pseudo:
            s_in.append(pseudo_sar)
            o_in.append(pseudo_opt)
        base = None
        if self.use_base:
            base = self.classical_base(sar, y)
            s_in.append(base)
            o_in.append(base)
        fs, fo = self.enc_sar(torch.cat(s_in, 1)), self.enc_opt(torch.cat(o_in, 1))
        fused = [f(a, b) for f, a, b in zip(self.fuse, fs, fo)]
        fused[-1] = self.aspp(fused[-1])
        out = self.head(self.decoder(fused))
        return (out + base if base is not None else out), base

    def forward(self, sar, y, pseudo_sar=None, pseudo_opt=None):
        return self.forward_with_base(sar, y, pseudo_sar, pseudo_opt)[0]


class FusionPipeline(nn.Module):
    """What gets exported: optical RGB + real SAR (1 band) -> fused RGB, all in [-1, 1].

    Frozen CycleGAN generators (when the net uses pseudo-modal inputs) are part of the graph,
    so the ONNX needs only the two real images. A grey optical image given as R = G = B stays
    grey (its Cb, Cr are zero)."""

    def __init__(self, net: HierarchicalFusionNet, G_s2o: Optional[nn.Module] = None,
                 G_o2s: Optional[nn.Module] = None):
        super().__init__()
        self.net, self.G_s2o, self.G_o2s = net, G_s2o, G_o2s

    def fused_y(self, sar, optical):
        y = luminance(optical)
        if self.net.use_pseudo:
            return self.net(sar, y, self.G_o2s(y), self.G_s2o(sar))
        return self.net(sar, y)

    def forward(self, optical, sar):
        return recompose_rgb(optical, self.fused_y(sar, optical))

    @property
    def size_multiple(self) -> int:
        m = self.net.downsampling
        if self.net.use_pseudo:
            m = max(m, 4)
        return m


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
