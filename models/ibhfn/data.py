"""SEN12MS-CR readers, the band preprocessing (single source of truth) and training batches.

Two folder layouts are read:

- the shared layout: ``<root>/<id>/{s1,s2_cloudy,s2_cloudfree[,cloud_mask]}.tif``
  (as in ``../shared/data/sen12mscr/``; these files have no CRS, the warning is silenced);
- the official SEN12MS-CR layout: ``ROIs*/.../s1_<scene>/<roi>_s1_<scene>_p<patch>.tif`` with
  the matching ``s2_<scene>`` (cloud-free) and ``s2_cloudy_<scene>`` files, found by
  substituting ``s1`` with ``s2`` / ``s2_cloudy`` in the folder and file names.

``S2_BANDS`` / ``S1_BANDS`` below are the only definition of the preprocessing: the
training data is scaled with them and the exported model card is built from them, so the
plugin (which preprocesses from the card) sees exactly what the network was trained on.
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..common.augment import random_crop, random_dihedral

S2_NAMES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_MEANINGS = ("coastal aerosol", "blue", "green", "red", "red edge 1", "red edge 2", "red edge 3",
               "NIR", "narrow NIR", "water vapour", "SWIR cirrus", "SWIR 1", "SWIR 2")

# (name, meaning, clip, scale, offset): network value = (clip(v) - offset) / scale
S2_BANDS = [(n, f"Sentinel-2 L1C {n} ({m}), DN = TOA reflectance x 10000", (0.0, 10000.0), 10000.0, 0.0)
            for n, m in zip(S2_NAMES, S2_MEANINGS)]
S1_BANDS = [("VV", "Sentinel-1 GRD sigma0 VV in dB", (-25.0, 0.0), 25.0, -25.0),
            ("VH", "Sentinel-1 GRD sigma0 VH in dB", (-32.5, 0.0), 32.5, -32.5)]


def card_bands(spec) -> List[Dict]:
    """Model-card band entries for ``S2_BANDS`` or ``S1_BANDS``."""
    from ...plugin.core.model_card import band
    return [band(n, m, clip, scale, offset) for n, m, clip, scale, offset in spec]


def preprocess(raw: np.ndarray, spec) -> np.ndarray:
    """(C, H, W) raster values -> float32 network values, per ``spec``: the engine's own
    ``to_network`` (a pixel with a non-finite band is invalid and enters as 0)."""
    from ...plugin.core.engine import to_network
    from ...plugin.core.model_card import BandSpec, TensorSpec

    raw = np.asarray(raw, dtype=np.float32)
    if raw.shape[0] != len(spec):
        raise ValueError(f"expected {len(spec)} bands, got {raw.shape[0]}")
    tensor = TensorSpec("input", [BandSpec(n, m, list(clip), scale, offset) for n, m, clip, scale, offset in spec])
    return to_network(raw, np.isfinite(raw).all(axis=0), tensor)


def postprocess(net: np.ndarray, spec, dtype=np.uint16) -> np.ndarray:
    """Inverse of ``preprocess``: network values -> clipped raster values of ``dtype``."""
    out = np.empty(net.shape, np.float64)
    for i, (_, _, (lo, hi), scale, offset) in enumerate(spec):
        out[i] = np.clip(net[i].astype(np.float64) * scale + offset, lo, hi)
    if np.issubdtype(np.dtype(dtype), np.integer):
        out = np.rint(out)
    return out.astype(dtype)


# ------------------------------------------------------------------------------------------
# reading


def read_tif(path: str) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


@dataclass
class SampleFiles:
    id: str
    s1: str
    s2_cloudy: str
    s2_cloudfree: str
    cloud_mask: Optional[str] = None


@dataclass
class Sample:
    """One triplet in network units: sar (2,H,W), cloudy/clear (13,H,W), mask (1,H,W) or None.
    Extra training sources (``sources.py``) leave out what they lack: ``cloudy`` for clear
    S1+S2 pairs, ``sar`` for cloud layers."""
    id: str
    sar: Optional[np.ndarray]
    cloudy: Optional[np.ndarray]
    clear: np.ndarray
    mask: Optional[np.ndarray]


def find_samples(root: str) -> List[SampleFiles]:
    """All triplets under ``root`` in either layout, sorted by id."""
    root = os.path.abspath(root)
    found: Dict[str, SampleFiles] = {}
    # shared layout: <root>/<id>/s1.tif (also accept root itself being one sample)
    for s1 in sorted(glob.glob(os.path.join(root, "*", "s1.tif")) + glob.glob(os.path.join(root, "s1.tif"))):
        d = os.path.dirname(s1)
        files = {k: os.path.join(d, k + ".tif") for k in ("s2_cloudy", "s2_cloudfree", "cloud_mask")}
        if os.path.exists(files["s2_cloudy"]) and os.path.exists(files["s2_cloudfree"]):
            found[os.path.basename(d)] = SampleFiles(
                os.path.basename(d), s1, files["s2_cloudy"], files["s2_cloudfree"],
                files["cloud_mask"] if os.path.exists(files["cloud_mask"]) else None)
    # official layout: any */s1_<n>/*_s1_<n>_p<k>.tif below root
    for s1 in sorted(glob.glob(os.path.join(root, "**", "s1_*", "*.tif"), recursive=True)):
        clear = _official_partner(root, s1, "s2")
        cloudy = _official_partner(root, s1, "s2_cloudy")
        if clear and cloudy:
            sid = os.path.splitext(os.path.basename(s1))[0].replace("_s1_", "_")
            found[sid] = SampleFiles(sid, s1, cloudy, clear, None)
    return [found[k] for k in sorted(found)]


def _official_partner(root: str, s1: str, kind: str) -> Optional[str]:
    """Map ``.../ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p30.tif`` to its s2/s2_cloudy file."""
    rel = os.path.relpath(s1, root).split(os.sep)
    out = []
    for part in rel:
        if part.startswith("s1_"):
            part = kind + part[2:]
        part = part.replace("_s1_", f"_{kind}_")
        if part.endswith("_s1"):
            part = part[:-3] + "_" + kind
        out.append(part)
    path = os.path.join(root, *out)
    return path if os.path.exists(path) else None


def load_sample(files: SampleFiles) -> Sample:
    sar = preprocess(read_tif(files.s1), S1_BANDS)
    cloudy = preprocess(read_tif(files.s2_cloudy), S2_BANDS)
    clear = preprocess(read_tif(files.s2_cloudfree), S2_BANDS)
    mask = None
    if files.cloud_mask:
        mask = (read_tif(files.cloud_mask)[:1] > 0).astype(np.float32)
    return Sample(files.id, sar, cloudy, clear, mask)


# ------------------------------------------------------------------------------------------
# training batches


def composite_cloud(clear: np.ndarray, cloud_src_cloudy: np.ndarray, cloud_src_clear: np.ndarray,
                    cloud_src_mask: Optional[np.ndarray]):
    """Synthetic cloud compositing (training only): the cloud layer of a real cloudy image
    (its brightness excess over its clear partner, inside its cloud mask) is added to a
    different clear image. Returns (cloudy, mask)."""
    excess = np.clip(cloud_src_cloudy - cloud_src_clear, 0.0, None)
    if cloud_src_mask is None:
        cloud_src_mask = (excess[1:4].mean(0, keepdims=True) > 0.05).astype(np.float32)
    cloudy = np.clip(clear + excess * cloud_src_mask, 0.0, 1.0)
    return cloudy.astype(np.float32), cloud_src_mask.astype(np.float32)


# band centre wavelengths (nm), SEN12MS order; haze optical depth ~ wavelength^-1.3 (Angstrom)
_WAVELENGTHS = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190], np.float32)
HAZE_SPECTRUM = (_WAVELENGTHS / 490.0) ** -1.3
HAZE_SPECTRUM[10] = 0.05  # B10 (1375 nm) sees only high cirrus, not low haze

COMPOSITE_DEFAULTS = {
    "model": "transmission",       # or "additive" (1.x: background + cloud excess)
    "opacity": [0.5, 1.3],         # the cloud layer's excess is scaled by U(lo, hi)
    "opaque_at": 0.25,             # visible excess (reflectance) at which a cloud hides the ground
    "jitter_p": 0.6,               # probability to alter the background of the input (target unchanged)
    "gain_jitter": 0.08,           # global gain U(1 +- j), per band +- j/3 around it
    "offset_jitter": 0.01,         # per-band offset U(+- o) (reflectance)
    "haze_p": 0.5, "haze_max": 0.06,   # smooth haze, blue-heavy spectrum, up to this in B2
    "shadow_p": 0.5, "shadow_strength": [0.2, 0.6], "shadow_shift": [4, 16],
}


def _smooth_field(shape, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """Low-frequency random field in [0, 1] (bilinear upsampling of a coarse random grid)."""
    from scipy.ndimage import zoom
    h, w = shape
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    f = zoom(coarse, (h / (cells + 1), w / (cells + 1)), order=1, mode="nearest")[:h, :w]
    if f.shape != (h, w):
        f = np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1])), mode="edge")
    return f


def composite_cloud_v2(background: np.ndarray, layer_cloudy: np.ndarray, layer_clear: np.ndarray,
                       layer_mask: Optional[np.ndarray], rng: np.random.Generator, opts: Optional[Dict] = None):
    """Synthetic cloudy input over the clear ``background`` (training only). Returns (cloudy, mask).

    The cloud layer of a real cloudy/clear pair (excess = cloudy - clear, scaled by a random
    opacity) is laid over the background; with ``model="transmission"`` opaque parts (visible
    excess >= ``opaque_at``) show the layer's own cloud and thin parts the background plus the
    excess, i.e. cloudy = layer_cloudy' + (1 - alpha) * (background - layer_clear).
    The background of the *input* may also get a global gain/offset, a smooth haze and the
    cloud's shadow, so that copying the input is not right outside the pasted cloud either.
    ``mask`` (1, H, W) = pixels with cloud (alpha > 0.05) or shadow (> 0.05).
    """
    o = dict(COMPOSITE_DEFAULTS, **(opts or {}))
    excess = np.clip(layer_cloudy - layer_clear, 0.0, None)
    if layer_mask is not None:  # s2cloudless mask of the layer: keep its excess inside only (1.x)
        excess = excess * layer_mask
    excess = excess * float(rng.uniform(*o["opacity"]))
    alpha = np.clip(excess[1:4].mean(0, keepdims=True) / float(o["opaque_at"]), 0.0, 1.0)
    bg = background.copy()
    c = bg.shape[0]
    if rng.random() < o["jitter_p"]:
        g0 = rng.uniform(1 - o["gain_jitter"], 1 + o["gain_jitter"])
        gain = g0 * (1 + rng.uniform(-o["gain_jitter"] / 3, o["gain_jitter"] / 3, (c, 1, 1)))
        offset = rng.uniform(-o["offset_jitter"], o["offset_jitter"], (c, 1, 1))
        bg = bg * gain.astype(np.float32) + offset.astype(np.float32)
    if rng.random() < o["haze_p"]:
        strength = float(rng.uniform(0, o["haze_max"]))
        spectrum = HAZE_SPECTRUM[:c, None, None] if c == len(HAZE_SPECTRUM) else np.ones((c, 1, 1), np.float32)
        bg = bg + strength * spectrum * _smooth_field(bg.shape[1:], rng)[None]
    if o["model"] == "additive":
        cloudy = bg + excess
    elif o["model"] == "transmission":
        cloudy = (layer_clear + excess) + (1 - alpha) * (bg - layer_clear)
    else:
        raise ValueError(f"composite model must be 'additive' or 'transmission', got {o['model']!r}")
    shadow = np.zeros_like(alpha)
    if rng.random() < o["shadow_p"]:
        from scipy.ndimage import gaussian_filter
        lo, hi = o["shadow_shift"]
        dy, dx = (int(rng.integers(lo, hi + 1)) * (1 if rng.random() < 0.5 else -1) for _ in range(2))
        shifted = np.roll(alpha[0], (dy, dx), axis=(0, 1))
        shadow = (float(rng.uniform(*o["shadow_strength"])) * gaussian_filter(shifted, 2.0) * (1 - alpha[0]))[None]
        cloudy = cloudy * (1 - shadow)
    mask = ((alpha > 0.05) | (shadow > 0.05)).astype(np.float32)
    return np.clip(cloudy, 0.0, 1.0).astype(np.float32), mask


class TripletDataset:
    """Random crops of triplets, indexed by a global example counter so that batches depend
    only on (seed, index): deterministic, resumable and independent of DataLoader workers.

    With ``synthetic_p`` an example is a synthetic composite: a clear background (a training
    triplet's clear image with its S1, or with probability ``extra_p`` an extra clear S1+S2
    pair) under the cloud layer of another training triplet or of an extra cloud-layer pair
    (``extra['cloud_layers']``). ``composite`` (options of ``composite_cloud_v2``) switches
    from the 1.x additive paste (``composite_cloud``) to the harder composites. Real examples
    are training triplets, or with probability ``real_extra_p`` an extra real triplet.

    Sample arrays are loaded lazily and cached (fine for the 15 shared samples; for the full
    dataset set ``cache=False`` and use DataLoader workers).
    """

    def __init__(self, files: Sequence[SampleFiles], crop: int, seed: int = 0, synthetic_p: float = 0.0,
                 augment: bool = True, cache: bool = True, extra: Optional[Dict[str, List[Sample]]] = None,
                 composite: Optional[Dict] = None, extra_p: float = 0.0, real_extra_p: float = 0.0):
        if not files:
            raise ValueError("no training samples")
        self.files = list(files)
        self.crop = crop
        self.seed = seed
        self.synthetic_p = synthetic_p
        self.augment = augment
        self.cache = cache
        self.extra = {k: list(v) for k, v in (extra or {}).items() if v}
        self.composite = composite
        self.extra_p = extra_p if self.extra.get("clear") else 0.0
        self.real_extra_p = real_extra_p if self.extra.get("real") else 0.0
        self._cache: Dict[int, Sample] = {}

    def sample(self, i: int) -> Sample:
        if i in self._cache:
            return self._cache[i]
        s = load_sample(self.files[i])
        if self.cache:
            self._cache[i] = s
        return s

    def __len__(self):
        return 1 << 40  # indexed by a global counter; the sampler decides what is drawn

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, int(index)])
        n = len(self.files)
        i = int(rng.integers(0, n))
        s = self.sample(i)
        if self.composite is None and not self.extra:
            arrays, has_mask = self._example_v1(s, i, n, rng)
        else:
            arrays, has_mask = self._example_v2(s, i, n, rng)
        if self.augment:
            arrays = random_dihedral(arrays, rng)
        sar, cloudy, clear, mask = (np.ascontiguousarray(a, dtype=np.float32) for a in arrays)
        return {"sar": sar, "optical": cloudy, "target": clear, "mask": mask,
                "has_mask": np.float32(has_mask)}

    def _example_v1(self, s: Sample, i: int, n: int, rng):
        """1.x: a triplet crop, or (``synthetic_p``) its clear image + another triplet's cloud excess."""
        mask = s.mask if s.mask is not None else np.zeros((1,) + s.clear.shape[1:], np.float32)
        has_mask = float(s.mask is not None)
        arrays = random_crop([s.sar, s.cloudy, s.clear, mask], self.crop, rng)
        if n > 1 and rng.random() < self.synthetic_p:
            j = int(rng.integers(0, n - 1))
            j = j + 1 if j >= i else j  # a different sample gives the cloud layer
            src = self.sample(j)
            src_arrays = random_crop([src.cloudy, src.clear] + ([src.mask] if src.mask is not None else []),
                                     self.crop, rng)
            cloudy, mask = composite_cloud(arrays[2], src_arrays[0], src_arrays[1],
                                           src_arrays[2] if len(src_arrays) > 2 else None)
            arrays = [arrays[0], cloudy, arrays[2], mask]
            has_mask = 1.0
        return arrays, has_mask

    def _example_v2(self, s: Sample, i: int, n: int, rng):
        layers = [("triplet", j) for j in range(n) if j != i] + \
                 [("extra", k) for k in range(len(self.extra.get("cloud_layers", [])))]
        if layers and rng.random() < self.synthetic_p:
            if rng.random() < self.extra_p:
                bg = self.extra["clear"][int(rng.integers(0, len(self.extra["clear"])))]
            else:
                bg = s
            sar, clear = random_crop([bg.sar, bg.clear], self.crop, rng)
            kind, j = layers[int(rng.integers(0, len(layers)))]
            src = self.sample(j) if kind == "triplet" else self.extra["cloud_layers"][j]
            src_arrays = random_crop([src.cloudy, src.clear] + ([src.mask] if src.mask is not None else []),
                                     self.crop, rng)
            if self.composite is None:
                cloudy, mask = composite_cloud(clear, src_arrays[0], src_arrays[1],
                                               src_arrays[2] if len(src_arrays) > 2 else None)
            else:
                cloudy, mask = composite_cloud_v2(clear, src_arrays[0], src_arrays[1],
                                                  src_arrays[2] if len(src_arrays) > 2 else None, rng,
                                                  self.composite)
            return [sar, cloudy, clear, mask], 1.0
        if rng.random() < self.real_extra_p:
            s = self.extra["real"][int(rng.integers(0, len(self.extra["real"])))]
        mask = s.mask if s.mask is not None else np.zeros((1,) + s.clear.shape[1:], np.float32)
        return random_crop([s.sar, s.cloudy, s.clear, mask], self.crop, rng), float(s.mask is not None)


class StepSampler:
    """Yields global example indices ``start .. stop-1`` (used with a DataLoader)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self):
        return self.stop - self.start
