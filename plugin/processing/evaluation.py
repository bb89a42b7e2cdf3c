"""skyclear:evaluate_fusion and skyclear:evaluate_restoration: quality of a result (not tools
of the registry: they score outputs, they do not run a model)."""
from qgis.core import (QgsProcessingOutputNumber, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer)

from ..core.choices import FUSION_METRICS, RESTORATION_METRICS
from .base import SkyClearAlgorithm


class EvaluateFusionAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "evaluate_fusion"

    def displayName(self):  # noqa: N802
        return "Evaluate fusion"

    def shortHelpString(self):  # noqa: N802
        return ("Fusion quality of FUSED against its sources (A = SAR, B = optical) on 8-bit grey images: "
                "EN (bits), SD, SF, AG (no reference), Qabf, SSIM(F,A)+SSIM(F,B), VIF(A,F)+VIF(B,F), "
                "MI (bits, summed) and PSNR. 8-bit rasters are used as they are; others are stretched "
                "between their 2nd and 98th percentiles. RGB becomes grey by BT.601 luma. SAR is aligned "
                "onto the fused grid; a grey OPTICAL may be compared with an RGB FUSED (luminance). EXTENT "
                "(optional, any CRS): evaluate only this area. OUTPUT: a CSV with one row; the values are "
                "also returned.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("FUSED", "Fused image"))
        self.addParameter(QgsProcessingParameterRasterLayer("SAR", "SAR source"))
        self.addParameter(QgsProcessingParameterRasterLayer("OPTICAL", "Optical source"))
        self.add_extent_parameter("Evaluate only this extent (any CRS; empty = all of FUSED)")
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Metrics table", "CSV files (*.csv)"))
        for key in FUSION_METRICS:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), key.upper()))

    def execute_job(self, parameters, context, feedback):
        from ..core.evaluation import evaluate_fusion, write_csv

        values = evaluate_fusion(self.raster_path(parameters, "FUSED", context),
                                 self.raster_path(parameters, "SAR", context),
                                 self.raster_path(parameters, "OPTICAL", context),
                                 extent=self.extent(parameters, context, "FUSED"))
        path = write_csv([values], self.parameterAsFileOutput(parameters, "OUTPUT", context))
        for key, value in values.items():
            feedback.pushInfo(f"{key.upper()}: {value:.4f}")
        return {"OUTPUT": path, **{k.upper(): v for k, v in values.items()}}


class EvaluateRestorationAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "evaluate_restoration"

    def displayName(self):  # noqa: N802
        return "Evaluate restoration"

    def shortHelpString(self):  # noqa: N802
        return ("PSNR, SSIM (11×11 Gaussian, σ 1.5), SAM (degrees) and MAE of PREDICTION against REFERENCE, "
                "per band and overall. DATA_RANGE 0 = automatic: 255 for 8-bit, 10000 for uint16 "
                "reflectance DN, 1 otherwise. MASK (optional): pixels where band 1 > 0 are evaluated, "
                "e.g. a cloud mask to score cloudy pixels only. EXTENT (optional, any CRS): evaluate only "
                "this area. OUTPUT: CSV, one row per band plus 'all'.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("PREDICTION", "Prediction"))
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference"))
        self.addParameter(QgsProcessingParameterRasterLayer("MASK", "Mask", optional=True))
        self.addParameter(QgsProcessingParameterNumber("DATA_RANGE", "Data range (0 = automatic)",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.add_extent_parameter("Evaluate only this extent (any CRS; empty = all of PREDICTION)")
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Metrics table", "CSV files (*.csv)"))
        for key in RESTORATION_METRICS:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), key.upper()))

    def execute_job(self, parameters, context, feedback):
        from ..core.evaluation import evaluate_restoration, write_csv

        rows = evaluate_restoration(self.raster_path(parameters, "PREDICTION", context),
                                    self.raster_path(parameters, "REFERENCE", context),
                                    self.raster_path(parameters, "MASK", context, optional=True),
                                    self.parameterAsDouble(parameters, "DATA_RANGE", context) or None,
                                    extent=self.extent(parameters, context, "PREDICTION"))
        path = write_csv(rows, self.parameterAsFileOutput(parameters, "OUTPUT", context))
        overall = rows[-1]
        feedback.pushInfo(", ".join(f"{k}: {v:.4f}" for k, v in overall.items() if k != "band"))
        return {"OUTPUT": path, **{k.upper(): overall.get(k) for k in RESTORATION_METRICS}}
