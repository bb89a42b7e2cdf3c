"""skyclear:fuse_sar_optical, skyclear:evaluate_fusion and skyclear:evaluate_restoration."""
from qgis.core import (QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingParameterBoolean,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from ..core.choices import FUSION_METHODS
from .base import AREA_SCALE_HELP, SkyClearAlgorithm
from .cloud_removal import TILING_HELP

FUSION_METRICS = ["en", "sd", "sf", "ag", "qabf", "ssim", "vif", "mi", "psnr"]


class FuseSarOpticalAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "fuse_sar_optical"

    def displayName(self):  # noqa: N802
        return "Fuse SAR and optical"

    def shortHelpString(self):  # noqa: N802
        return (
            "Fuses a SAR image into an optical image: the result keeps the optical colours and adds "
            "SAR structure (the luminance is fused, colour is recomposed from the optical Cb, Cr).\n\n"
            "SAR: one band (8-bit display values, or σ⁰ in dB for float rasters); reprojected onto the "
            "optical grid on the fly. OPTICAL: RGB (a grey 1-band image is used as R = G = B); it "
            "defines the output grid.\n"
            "METHOD: network (the bundled hierarchical fusion network or MODEL), laplacian (Laplacian "
            "pyramid, max-abs detail), guided (guided-filter base/detail weighting), average, optical "
            "(optical only, a baseline).\n"
            "DESPECKLE: Lee-filter the SAR before fusion.\n" + AREA_SCALE_HELP + "\n" + TILING_HELP + "\n"
            "OUTPUT: fused RGB GeoTIFF in the optical dtype.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("SAR", "SAR image"))
        self.addParameter(QgsProcessingParameterRasterLayer("OPTICAL", "Optical image (RGB)"))
        self.add_band_parameter("SAR_BANDS", "SAR band (empty = band 1)")
        self.add_band_parameter("OPTICAL_BANDS", "Optical bands (empty = automatic)")
        self.addParameter(QgsProcessingParameterEnum("METHOD", "Method", options=list(FUSION_METHODS.values()),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Fusion model (network method; empty = bundled)",
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterBoolean("DESPECKLE", "Despeckle SAR (Lee filter)", False))
        self.add_extent_and_scale_parameters()
        self.add_tiling_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Fused image"))
        self.addOutput(QgsProcessingOutputString("PROVIDER", "Execution provider"))

    def execute_job(self, parameters, context, feedback):
        from ..core import jobs

        tile, overlap = self.tiling(parameters, context)
        progress, cancelled = self.callbacks(feedback)
        report = jobs.fuse_sar_optical(
            sar=self.raster_path(parameters, "SAR", context),
            optical=self.raster_path(parameters, "OPTICAL", context),
            output=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            method=list(FUSION_METHODS)[self.parameterAsEnum(parameters, "METHOD", context)],
            model=self.parameterAsFile(parameters, "MODEL", context) or None,
            despeckle=self.parameterAsBoolean(parameters, "DESPECKLE", context),
            tile_size=tile, overlap=overlap, device=self.device(parameters, context),
            compression=self.compression(parameters, context),
            optical_bands=self.bands(parameters, "OPTICAL_BANDS", context),
            sar_bands=self.bands(parameters, "SAR_BANDS", context) or [1],
            **self.area_and_scale(parameters, context, "OPTICAL"),
            progress=progress, is_cancelled=cancelled)
        self.report(feedback, report)
        return {"OUTPUT": next(iter(report.outputs.values())), "PROVIDER": report.provider}


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
        for key in ("PSNR", "SSIM", "SAM", "MAE"):
            self.addOutput(QgsProcessingOutputNumber(key, key))

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
        return {"OUTPUT": path, **{k.upper(): overall.get(k) for k in ("psnr", "ssim", "sam", "mae")}}
