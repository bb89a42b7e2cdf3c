"""Adding SkyClear outputs to the map with a sensible rendering (main thread only)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from qgis.core import (QgsColorRampShader, QgsContrastEnhancement, QgsMultiBandColorRenderer,
                       QgsProcessingLayerPostProcessorInterface, QgsProject, QgsRaster, QgsRasterBandStats,
                       QgsRasterLayer, QgsRasterShader, QgsSingleBandGrayRenderer,
                       QgsSingleBandPseudoColorRenderer)
from qgis.PyQt.QtGui import QColor

from .core import tools

GROUP = "SkyClear"
CUT = (0.02, 0.98)
# pixels sampled for a layer's stretch: exact statistics read the whole band on the main thread (2.7 s
# for one 10980² float band), and a stretch needs none
SAMPLE = 250000
PROBABILITY_WORDS = ("cloud", "prob", "clear", "mask", "uncertainty")


def classify(name: str, layer: QgsRasterLayer) -> str:
    """'probability', 's2' (true colour 4,3,2), 'rgb' (1,2,3) or 'single'."""
    count = layer.bandCount()
    lowered = (name or "").lower() + " " + os.path.basename(layer.source()).lower()
    if count == 1 and any(word in lowered for word in PROBABILITY_WORDS):
        return "probability"
    if count >= 12:
        return "s2"
    if count >= 3:
        return "rgb"
    return "single"


def _stretched(provider, band: int, extent) -> QgsContrastEnhancement:
    lo, hi = provider.cumulativeCut(band, CUT[0], CUT[1], extent, SAMPLE)
    if not hi > lo:
        stats = provider.bandStatistics(band, QgsRasterBandStats.Min | QgsRasterBandStats.Max, extent, SAMPLE)
        lo, hi = stats.minimumValue, max(stats.maximumValue, stats.minimumValue + 1e-6)
    ce = QgsContrastEnhancement(provider.dataType(band))
    ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    ce.setMinimumValue(lo)
    ce.setMaximumValue(hi)
    return ce


def _declared_top(path: str) -> Optional[float]:
    """The upper end of the value range the engine wrote in a SkyClear output's tags, else None."""
    from .core.engine import VALUE_RANGE_TAG
    from .core.errors import SkyClearError
    from .core.raster_io import describe_raster

    try:
        text = describe_raster(path)["tags"].get(VALUE_RANGE_TAG, "")
        top = float(text.split(",")[1])
    except (SkyClearError, IndexError, ValueError):
        return None
    return top if top > 0 else None


def probability_renderer(layer: QgsRasterLayer) -> QgsSingleBandPseudoColorRenderer:
    """Transparent where the probability is low, through yellow to opaque red at the top."""
    provider = layer.dataProvider()
    top = _declared_top(layer.source().split("|")[0])
    if top is None:  # not a SkyClear output: the whole band's maximum (a sample can miss a small cloud)
        stats = provider.bandStatistics(1)
        top = 1.0
        if stats.maximumValue > 1.0 + 1e-6:
            top = 100.0 if stats.maximumValue <= 100 else 255.0 if stats.maximumValue <= 255 else stats.maximumValue
    items = [
        QgsColorRampShader.ColorRampItem(0.0, QColor(255, 255, 255, 0), "clear"),
        QgsColorRampShader.ColorRampItem(0.2 * top, QColor(255, 255, 178, 0), ""),
        QgsColorRampShader.ColorRampItem(0.5 * top, QColor(254, 178, 76, 150), ""),
        QgsColorRampShader.ColorRampItem(0.8 * top, QColor(240, 59, 32, 200), ""),
        QgsColorRampShader.ColorRampItem(top, QColor(189, 0, 38, 230), "cloud"),
    ]
    ramp = QgsColorRampShader(0.0, top)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(top)
    renderer.setOpacity(0.85)
    return renderer


def style_layer(layer: QgsRasterLayer, name: str = "") -> str:
    """Apply the rendering for the output kind; returns the kind."""
    kind = classify(name, layer)
    provider = layer.dataProvider()
    extent = layer.extent()
    if kind == "probability":
        layer.setRenderer(probability_renderer(layer))
    elif kind in ("s2", "rgb"):
        red, green, blue = (4, 3, 2) if kind == "s2" else (1, 2, 3)
        renderer = QgsMultiBandColorRenderer(provider, red, green, blue)
        renderer.setRedContrastEnhancement(_stretched(provider, red, extent))
        renderer.setGreenContrastEnhancement(_stretched(provider, green, extent))
        renderer.setBlueContrastEnhancement(_stretched(provider, blue, extent))
        layer.setRenderer(renderer)
    else:
        renderer = QgsSingleBandGrayRenderer(provider, 1)
        renderer.setContrastEnhancement(_stretched(provider, 1, extent))
        layer.setRenderer(renderer)
    layer.triggerRepaint()
    return kind


