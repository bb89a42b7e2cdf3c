"""The `skyclear` Processing provider: one algorithm per registry tool, plus the evaluations."""
import functools

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.tools import TOOLS
from .base import ICON, ToolAlgorithm
from .evaluation import EvaluateFusionAlgorithm, EvaluateRestorationAlgorithm

# what the provider loads: a factory per algorithm (each registry tool, then the evaluations)
ALGORITHMS = [functools.partial(ToolAlgorithm, spec) for spec in TOOLS] + [EvaluateFusionAlgorithm,
                                                                         EvaluateRestorationAlgorithm]


class SkyClearProvider(QgsProcessingProvider):
    def id(self):
        return "skyclear"

    def name(self):
        return "SkyClear"

    def longName(self):  # noqa: N802
        return "SkyClear cloud removal and SAR-optical fusion"

    def icon(self):
        return QIcon(ICON)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        # every raster output is written as GeoTIFF (core/raster_io.py refuses other extensions)
        return ["tif", "tiff"]

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
