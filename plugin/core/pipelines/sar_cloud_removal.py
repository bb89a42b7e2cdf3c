"""SAR-assisted cloud removal (task ``sar_cloud_removal``): the tile processor and the
"keep clear pixels" step. QGIS-free and torch-free: numpy + onnxruntime only.

Model contract (written by ``skyclear.models.ibhfn.trainer.build_card``):
inputs ``optical`` (13 S2 bands, role optical) and ``sar`` (VV, VH, role sar); outputs
``restored`` (13 bands, network units) and ``clear_probability`` (1 band, in [0, 1]; cloud
probability = 1 - clear probability). The DSen2-CR-style baseline has the same outputs with a
constant clear probability of 0 (it has no cloud estimate).

Snow is not cloud, but to a network trained on cloudy scenes it looks like one (bright in
the visible): ``snow_weight`` finds it with the Sentinel-2 snow test so the job can keep it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelCardError
from ..runtime import static_tile

TASK = "sar_cloud_removal"
RESTORED = "restored"
CLEAR_PROBABILITY = "clear_probability"


class SarCloudRemovalProcessor:
    """Tile processor for the engine: ``processor(inputs, origins) -> outputs``.

    ``inputs`` maps card input names to float32 (B, C, T, T) tiles in network units;
    returns card output names -> float32 (B, C_out, T, T) in network units. Tiles whose size
    is not a multiple of the card's ``size_multiple`` are reflect-padded and cropped back.
    The model is deterministic, so ``origins`` is not needed (accepted for the contract).
    """

    def __init__(self, session, card, batch_limit: Optional[int] = None):
        if card.task != TASK:
            raise ModelCardError(f"model card task is '{card.task}', expected '{TASK}'. "
                                 "Fix: choose a SAR-assisted cloud-removal model")
        optical = card.inputs_with_role("optical")
        sar = card.inputs_with_role("sar")
        if len(optical) != 1 or len(sar) != 1:
            raise ModelCardError("a sar_cloud_removal card needs exactly one 'optical' and one 'sar' input. "
                                 "Fix: set the inputs' role keys")
        self.session = session
        self.static_tile = static_tile(session)
        self.card = card
        self.optical_name = optical[0].name
        self.sar_name = sar[0].name
        self.output_names = [o.name for o in card.outputs]
        self.restored_name = RESTORED if RESTORED in self.output_names else self.output_names[0]
        self.clear_name = CLEAR_PROBABILITY if CLEAR_PROBABILITY in self.output_names else None
        self.multiple = int(card.size_multiple)
        self.batch_limit = batch_limit
        graph_inputs = [i.name for i in session.get_inputs()]
        missing = [n for n in (self.optical_name, self.sar_name) if n not in graph_inputs]
        if missing:
            raise ModelCardError(f"ONNX graph has no input(s) {missing} (graph inputs: {graph_inputs})")

    def __call__(self, inputs: Dict[str, np.ndarray], origins: Sequence[Tuple[int, int]] = ()) -> Dict[str, np.ndarray]:
        optical = np.ascontiguousarray(inputs[self.optical_name], dtype=np.float32)
        sar = np.ascontiguousarray(inputs[self.sar_name], dtype=np.float32)
        if optical.shape[0] != sar.shape[0] or optical.shape[2:] != sar.shape[2:]:
            raise ValueError(f"optical tiles {optical.shape} and SAR tiles {sar.shape} do not match")
        h, w = optical.shape[2:]
        ph = (-h) % self.multiple
        pw = (-w) % self.multiple
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "edge"
            pad = ((0, 0), (0, 0), (0, ph), (0, pw))
            optical = np.pad(optical, pad, mode=mode)
            sar = np.pad(sar, pad, mode=mode)
        n = optical.shape[0]
        step = self.batch_limit or n
        chunks: Dict[str, List[np.ndarray]] = {name: [] for name in self.output_names}
        for i in range(0, n, step):
            got = self.session.run(self.output_names, {self.optical_name: optical[i:i + step],
                                                       self.sar_name: sar[i:i + step]})
            for name, arr in zip(self.output_names, got):
                chunks[name].append(arr)
        out = {name: np.concatenate(parts, 0)[:, :, :h, :w].astype(np.float32, copy=False)
               for name, parts in chunks.items()}
        if self.clear_name is not None:
            out[self.clear_name] = np.clip(out[self.clear_name], 0.0, 1.0)
        return out


def cloud_probability(clear_probability: np.ndarray) -> np.ndarray:
    """Cloud probability = 1 - clear probability (the model's ``clear_probability`` output)."""
    return 1.0 - np.clip(np.asarray(clear_probability, dtype=np.float32), 0.0, 1.0)


def keep_clear_pixels(restored_raw: np.ndarray, optical_raw: np.ndarray, cloud_probability: np.ndarray,
                      threshold: float = 0.5, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Where ``cloud_probability < threshold``, return the input pixel unchanged (all bands).

    Works on raw raster units (e.g. uint16 DN), per finished block: ``restored_raw`` and
    ``optical_raw`` are (C, H, W) (or (B, C, H, W)) with the same shape; ``cloud_probability``
    is (H, W), (1, H, W) or (B, 1, H, W). ``valid`` (optional, broadcastable to (H, W)) limits
    the replacement to pixels where the input is valid (not nodata). Returns a new array of
    ``restored_raw``'s dtype; inputs are not modified.
    """
    restored_raw = np.asarray(restored_raw)
    optical_raw = np.asarray(optical_raw)
    if restored_raw.shape != optical_raw.shape:
        raise ValueError(f"restored {restored_raw.shape} and optical {optical_raw.shape} shapes differ")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    p = np.asarray(cloud_probability, dtype=np.float32)
    if p.ndim == restored_raw.ndim - 1:       # (H, W) for (C, H, W), (B, H, W) rare
        p = p[None] if restored_raw.ndim == 3 else p[:, None]
    if p.ndim == restored_raw.ndim and p.shape[-3] != 1:
        raise ValueError(f"cloud probability must have one band, got shape {cloud_probability.shape}")
    if p.shape[-2:] != restored_raw.shape[-2:]:
        raise ValueError(f"cloud probability {p.shape} does not match the image {restored_raw.shape}")
    keep = p < float(threshold)
    if valid is not None:
        keep = keep & np.asarray(valid, dtype=bool)
    keep = np.broadcast_to(keep, restored_raw.shape)
    out = restored_raw.copy()
    out[keep] = optical_raw[keep].astype(restored_raw.dtype, copy=False)
    return out


# The snow test of Sen2Cor and Fmask: snow is bright in green and NIR but dark at 1.6 um (B11),
# where water clouds stay bright (NDSI > 0.4); NIR and green thresholds keep water (NDSI > 0.4 too,
# but dark) out; the cirrus band B10 stays dark over snow and lights up under ice cloud. Soft ramps
# around each threshold so the kept area has no hard edge.
SNOW_BANDS = ("B3", "B8", "B11")
SNOW_TEST_BANDS = SNOW_BANDS + ("B10",)   # all it reads


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def snow_test_possible(band_names: Sequence[str]) -> bool:
    return set(SNOW_BANDS) <= {name.upper() for name in band_names}


def snow_weight(reflectance: np.ndarray, band_names: Sequence[str]) -> Optional[np.ndarray]:
    """(H, W) in [0, 1]: how surely each pixel is snow or ice, from (C, H, W) TOA reflectance.

    None when ``band_names`` lacks B3, B8 or B11 (no test possible); B10, when present, vetoes
    pixels under cirrus.
    """
    if not snow_test_possible(band_names):
        return None
    index = {name.upper(): i for i, name in enumerate(band_names)}
    green, nir, swir = (np.asarray(reflectance[index[b]], np.float32) for b in SNOW_BANDS)
    ndsi = (green - swir) / np.maximum(green + swir, 1e-6)
    weight = _ramp(ndsi, 0.35, 0.45) * _ramp(nir, 0.09, 0.13) * _ramp(green, 0.08, 0.12)
    if "B10" in index:
        weight *= 1.0 - _ramp(np.asarray(reflectance[index["B10"]], np.float32), 0.012, 0.025)
    return weight.astype(np.float32)


def keep_snow(restored: np.ndarray, optical: np.ndarray, weight: np.ndarray,
              cloud_probability: Optional[np.ndarray] = None):
    """Blend the input back in where ``weight`` says snow: returns (restored, cloud probability).

    ``restored``/``optical`` are (C, H, W) in the same units (raw or reflectance); ``weight`` and
    ``cloud_probability`` (optional) are (H, W) or (1, H, W). Inputs are not modified.
    """
    w = np.asarray(weight, np.float32).reshape(restored.shape[-2:])
    out = restored + w * (np.asarray(optical, np.float32) - restored)
    prob = None if cloud_probability is None else np.asarray(cloud_probability, np.float32) * (1.0 - w)
    return out.astype(restored.dtype, copy=False), prob
