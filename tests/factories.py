"""Tiny ONNX models with cards and small synthetic GeoTIFFs, built in the tests themselves."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
import rasterio
from onnx import TensorProto, helper, numpy_helper
from rasterio.transform import from_origin

from skyclear.plugin.core.model_card import band, write_card


def _tensor(name: str, channels: int):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])


def base_card(in_bands: Sequence[str], out_bands: Sequence[str], clip=(0, 255), scale=255.0, offset=0.0,
              sar_bands: Sequence[str] = (), out_dtype: Optional[str] = None, task="generic",
              tile=64, multiple=1, overlap=8):
    def bands(names):
        return [band(n, clip=clip, scale=scale, offset=offset) for n in names]

    inputs = [{"name": "optical", "role": "optical", "bands": bands(in_bands)}]
    if sar_bands:
        inputs.append({"name": "sar", "role": "sar", "resampling": "nearest",
                       "bands": [band(n, clip=(-50, 50), scale=1.0) for n in sar_bands]})
    return {
        "schema_version": 1, "name": "test-model", "version": "0.0.1", "task": task,
        "inputs": inputs,
        "outputs": [{"name": "restored", "dtype": out_dtype, "bands": bands(out_bands),
                     "nodata": None if out_dtype and out_dtype.startswith("float") else 0}],
        "tiling": {"tile_size": tile, "size_multiple": multiple, "default_overlap": overlap},
        "training": {"data": "synthetic test", "steps": 0, "metrics": {}}, "license": "CC0-1.0",
    }


def save_model(nodes, inputs, outputs, initializers, path: str, card: dict) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    if card is not None:
        write_card(path, card)
    return path


def identity_model(path: str, channels: int = 3, card: Optional[dict] = None, **card_kw) -> str:
    names = [f"B{i + 1}" for i in range(channels)]
    card = card or base_card(names, names, **card_kw)
    return save_model([helper.make_node("Identity", ["optical"], ["restored"])],
                      [_tensor("optical", channels)], [_tensor("restored", channels)], [], path, card)


def affine_model(path: str, gain: Sequence[float], bias: Sequence[float], card: Optional[dict] = None,
                 **card_kw) -> str:
    c = len(gain)
    names = [f"B{i + 1}" for i in range(c)]
    card = card or base_card(names, names, **card_kw)
    g = numpy_helper.from_array(np.array(gain, np.float32).reshape(1, c, 1, 1), "gain")
    b = numpy_helper.from_array(np.array(bias, np.float32).reshape(1, c, 1, 1), "bias")
    nodes = [helper.make_node("Mul", ["optical", "gain"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["restored"])]
    return save_model(nodes, [_tensor("optical", c)], [_tensor("restored", c)], [g, b], path, card)


def conv_model(path: str, in_channels: int, out_channels: int, kernel: int = 3, seed: int = 0,
               card: Optional[dict] = None, sar_channels: int = 0, hidden: int = 8, **card_kw) -> str:
    """A small conv net (conv-relu-conv); with SAR input, the SAR is concatenated first."""
    rng = np.random.default_rng(seed)
    total_in = in_channels + sar_channels
    w1 = numpy_helper.from_array((rng.standard_normal((hidden, total_in, kernel, kernel)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((out_channels, hidden, kernel, kernel)) * 0.2).astype(np.float32), "w2")
    pad = [kernel // 2] * 4
    nodes, inputs = [], [_tensor("optical", in_channels)]
    first = "optical"
    if sar_channels:
        inputs.append(_tensor("sar", sar_channels))
        nodes.append(helper.make_node("Concat", ["optical", "sar"], ["stacked"], axis=1))
        first = "stacked"
    nodes += [helper.make_node("Conv", [first, "w1"], ["h"], pads=pad),
              helper.make_node("Relu", ["h"], ["hr"]),
              helper.make_node("Conv", ["hr", "w2"], ["restored"], pads=pad)]
    if card is None:
        card = base_card([f"B{i + 1}" for i in range(in_channels)], [f"B{i + 1}" for i in range(out_channels)],
                         sar_bands=[f"S{i + 1}" for i in range(sar_channels)], **card_kw)
    return save_model(nodes, inputs, [_tensor("restored", out_channels)], [w1, w2], path, card)


def write_raster(path: str, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None,
                 descriptions: Optional[Sequence[str]] = None) -> str:
    """Write a (C, H, W) array as a GeoTIFF (crs=None writes no georeference)."""
    data = np.asarray(data)
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                   nodata=nodata)
    if count >= 4:
        profile["photometric"] = "MINISBLACK"  # else GDAL reads a 4th uint8 band as alpha
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(500000, 4600000, 10, 10))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    return path


def random_image(shape, dtype="uint8", seed=0, low=0, high=255) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=shape).astype(dtype)


def with_card(card: dict, **changes) -> dict:
    out = copy.deepcopy(card)
    out.update(changes)
    return out


def jittered(module, seed: int = 0):
    """``module`` in eval mode with N(0, 0.05) added to every weight: a small untrained network
    whose zero-initialised heads still produce a non-trivial output (torch imported here only)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


# a tiny fusion trainer config (CPU, seconds per step) and a real CFOG training batch, for the fusion tests
TINY_FUSION = {"kind": "fusion", "patch": 64, "batch": 2, "width": 4, "blocks": [1, 1, 1, 1], "cbam_levels": [3, 4, 5],
               "aspp_dilations": [1, 2, 3], "cyclegan_run": None, "use_base": True, "norm": "group",
               "weights": {"intensity": 0.5, "gradient": 1.0, "ssim": 1.0, "vif": 1.0, "qabf": 1.0},
               "intensity_mode": "optical", "gwpl_window": 3, "lambda_adv": 0.0, "d_width": 4, "d_layers": 2,
               "ema": 0, "lr": 2e-3, "d_lr": 2e-4}


def cfog_batch(data_dir, n: int = 2, size: int = 64):
    """(sar, optical) torch tensors: ``n`` seeded ``size``² crops of the CFOG training pair."""
    import torch
    from skyclear.models.fusion import data as fdata
    pairs = fdata.load_training_pairs(str(data_dir), ("cfog",))
    return tuple(torch.from_numpy(b) for b in fdata.PatchSampler(pairs, size, seed=1).batch(n))


# ------------------------------------------------------------------- failed-run checks

PREVIOUS = b"the user's previous result, which must survive a failed run"


def leftovers(folder) -> list:
    """SkyClear temporary files (and anything hidden) left in ``folder``."""
    return sorted(n for n in os.listdir(folder) if n.startswith(".") or ".part" in n)


def previous_output(path) -> Path:
    """A stand-in for a user's earlier result at ``path``: a failed run must leave it byte-identical."""
    Path(path).write_bytes(PREVIOUS)
    return Path(path)
