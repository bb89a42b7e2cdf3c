"""UNets of DE, after guided diffusion (Dhariwal & Nichol): sinusoidal timestep embedding,
residual blocks with scale-shift norm, multi-head self-attention at the configured
downsample factors, channel multipliers per level.

- ``ConditionalNoisePredictor`` (CNP): eps_hat = UNet(concat(x_t, y), t).
- ``WeightAllocationNet`` (WA): W = sigmoid(UNet(concat(x_t, y, x0_E), t)), W in [0, 1]^(C,H,W);
  the clamp to [eta, 1] happens at inference only (``gaussian.clamp_weight``).

``attention_resolutions`` are downsample factors (1 = full size, 2, 4, ...), as in the
guided-diffusion code. Presets: ``PRESETS`` (``cnp-small``/``wa-small`` for CPU, ``cnp-paper``/
``wa-paper`` = Table IV of the paper, ``*-tiny`` for tests).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
from torch import nn
import torch.nn.functional as F

PRESETS: Dict[str, Dict] = {
    # paper, Table IV: 96 ch, 2 res blocks, mult (1,1,2,2,3), attention at ds 4 and 8, 4 heads
    "cnp-paper": dict(model_channels=96, channel_mult=[1, 1, 2, 2, 3], num_res_blocks=2,
                      attention_resolutions=[4, 8], num_heads=4, dropout=0.0),
    "wa-paper": dict(model_channels=64, channel_mult=[1, 1, 2], num_res_blocks=2,
                     attention_resolutions=[], num_heads=4, dropout=0.0),
    # CPU presets (what the bundled RICE models use): ~0.3 M and ~0.04 M parameters
    "cnp-small": dict(model_channels=16, channel_mult=[1, 2, 2], num_res_blocks=1,
                      attention_resolutions=[4], num_heads=1, dropout=0.0),
    "wa-small": dict(model_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1,
                     attention_resolutions=[], num_heads=1, dropout=0.0),
    "cnp-tiny": dict(model_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1,
                     attention_resolutions=[4], num_heads=1, dropout=0.0),
    "wa-tiny": dict(model_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1,
                    attention_resolutions=[], num_heads=1, dropout=0.0),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) float timesteps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def norm(channels: int) -> nn.GroupNorm:
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0:
            return nn.GroupNorm(groups, channels)
    return nn.GroupNorm(1, channels)


def zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, then scale-shift norm with the time embedding, SiLU, dropout, conv."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_norm = norm(out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = max(1, num_heads)
        while channels % self.num_heads:
            self.num_heads -= 1
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat[..., None])[..., 0])
        heads, ch = self.num_heads, c // self.num_heads
        q, k, v = qkv.reshape(b * heads, 3 * ch, h * w).split(ch, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        out = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: Sequence[int] = (8,), num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.model_channels = model_channels
        self.size_multiple = 2 ** (len(channel_mult) - 1)
        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        attn = set(int(a) for a in attention_resolutions)
        self.input_conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_ch, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attn:
                    layers.append(AttentionBlock(ch, num_heads))
                self.down.append(nn.ModuleList(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skip_channels.append(ch)
                ds *= 2
        self.middle = nn.ModuleList([ResBlock(ch, emb_ch, ch, dropout), AttentionBlock(ch, num_heads),
                                     ResBlock(ch, emb_ch, ch, dropout)])
        self.up = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_ch, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attn:
                    layers.append(AttentionBlock(ch, num_heads))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.up.append(nn.ModuleList(layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @staticmethod
    def _run_layers(layers, h, emb):
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x, t):
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = self.input_conv(x)
        skips = [h]
        for layers in self.down:
            h = self._run_layers(layers, h, emb)
            skips.append(h)
        h = self._run_layers(self.middle, h, emb)
        for layers in self.up:
            h = self._run_layers(layers, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _unet_kwargs(config) -> Dict:
    if isinstance(config, str):
        config = PRESETS[config]
    config = dict(config)
    if "preset" in config:
        base = dict(PRESETS[config.pop("preset")])
        base.update(config)
        config = base
    return config


class ConditionalNoisePredictor(nn.Module):
    """eps_hat = UNet(concat(x_t, y), t)."""

    def __init__(self, bands: int, config):
        super().__init__()
        self.unet = UNet(2 * bands, bands, **_unet_kwargs(config))
        self.size_multiple = self.unet.size_multiple

    def forward(self, x_t, t, y):
        return self.unet(torch.cat([x_t, y], dim=1), t)


class WeightAllocationNet(nn.Module):
    """W = sigmoid(UNet(concat(x_t, y, x0_E), t)) in [0, 1]."""

    def __init__(self, bands: int, config, init_bias: float = 0.0):
        super().__init__()
        self.unet = UNet(3 * bands, bands, **_unet_kwargs(config))
        self.size_multiple = self.unet.size_multiple
        nn.init.constant_(self.unet.out[-1].bias, init_bias)

    def forward(self, x_t, t, y, x0_e):
        return torch.sigmoid(self.unet(torch.cat([x_t, y, x0_e], dim=1), t))


class StepNet(nn.Module):
    """The per-step graph exported to ONNX: (x_t, t, cloudy, reference) -> (eps, weight)."""

    def __init__(self, cnp: ConditionalNoisePredictor, wa: WeightAllocationNet):
        super().__init__()
        self.cnp, self.wa = cnp, wa

    def forward(self, x_t, t, cloudy, reference):
        return self.cnp(x_t, t, cloudy), self.wa(x_t, t, cloudy, reference)
