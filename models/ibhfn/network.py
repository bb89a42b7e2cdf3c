"""IB-HFN (information-bottleneck hierarchical fusion network) and a DSen2-CR-style baseline.

Both networks take ``optical`` (B, 13, H, W) and ``sar`` (B, 2, H, W) in network units
(see ``data.S2_BANDS`` / ``data.S1_BANDS``) and return ``(restored, clear_prob)`` in eval
mode (this is the ONNX graph) and ``(restored, clear_prob, kl)`` in training mode.
H and W must be multiples of ``size_multiple`` (2 ** depth for IB-HFN, 1 for the baseline).

IB-HFN (methods.md section 1):
- dual-stream encoders (separate SAR and optical weights; ``depth`` stride-2 stages of
  ``blocks`` residual blocks each, widths ``width * 2**i``); no early concatenation;
- SIBF: 1x1 convs predict per-channel, per-position mu and log sigma^2 of SAR features;
  z = mu + sigma * eps while training, z = mu in eval; KL(q || N(0, I)) averaged over
  elements. z is fused with the optical features by concat + conv at the deepest level;
- local-global gating: the clear-sky map m in [0, 1] is predicted from the full-resolution
  optical stem features (local, convolutions) modulated by pooled deepest optical features
  (global context);
- clear-area path S on the cloudy optical input (a 3x3 conv initialised with
  ``torch.nn.init.dirac_``: identity at start), optionally corrected (``clear_path``);
- decoder D: upsampling stages with the optical (and SAR) encoder features of each level;
- output = m * S(x_opt) + (1 - m) * D(fused).

Options (config ``model`` keys; the defaults reproduce the 1.x networks, so old runs load):
- ``bottleneck``: ``"deep"`` (or true; the SIBF at the deepest level only, while the SAR
  skips of the upper levels reach the decoder unconstrained), ``"all"`` (every SAR feature
  that reaches the decoder passes a variational bottleneck; KL = mean of the per-level KLs,
  which are kept in ``kl_terms`` for logging), ``"none"`` (or false: plain concat, KL = 0);
- ``sar_skips``: false removes the SAR skips, so SAR reaches the decoder only through the
  deepest fusion;
- ``clear_path``: ``"identity"`` (S only), ``"affine"`` (S(x) * (1 + g) + b with per-band
  gain/offset maps predicted at 1/2**depth resolution from the fused features and upsampled
  bilinearly: smooth, local corrections of haze and colour, no per-tile global statistics
  that would show as tile seams), ``"residual"`` (S(x) + R, R a full-resolution head on the
  decoder features). Both heads are zero-initialised, so S stays the identity at start;
- ``upsample``: ``"nearest"`` or ``"bilinear"`` in the decoder;
- ``gating=False`` (output = S(x_opt) + D(fused), a residual; clear_prob is a constant 0),
  ``dirac_skip=False`` (S keeps PyTorch's default random init).

The DSen2-CR-style baseline (Meraner et al. 2020): concat(S1, S2) -> conv -> ResBlocks with
residual scaling 0.1 -> conv -> + x_opt (long residual). It has no cloud estimate: its
``clear_prob`` output is a constant 0 (cloud probability 1 everywhere), so the engine can
treat both models alike and "keep clear pixels" never replaces any of its pixels.
"""
from __future__ import annotations

