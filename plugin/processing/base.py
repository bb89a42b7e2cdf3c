"""What every SkyClear algorithm shares: tile/overlap/device parameters, progress, errors."""
from __future__ import annotations

import contextlib
import logging
import os
import time

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)
from qgis.PyQt.QtGui import QIcon

from ..core.choices import COMPRESSIONS, DEVICES
from ..core.errors import SkyClearError

ICON = os.path.join(os.path.dirname(__file__), "..", "..", "icons", "skyclear.svg")
AREA_SCALE_HELP = (
    "EXTENT (optional): process only this area; any CRS (it is reprojected to the optical raster's "
    "CRS). On the command line: EXTENT='xmin,xmax,ymin,ymax [EPSG:code]'.\n"
    "SCALE (optional): the input values are checked against the model's value range; when most lie "
    "outside it the run warns, and refuses when the result would be flat. 'auto' scales them to fit "
    "(e.g. uint16 Sentinel-2 DN for an 8-bit model; outputs return in the input's units), a number "
    "multiplies them (e.g. 0.0255), 'gain,bias' applies gain·v + bias, 'none' runs them as they are.")


def _without_geotransform(path: str) -> bool:
    """True for a raster with no georeference at all (GDAL's identity transform)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.crs is None and ds.transform == rasterio.Affine.identity()
    except rasterio.errors.RasterioIOError:
        return False


class _FeedbackHandler(logging.Handler):
    """Sends SkyClear log warnings (value range, band mapping) to the Processing log."""

    def __init__(self, feedback):
        super().__init__(logging.INFO)
        self.feedback = feedback

    def emit(self, record):
        text = record.getMessage()
        if record.levelno < logging.WARNING and not record.name.startswith("skyclear.bands"):
            return  # other info (e.g. the device) is already reported by ``report``
        if record.levelno >= logging.WARNING:
            getattr(self.feedback, "pushWarning", self.feedback.reportError)(text)
        else:
            self.feedback.pushInfo(text)


@contextlib.contextmanager
def forward_log(feedback):
    logger = logging.getLogger("skyclear")
    handler, level = _FeedbackHandler(feedback), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class SkyClearAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses define name/params and implement ``execute_job(parameters, context, feedback)`` (``run`` is QGIS's own)."""

    def group(self):  # no group: the toolbox shows SkyClear › <algorithm>, not SkyClear › SkyClear › …
        return ""

    def groupId(self):  # noqa: N802
        return ""

    def icon(self):
        return QIcon(ICON)

    def createInstance(self):  # noqa: N802
        return type(self)()

    # -- shared parameters ---------------------------------------------------------------
    def add_tiling_parameters(self, default_tile: int = 0, default_overlap: int = -1):
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size in pixels (0 = the model's native size)",
            QgsProcessingParameterNumber.Integer, default_tile, minValue=0, maxValue=8192))
        self.addParameter(QgsProcessingParameterNumber(
            "OVERLAP", "Tile overlap in pixels (-1 = the model's default)",
            QgsProcessingParameterNumber.Integer, default_overlap, minValue=-1, maxValue=4096))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", "Device", options=list(DEVICES.values()), defaultValue=0))
        compression = QgsProcessingParameterEnum(
            "COMPRESSION", "Output compression", options=list(COMPRESSIONS.values()), defaultValue=0)
        compression.setFlags(compression.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(compression)

    def add_extent_parameter(self, label="Process only this extent (any CRS; empty = the whole optical raster)"):
        self.addParameter(QgsProcessingParameterExtent("EXTENT", label, optional=True))

    def add_extent_and_scale_parameters(self):
        self.add_extent_parameter()
        self.addParameter(QgsProcessingParameterString(
            "SCALE", "Value scaling (empty = check only, auto, a factor like 0.0255, gain,bias, none)",
            optional=True, defaultValue=""))

    def extent(self, parameters, context, raster_name):
        """EXTENT as (xmin, ymin, xmax, ymax) in the CRS of raster ``raster_name``, or None."""
        if parameters.get("EXTENT") in (None, ""):
            return None
        layer = self.parameterAsRasterLayer(parameters, raster_name, context)
        crs = layer.crs() if layer is not None else None
        if crs is not None and crs.isValid():
            rect = self.parameterAsExtent(parameters, "EXTENT", context, crs)
        else:
            given = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            if given.isValid():
                raise QgsProcessingException(
                    f"EXTENT is given in {given.authid()} but {raster_name} has no CRS, so it cannot be "
                    "reprojected: give the extent in the raster's own coordinates without a CRS")
            rect = self.parameterAsExtent(parameters, "EXTENT", context)
        if rect.isNull() or rect.isEmpty():
            raise QgsProcessingException(f"EXTENT: {parameters.get('EXTENT')!r} is an empty extent")
        box = rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()
        if layer is not None and _without_geotransform(layer.source().split("|")[0]):
            # QGIS shows a raster without georeference with y = -row; the core uses y = row
            box = box[0], -box[3], box[2], -box[1]
        return box

    def value_scale(self, parameters, context):
        from ..core.bands import parse_scale

        return parse_scale(self.parameterAsString(parameters, "SCALE", context) or "")

    def area_and_scale(self, parameters, context, raster_name):
        """The jobs keywords ``extent`` and ``value_scale`` from EXTENT and SCALE."""
        return {"extent": self.extent(parameters, context, raster_name),
                "value_scale": self.value_scale(parameters, context)}

    def add_band_parameter(self, name: str, label: str):
        self.addParameter(QgsProcessingParameterString(
            name, label, optional=True, defaultValue=""))

    def tiling(self, parameters, context):
        tile = self.parameterAsInt(parameters, "TILE_SIZE", context) or None
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        return tile, (None if overlap < 0 else overlap)

    def device(self, parameters, context) -> str:
        return list(DEVICES)[self.parameterAsEnum(parameters, "DEVICE", context)]

    def compression(self, parameters, context) -> str:
        """DEFLATE (default: every GIS reads it), ZSTD (~4x less CPU, same size) or none."""
        return list(COMPRESSIONS)[self.parameterAsEnum(parameters, "COMPRESSION", context)]

    def bands(self, parameters, name, context):
        text = (self.parameterAsString(parameters, name, context) or "").strip()
        if not text:
            return None
        try:
            return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise QgsProcessingException(f"{name}: expected a comma-separated band list like 4,3,2, got {text!r}")

    def raster_path(self, parameters, name, context, optional=False):
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            given = parameters.get(name)
            if isinstance(given, str) and given and os.path.exists(given.split("|")[0]):
                raise QgsProcessingException(f"{name}: {given} is not a raster GDAL can read")
            if isinstance(given, str) and given:
                raise QgsProcessingException(f"{name}: file not found: {given}")
            if optional:
                return None
            raise QgsProcessingException(f"{name}: no raster layer given")
        return layer.source().split("|")[0]

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """QGIS says "not found" for a raster file it cannot open; say what is wrong instead."""
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if definition.type() != "raster" or not isinstance(value, str) or not value:
                continue
            path = value.split("|")[0]
            if os.path.isfile(path):
                from ..core.errors import SkyClearError
                from ..core.raster_io import describe_raster

                try:
                    describe_raster(path)
                except SkyClearError:
                    return False, f"{definition.name()}: {path} is not a raster GDAL can read"
        return super().checkParameterValues(parameters, context)

    # -- running -------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from .. import dependencies

        problem = dependencies.problem_message()
        if problem:
            raise QgsProcessingException(problem)
        from ..core.atomic import cleanup_on_signals

        started = time.time()
        try:
            with cleanup_on_signals(), forward_log(feedback):
                results = self.execute_job(parameters, context, feedback)
        except SkyClearError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"finished in {time.time() - started:.1f} s")
        from ..layers import style_processing_outputs

        style_processing_outputs(results, context, self.name())   # loaded outputs look like the dialog's
        return results

    @staticmethod
    def callbacks(feedback):
        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            feedback.setProgressText(message)

        return progress, feedback.isCanceled

    @staticmethod
    def report(feedback, report):
        feedback.pushInfo(f"execution provider: {report.provider}; {report.tiles} tiles of "
                          f"{report.tile_size}px, overlap {report.overlap}px; {report.seconds:.1f} s")
        if report.provider == "CPUExecutionProvider":
            from ..core.runtime import gpu_status

            available, reason = gpu_status()
            if not available:
                feedback.pushInfo(f"GPU not used: {reason}")
        for name, path in report.outputs.items():
            feedback.pushInfo(f"{name}: {path}")

    def execute_job(self, parameters, context, feedback):
        raise NotImplementedError
