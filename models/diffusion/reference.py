"""Reference network E: an MSDA-CR-like multiscale dilated residual network.

MSDA-CR (Yu et al.) stacks residual blocks whose branches are 3x3 convolutions with
different dilation rates, fused by a 1x1 convolution and reweighted by channel attention.
This implementation keeps that block and wraps it in a light 2-level encoder/decoder so
the dilated body works at 1/4 resolution (cheap on CPU, large receptive field for thick
clouds). The output is a residual on the cloudy input: ``E(y) = y + head(features)``.

Size: ``channels=12, blocks=2`` ~0.2 M parameters (bundled CPU model); ``channels=16, blocks=3``
~0.49 M;
``channels=32, blocks=6`` ~3.4 M (close to the paper's 3.9 M MSDA-CR).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        w = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(w))))


class MultiScaleDilatedBlock(nn.Module):
    """Parallel dilated 3x3 branches -> concat -> 1x1 fuse -> channel attention -> + x."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations)
        self.fuse = nn.Conv2d(channels * len(dilations), channels, 1)
        self.attention = ChannelAttention(channels)

    def forward(self, x):
        h = torch.cat([F.leaky_relu(b(x), 0.2) for b in self.branches], dim=1)
        return x + self.attention(self.fuse(h))


class ReferenceNet(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 16, blocks: int = 3,
                 dilations: Sequence[int] = (1, 2, 4)):
        super().__init__()
        c = channels
        self.in_channels = in_channels
        self.head = nn.Conv2d(in_channels, c, 3, padding=1)
        self.enc1 = MultiScaleDilatedBlock(c, dilations)
        self.down1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.enc2 = MultiScaleDilatedBlock(2 * c, dilations)
        self.down2 = nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1)
        self.body = nn.Sequential(*[MultiScaleDilatedBlock(4 * c, dilations) for _ in range(blocks)])
        self.up2 = nn.Conv2d(4 * c, 2 * c * 4, 1)
        self.dec2 = MultiScaleDilatedBlock(2 * c, dilations)
        self.up1 = nn.Conv2d(2 * c, c * 4, 1)
        self.dec1 = MultiScaleDilatedBlock(c, dilations)
        self.tail = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    size_multiple = 4

    def forward(self, y):
        f1 = self.enc1(F.leaky_relu(self.head(y), 0.2))
        f2 = self.enc2(F.leaky_relu(self.down1(f1), 0.2))
        h = self.body(F.leaky_relu(self.down2(f2), 0.2))
        h = self.dec2(F.pixel_shuffle(self.up2(h), 2) + f2)
        h = self.dec1(F.pixel_shuffle(self.up1(h), 2) + f1)
        return y + self.tail(h)


def build_reference(config: dict, in_channels: int) -> ReferenceNet:
    return ReferenceNet(in_channels=in_channels, channels=int(config.get("channels", 16)),
                        blocks=int(config.get("blocks", 3)),
                        dilations=tuple(config.get("dilations", (1, 2, 4))))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
