"""What every SkyClear algorithm shares: tile/overlap/device parameters, progress, errors."""
from __future__ import annotations

import os
import time

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterEnum,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)
from qgis.PyQt.QtGui import QIcon

from ..core.errors import SkyClearError

ICON = os.path.join(os.path.dirname(__file__), "..", "..", "icons", "skyclear.svg")
DEVICES = ["auto", "cpu", "gpu"]


class SkyClearAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses define name/params and implement ``execute_job(parameters, context, feedback)`` (``run`` is QGIS's own)."""

    group_name = "SkyClear"

    def group(self):
        return self.group_name

    def groupId(self):  # noqa: N802
        return "skyclear"

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
            "DEVICE", "Device", options=["Auto (GPU if available)", "CPU", "GPU (CUDA)"], defaultValue=0))

    def add_band_parameter(self, name: str, label: str):
        self.addParameter(QgsProcessingParameterString(
            name, label, optional=True, defaultValue=""))

    def tiling(self, parameters, context):
        tile = self.parameterAsInt(parameters, "TILE_SIZE", context) or None
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        return tile, (None if overlap < 0 else overlap)

    def device(self, parameters, context) -> str:
        return DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]

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
            if optional:
                return None
            raise QgsProcessingException(f"{name}: no raster layer given")
        return layer.source().split("|")[0]

    # -- running -------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from .. import dependencies

        problem = dependencies.problem_message()
        if problem:
            raise QgsProcessingException(problem)
        started = time.time()
        try:
            results = self.execute_job(parameters, context, feedback)
        except SkyClearError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"finished in {time.time() - started:.1f} s")
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
        for name, path in report.outputs.items():
            feedback.pushInfo(f"{name}: {path}")

    def execute_job(self, parameters, context, feedback):
        raise NotImplementedError