from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, ch: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class Encoder(nn.Module):
    """Stem (full resolution) + ``depth`` stride-2 stages. Returns the list of features per level."""

    def __init__(self, in_ch: int, width: int, depth: int, blocks: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  *[ResBlock(width) for _ in range(blocks)])
        self.stages = nn.ModuleList()
        ch = width
        for _ in range(depth):
            self.stages.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                             *[ResBlock(ch * 2) for _ in range(blocks)]))
            ch *= 2
        self.out_channels = ch

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class VariationalBottleneck(nn.Module):
    """q(z | F) = N(mu(F), exp(logvar(F))) per channel and position (1x1 convs); z sampled by
    reparameterisation while training, z = mu in eval. Returns (z, KL(q || N(0, I)) averaged)."""

    def __init__(self, ch: int):
        super().__init__()
        self.mu = nn.Conv2d(ch, ch, 1)
        self.logvar = nn.Conv2d(ch, ch, 1)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, 1)), averaged over all elements."""
        return 0.5 * torch.mean(mu.pow(2) + logvar.exp() - logvar - 1.0)

    def forward(self, f):
        mu = self.mu(f)
        logvar = self.logvar(f).clamp(-10.0, 10.0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return z, self.kl(mu, logvar)


class SIBF(nn.Module):
    """Spatial Information Bottleneck Fusion: variational bottleneck on SAR features + fusion."""

    def __init__(self, ch: int, bottleneck: bool = True, blocks: int = 1):
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:  # parameter names mu/logvar kept from 1.x (old checkpoints load)
            self.mu = nn.Conv2d(ch, ch, 1)
            self.logvar = nn.Conv2d(ch, ch, 1)
        self.fuse = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.LeakyReLU(0.2),
                                  *[ResBlock(ch) for _ in range(blocks)])

    kl = staticmethod(VariationalBottleneck.kl)

    def forward(self, f_opt, f_sar):
        if self.bottleneck:
            mu = self.mu(f_sar)
            logvar = self.logvar(f_sar).clamp(-10.0, 10.0)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
            kl = self.kl(mu, logvar)
        else:
            z = f_sar
            kl = f_sar.new_zeros(())
        return self.fuse(torch.cat([f_opt, z], 1)), kl


class LocalGlobalGate(nn.Module):
    """Clear-sky map m from local (full-resolution conv) and global (pooled deep) optical features."""

    def __init__(self, local_ch: int, global_ch: int):
        super().__init__()
        self.global_mlp = nn.Sequential(nn.Linear(global_ch, local_ch), nn.LeakyReLU(0.2),
                                        nn.Linear(local_ch, 2 * local_ch))
        self.local = nn.Sequential(nn.Conv2d(local_ch, local_ch, 3, padding=1), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Conv2d(local_ch, local_ch, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(local_ch, 1, 1))

    def forward(self, f_local, f_global):
        g = self.global_mlp(f_global.mean(dim=(2, 3)))
        scale, shift = g.chunk(2, dim=1)
        h = self.local(f_local) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return torch.sigmoid(self.head(h))


class Decoder(nn.Module):
    def __init__(self, width: int, depth: int, blocks: int, out_ch: int, sar_skips: bool = True,
                 upsample: str = "nearest"):
        super().__init__()
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        self.sar_skips = sar_skips
        self.upsample = upsample
        self.ups = nn.ModuleList()
        ch = width * 2 ** depth
        n_in = 3 if sar_skips else 2
        for _ in range(depth):
            # upsampled deeper features + optical skip (+ SAR skip) of the level above
            self.ups.append(nn.ModuleDict({
                "up": nn.Conv2d(ch, ch // 2, 3, padding=1),
                "merge": nn.Sequential(nn.Conv2d(n_in * (ch // 2), ch // 2, 3, padding=1), nn.LeakyReLU(0.2),
                                       *[ResBlock(ch // 2) for _ in range(blocks)]),
            }))
            ch //= 2
        self.out_channels = ch
        self.out = nn.Conv2d(ch, out_ch, 3, padding=1)

    def features(self, fused, opt_feats, sar_feats):
        """Full-resolution decoder features (before the output conv)."""
        x = fused
        for k, stage in enumerate(self.ups):
            level = len(opt_feats) - 2 - k
            if self.upsample == "nearest":
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = F.leaky_relu(stage["up"](x), 0.2)
            skips = [x, opt_feats[level]] + ([sar_feats[level]] if self.sar_skips else [])
            x = stage["merge"](torch.cat(skips, 1))
        return x

    def forward(self, fused, opt_feats, sar_feats):
        return self.out(self.features(fused, opt_feats, sar_feats))


BOTTLENECKS = ("deep", "all", "none")
CLEAR_PATHS = ("identity", "affine", "residual")


def bottleneck_mode(value: Union[bool, str]) -> str:
    """Config value (true/false from 1.x configs, or a name) -> one of ``BOTTLENECKS``."""
    if value is True:
        return "deep"
    if value is False or value is None:
        return "none"
    if value not in BOTTLENECKS:
        raise ValueError(f"bottleneck must be one of {BOTTLENECKS} (or true/false), got {value!r}")
    return value


class IBHFN(nn.Module):
    def __init__(self, optical_channels: int = 13, sar_channels: int = 2, width: int = 16, depth: int = 2,
                 blocks: int = 1, fusion_blocks: int = 1, bottleneck: Union[bool, str] = True, gating: bool = True,
                 dirac_skip: bool = True, sar_skips: bool = True, clear_path: str = "identity",
                 upsample: str = "nearest"):
        super().__init__()
        if clear_path not in CLEAR_PATHS:
            raise ValueError(f"clear_path must be one of {CLEAR_PATHS}, got {clear_path!r}")
        mode = bottleneck_mode(bottleneck)
        self.depth = depth
        self.gating = gating
        self.bottleneck = mode
        self.clear_path = clear_path
        self.opt_encoder = Encoder(optical_channels, width, depth, blocks)
        self.sar_encoder = Encoder(sar_channels, width, depth, blocks)
        deep = self.opt_encoder.out_channels
        self.sibf = SIBF(deep, bottleneck=mode != "none", blocks=fusion_blocks)
        # bottlenecks on the SAR skips that reach the decoder (levels 0 .. depth-1)
        self.skip_bottlenecks = nn.ModuleList(
            [VariationalBottleneck(width * 2 ** i) for i in range(depth)] if mode == "all" and sar_skips else [])
        self.gate = LocalGlobalGate(width, deep) if gating else None
        self.skip = nn.Conv2d(optical_channels, optical_channels, 3, padding=1)
        if dirac_skip:
            nn.init.dirac_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        self.decoder = Decoder(width, depth, blocks, optical_channels, sar_skips=sar_skips, upsample=upsample)
        self.clear_head = None
        if clear_path == "affine":   # per-band (gain, offset) maps at the deepest resolution
            self.clear_head = nn.Conv2d(deep, 2 * optical_channels, 1)
        elif clear_path == "residual":
            self.clear_head = nn.Conv2d(self.decoder.out_channels, optical_channels, 3, padding=1)
        if self.clear_head is not None:
            nn.init.zeros_(self.clear_head.weight)
            nn.init.zeros_(self.clear_head.bias)
        self.kl_terms: Dict[str, torch.Tensor] = {}

    @property
    def size_multiple(self) -> int:
        return 2 ** self.depth

    def forward(self, optical, sar):
        f_opt = self.opt_encoder(optical)
        f_sar = self.sar_encoder(sar)
        fused, kl_deep = self.sibf(f_opt[-1], f_sar[-1])
        kls = {"deep": kl_deep} if self.bottleneck != "none" else {}
        sar_skips = list(f_sar)
        for level, vb in enumerate(self.skip_bottlenecks):
            sar_skips[level], kls[f"skip{level}"] = vb(f_sar[level])
        self.kl_terms = {k: v.detach() for k, v in kls.items()}  # for logging only
        kl = torch.stack(list(kls.values())).mean() if kls else fused.new_zeros(())
        feats = self.decoder.features(fused, f_opt, sar_skips)
        decoded = self.decoder.out(feats)
        skip = self.skip(optical)
        if self.clear_path == "affine":
            gain, offset = self.clear_head(fused).chunk(2, dim=1)
            scale = float(self.size_multiple)
            gain = F.interpolate(gain, scale_factor=scale, mode="bilinear", align_corners=False)
            offset = F.interpolate(offset, scale_factor=scale, mode="bilinear", align_corners=False)
            skip = skip * (1 + gain) + offset
        elif self.clear_path == "residual":
            skip = skip + self.clear_head(feats)
        if self.gate is not None:
            m = self.gate(f_opt[0], f_opt[-1])
            restored = m * skip + (1 - m) * decoded
        else:
            m = optical[:, :1] * 0.0
            restored = skip + decoded
        if self.training:
            return restored, m, kl
        return restored, m


class DSen2CR(nn.Module):
    """DSen2-CR-style residual baseline with the same I/O as IBHFN (clear_prob = constant 0)."""

    def __init__(self, optical_channels: int = 13, sar_channels: int = 2, width: int = 64, blocks: int = 6,
                 res_scale: float = 0.1):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(optical_channels + sar_channels, width, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(*[ResBlock(width, res_scale) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, optical_channels, 3, padding=1)
        self.gating = False
        self.kl_terms: Dict[str, torch.Tensor] = {}

    size_multiple = 1

    def forward(self, optical, sar):
        restored = optical + self.tail(self.body(self.head(torch.cat([sar, optical], 1))))
        m = optical[:, :1] * 0.0
        if self.training:
            return restored, m, restored.new_zeros(())
        return restored, m


IBHFN_KEYS = ("width", "depth", "blocks", "fusion_blocks", "bottleneck", "gating", "dirac_skip", "sar_skips",
              "clear_path", "upsample")
DSEN2CR_KEYS = ("width", "blocks", "res_scale")


def build_model(kind: str, config: Dict) -> nn.Module:
    """Network for a trainer config (``kind`` 'ibhfn' or 'dsen2cr'; keys under ``model``)."""
    cfg = dict(config.get("model", {}))
    keys = {"ibhfn": IBHFN_KEYS, "dsen2cr": DSEN2CR_KEYS}.get(kind)
    if keys is None:
        raise ValueError(f"unknown model kind {kind!r}")
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ValueError(f"unknown {kind} model option(s) {unknown}; known: {list(keys)}")
    if kind == "ibhfn":
        return IBHFN(**{k: cfg[k] for k in IBHFN_KEYS if k in cfg})
    return DSen2CR(**{k: cfg[k] for k in DSEN2CR_KEYS if k in cfg})
