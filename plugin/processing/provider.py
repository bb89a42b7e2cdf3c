"""The `skyclear` Processing provider."""
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON
from .cloud_removal import RemoveCloudsOpticalAlgorithm, RemoveCloudsSarAlgorithm
from .fusion import EvaluateFusionAlgorithm, EvaluateRestorationAlgorithm, FuseSarOpticalAlgorithm
from .run_model import RunModelAlgorithm

ALGORITHMS = [RunModelAlgorithm, RemoveCloudsSarAlgorithm, RemoveCloudsOpticalAlgorithm,
              FuseSarOpticalAlgorithm, EvaluateFusionAlgorithm, EvaluateRestorationAlgorithm]


class SkyClearProvider(QgsProcessingProvider):
    def id(self):
        return "skyclear"

    def name(self):
        return "SkyClear"

    def longName(self):  # noqa: N802
        return "SkyClear cloud removal and SAR-optical fusion"

    def icon(self):
        return QIcon(ICON)

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
