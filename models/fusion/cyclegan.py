"""Stage 1: CycleGAN cross-modal enhancement (Zhu et al. 2017) on single-band images.

``G_s2o``: SAR -> pseudo-optical luminance; ``G_o2s``: optical luminance -> pseudo-SAR.
ResNet-style generators (c7s1-w, two stride-2 downsamplings, n residual blocks, two
upsamplings, c7s1-1 + tanh), 70×70-style PatchGAN discriminators, LSGAN losses.

Normalisation is BatchNorm by default (``norm="batch"``): at inference it uses fixed
statistics, so tiled inference gives the same result whatever the tile (instance norm
would make every tile's output depend on the tile's own statistics and show seams).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ResBlock(nn.Module):
    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), _norm(norm, ch), nn.ReLU(True),
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), _norm(norm, ch))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """1-band [-1, 1] -> 1-band [-1, 1]; needs H, W divisible by 4."""

    downsampling = 4

    def __init__(self, in_ch: int = 1, out_ch: int = 1, width: int = 32, blocks: int = 6, norm: str = "batch"):
        super().__init__()
        w = width
        layers = [nn.Conv2d(in_ch, w, 7, padding=3, padding_mode="reflect"), _norm(norm, w), nn.ReLU(True),
                  nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), _norm(norm, 2 * w), nn.ReLU(True),
                  nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), _norm(norm, 4 * w), nn.ReLU(True)]
        layers += [ResBlock(4 * w, norm) for _ in range(blocks)]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4 * w, 2 * w, 3, padding=1),
                   _norm(norm, 2 * w), nn.ReLU(True),
                   nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1),
                   _norm(norm, w), nn.ReLU(True),
                   nn.Conv2d(w, out_ch, 7, padding=3, padding_mode="reflect"), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores (LSGAN, no sigmoid)."""

    def __init__(self, in_ch: int = 1, width: int = 32, layers: int = 3):
        super().__init__()
        mods = [nn.Conv2d(in_ch, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, layers):
            nxt = min(width * 2 ** i, width * 8)
            mods += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), nn.BatchNorm2d(nxt), nn.LeakyReLU(0.2, True)]
            ch = nxt
        nxt = min(ch * 2, width * 8)
        mods += [nn.Conv2d(ch, nxt, 4, padding=1), nn.BatchNorm2d(nxt), nn.LeakyReLU(0.2, True),
                 nn.Conv2d(nxt, 1, 4, padding=1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


class CycleGAN(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 6, d_width: int = 32, d_layers: int = 3, norm: str = "batch"):
        super().__init__()
        self.G_s2o = ResnetGenerator(1, 1, width, blocks, norm)
        self.G_o2s = ResnetGenerator(1, 1, width, blocks, norm)
        self.D_o = PatchDiscriminator(1, d_width, d_layers)
        self.D_s = PatchDiscriminator(1, d_width, d_layers)

    def generator_losses(self, sar, opt_y, lambda_cycle=10.0, lambda_identity=5.0):
        fake_o, fake_s = self.G_s2o(sar), self.G_o2s(opt_y)
        adv = lsgan(self.D_o(fake_o), True) + lsgan(self.D_s(fake_s), True)
        cyc = F.l1_loss(self.G_o2s(fake_o), sar) + F.l1_loss(self.G_s2o(fake_s), opt_y)
        losses = {"adv": adv, "cycle": cyc}
        total = adv + lambda_cycle * cyc
        if lambda_identity > 0:
            idt = F.l1_loss(self.G_s2o(opt_y), opt_y) + F.l1_loss(self.G_o2s(sar), sar)
            losses["identity"] = idt
            total = total + lambda_identity * idt
        losses["total"] = total
        return losses, fake_o.detach(), fake_s.detach()

    def discriminator_loss(self, sar, opt_y, fake_o, fake_s):
        return 0.5 * (lsgan(self.D_o(opt_y), True) + lsgan(self.D_o(fake_o), False)
                      + lsgan(self.D_s(sar), True) + lsgan(self.D_s(fake_s), False))
