"""QGIS layers as the controller sees them (``logic.LayerInfo``), read once per file version."""
from __future__ import annotations

import os
from typing import Dict, Tuple

from qgis.core import Qgis, QgsProject, QgsRasterLayer

from . import logic
from .checks import Context

_DESCRIBE_CACHE: Dict[Tuple[str, float], dict] = {}


def layer_path(layer) -> str:
    return layer.source().split("|")[0] if layer is not None else ""


def layer_info(layer: QgsRasterLayer) -> logic.LayerInfo:
    """Band count, dtype and band descriptions (read with rasterio, cached by mtime); CRS,
    extent and pixel size as QGIS shows them."""
    path = layer_path(layer)
    info = None
    try:
        key = (path, os.path.getmtime(path))
        info = _DESCRIBE_CACHE.get(key)
        if info is None:
            from ..plugin.core.raster_io import describe_raster

            info = _DESCRIBE_CACHE[key] = describe_raster(path)
    except Exception:
        info = None
    count = layer.bandCount()
    if info:
        is_float = str(info["dtype"]).startswith("float")
        descriptions = [d or "" for d in info["descriptions"]]
    else:
        dtype = layer.dataProvider().dataType(1) if count else Qgis.UnknownDataType
        is_float = dtype in (Qgis.Float32, Qgis.Float64)
        descriptions = [""] * count
    crs = layer.crs().authid() if layer.crs().isValid() else ""
    e = layer.extent()
    return logic.LayerInfo(layer.name(), path, count, is_float, descriptions, crs,
                           (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()),
                           layer.width(), layer.height(), str(info["dtype"]) if info else "",
                           (layer.rasterUnitsPerPixelX() or 1.0, layer.rasterUnitsPerPixelY() or 1.0),
                           layer.providerType() == "gdal" and os.path.isfile(path))


def project_context(tasks) -> Context:
    """The layers of the project (by file) and the outputs the running ``tasks`` write."""
    layers = {}
    for layer in QgsProject.instance().mapLayers().values():
        path = layer_path(layer)
        if path:
            layers.setdefault(os.path.abspath(path), layer.name())
    busy = {os.path.abspath(t.kwargs[k]) for t in tasks for k in ("output",) if t.kwargs.get(k)}
    return Context(layers, busy)