def skyclear_group(project: Optional[QgsProject] = None):
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP)
    if group is None:
        group = root.insertGroup(0, GROUP)
    return group


NAME_LIMIT = 40
# what SkyClear appends to an input's name for its outputs (the registry's suggestions), longest first
_SUFFIXES = sorted({"_" + t.output_suffix for t in tools.TOOLS}
                   | {"_" + o.sibling for t in tools.TOOLS for o in t.outputs if o.sibling}, key=len, reverse=True)


def output_layer_name(path: str, what: str = "") -> str:
    """``<input stem> — <what>``, short enough for the Layers panel (the full path is in the
    layer's tooltip/source): e.g. "s2l1c_20200823 — cloud-free". ``what``: the registry's
    ``Output.layer_name`` (the dialog and Processing name outputs alike)."""
    stem = os.path.splitext(os.path.basename(path or ""))[0] or "SkyClear"
    what = what or "result"
    suffixes = ["_" + what.replace(" ", "_").replace("-", "")] + _SUFFIXES
    stripped = True
    while stripped:
        stripped = False
        for suffix in suffixes:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem, stripped = stem[: -len(suffix)], True
    room = max(8, NAME_LIMIT - len(what) - 3)
    if len(stem) > room:
        stem = stem[: room - 1] + "…"
    return f"{stem} — {what}"


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Processing post-processor: the same rendering and name as the dialog's outputs."""

    def __init__(self, output_name: str = "", what: str = ""):
        super().__init__()
        self.output_name, self.what = output_name, what

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            style_layer(layer, self.output_name)
            layer.setName(output_layer_name(layer.source().split("|")[0], self.what))

# QGIS does not own Python post-processors: keep them alive until QGIS has used them
_POST_PROCESSORS: List[StyleOnLoad] = []


def style_processing_outputs(results: Dict, context, algorithm: str = "") -> int:
    """Attach a :class:`StyleOnLoad` to every raster result that Processing will load into the
    project when the algorithm finishes (``runAndLoadResults``, the toolbox dialog). Returns how many."""
    spec = tools.TOOLS_BY_NAME.get(algorithm)
    outputs = {o.param: o for o in spec.outputs} if spec is not None else {}
    attached = 0
    for key, value in (results or {}).items():
        if not isinstance(value, str) or not value.lower().endswith((".tif", ".tiff")):
            continue
        try:
            if not context.willLoadLayerOnCompletion(value):
                continue
            details = context.layerToLoadOnCompletionDetails(value)
        except Exception:
            continue
        output = outputs.get(key)
        name, what = (output.keyword, output.layer_name) if output is not None else ("", "")
        processor = StyleOnLoad(name, what)
        _POST_PROCESSORS.append(processor)
        del _POST_PROCESSORS[:-64]
        details.setPostProcessor(processor)
        details.name = output_layer_name(value, what)
        attached += 1
    return attached


def add_outputs(outputs: Dict[str, str], title: str = "", project: Optional[QgsProject] = None,
                names: Optional[Dict[str, str]] = None) -> List[QgsRasterLayer]:
    """Load every output GeoTIFF, style it and put it at the top of the "SkyClear" group.
    Probability maps go above the images so that the image shows through their transparency.
    ``names``: output name -> what the Layers panel calls it (``ToolSpec.layer_names``)."""
    project = project or QgsProject.instance()
    names = names or {}
    group = skyclear_group(project)
    layers = []
    for name, path in outputs.items():
        if not path or not os.path.exists(path):
            continue
        # a re-run over the same file replaces the stale layer instead of duplicating it
        stale = [l.id() for l in project.mapLayers().values()
                 if l.source().split("|")[0] and os.path.abspath(l.source().split("|")[0]) == os.path.abspath(path)]
        if stale:
            project.removeMapLayers(stale)
        layer = QgsRasterLayer(path, output_layer_name(path, names.get(name, name.replace("_", " "))), "gdal")
        if not layer.isValid():
            continue
        kind = style_layer(layer, name)
        project.addMapLayer(layer, False)
        # probability on top, images below it
        above = sum(1 for _, k in layers if k == "probability")
        group.insertLayer(0 if kind == "probability" else above, layer)
        layers.append((layer, kind))
    return [layer for layer, _ in layers]


def pixel_value(layer: QgsRasterLayer, band: int = 1):
    """Value of ``band`` at the layer centre (for tests and sanity checks)."""
    result = layer.dataProvider().identify(layer.extent().center(), QgsRaster.IdentifyFormatValue)
    return result.results().get(band)
