"""UNets of DE, after guided diffusion (Dhariwal & Nichol): sinusoidal timestep embedding,
residual blocks with scale-shift norm, multi-head self-attention at the configured
downsample factors, channel multipliers per level.

- ``ConditionalNoisePredictor`` (CNP): eps_hat = UNet(concat(x_t, y), t) (paper). Two switches
  (keys of the CNP config, so a run's ``config["cnp"]`` rebuilds the same graph):
  ``condition: "cloudy+reference"`` adds x0_E to the UNet input (concat(x_t, y, x0_E));
  ``prediction: "residual"`` makes the UNet predict r = x0 - x0_E and converts x0_E + r to eps
  inside the graph with the schedule (eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)), so the
  step graph keeps its (x_t, t, cloudy, reference) -> (eps, weight) interface. The UNet's last
  convolution starts at zero, so an untrained residual CNP predicts x0 = x0_E exactly: the
  diffusion stage starts from "no change to E" and can only learn to add.
- ``WeightAllocationNet`` (WA): W = sigmoid(UNet(concat(x_t, y, x0_E), t)), W in [0, 1]^(C,H,W);
  the clamp to [eta, 1] happens at inference only (``gaussian.clamp_weight``).

``attention_resolutions`` are downsample factors (1 = full size, 2, 4, ...), as in the
guided-diffusion code. Presets: ``PRESETS`` (``cnp-small``/``wa-small`` for CPU, ``cnp-paper``/
``wa-paper`` = Table IV of the paper, ``*-tiny`` for tests).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ...plugin.core.pipelines.optical_cloud_removal import BETA_END, BETA_START, T_DEFAULT, alphas_cumprod

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
    # the residual, reference-conditioned CNP of the CPU recipe (scripts/train_de.sh): ~0.41 M
    # parameters, attention only at 1/8 (cheap on 256² tiles), 4 levels for a wider receptive field
    "cnp-cpu": dict(model_channels=16, channel_mult=[1, 2, 2, 2], num_res_blocks=1,
                    attention_resolutions=[8], num_heads=1, dropout=0.0),
    # its GPU variant (scripts/train_de.sh --gpu): ~1.6 M parameters
    "cnp-gpu": dict(model_channels=32, channel_mult=[1, 2, 2, 2], num_res_blocks=1,
                    attention_resolutions=[8], num_heads=2, dropout=0.0),
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


CONDITIONS = ("cloudy", "cloudy+reference")
PREDICTIONS = ("eps", "residual")


def cnp_options(config) -> Dict:
    """``condition`` and ``prediction`` of a CNP config (paper defaults when absent)."""
    config = {} if isinstance(config, str) else dict(config)
    options = {"condition": config.get("condition", "cloudy"), "prediction": config.get("prediction", "eps")}
    if options["condition"] not in CONDITIONS:
        raise ValueError(f"cnp condition must be one of {CONDITIONS}, got {options['condition']!r}")
    if options["prediction"] not in PREDICTIONS:
        raise ValueError(f"cnp prediction must be one of {PREDICTIONS}, got {options['prediction']!r}")
    return options


class ConditionalNoisePredictor(nn.Module):
    """eps_hat = UNet(concat(x_t, y[, x0_E]), t); with ``prediction="residual"`` the UNet output is
    x0 - x0_E and ``forward`` returns the eps it implies (see the module docstring).

    ``schedule`` (T, beta_start, beta_end) is only used by the residual form (a constant abar_t
    table in the graph, not a weight: it is rebuilt from the run's config)."""

    def __init__(self, bands: int, config, schedule: Optional[Dict] = None):
        super().__init__()
        options = cnp_options(config)
        self.condition, self.prediction = options["condition"], options["prediction"]
        self.uses_reference = self.condition == "cloudy+reference" or self.prediction == "residual"
        kwargs = _unet_kwargs(config)
        for key in ("condition", "prediction"):
            kwargs.pop(key, None)
        in_channels = (3 if self.condition == "cloudy+reference" else 2) * bands
        self.unet = UNet(in_channels, bands, **kwargs)
        self.size_multiple = self.unet.size_multiple
        schedule = dict(schedule or {})
        abar = alphas_cumprod(int(schedule.get("T", T_DEFAULT)), float(schedule.get("beta_start", BETA_START)),
                              float(schedule.get("beta_end", BETA_END)))
        self.register_buffer("abar", torch.from_numpy(abar).float(), persistent=False)

    def raw(self, x_t, t, y, x0_e=None):
        """The UNet output: eps (``prediction="eps"``) or the residual x0 - x0_E."""
        parts = [x_t, y]
        if self.condition == "cloudy+reference":
            parts.append(self._need(x0_e))
        return self.unet(torch.cat(parts, dim=1), t)

    def forward(self, x_t, t, y, x0_e=None):
        out = self.raw(x_t, t, y, x0_e)
        if self.prediction == "eps":
            return out
        return self.eps_from_x0(x_t, t, self._need(x0_e) + out)

    def eps_from_x0(self, x_t, t, x0):
        index = t.round().clamp(0, self.abar.shape[0] - 1).long()
        a = self.abar[index].reshape(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    def _need(self, x0_e):
        if x0_e is None:
            raise ValueError(f"this CNP (condition={self.condition!r}, prediction={self.prediction!r}) "
                             "needs the reference output x0_E")
        return x0_e


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
        return self.cnp(x_t, t, cloudy, reference), self.wa(x_t, t, cloudy, reference)
