"""skyclear:run_model: run any carded ONNX model over an optical (+ optional SAR) raster."""
from qgis.core import (QgsProcessingOutputString, QgsProcessingParameterFile,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from .base import AREA_SCALE_HELP, SkyClearAlgorithm


class RunModelAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "run_model"

    def displayName(self):  # noqa: N802
        return "Run custom model"

    def shortHelpString(self):  # noqa: N802
        return (
            "Runs any ONNX model that carries a SkyClear model card over a raster, tile by tile.\n\n"
            "MODEL: the .onnx file; its card says which bands it takes and how values are scaled.\n"
            "OPTICAL: the raster that defines the output grid (CRS, pixel size, extent).\n"
            "SAR: optional second raster for models with a SAR input; it is reprojected and resampled "
            "onto the optical grid on the fly, so it may use another CRS or resolution.\n"
            "OPTICAL_BANDS / SAR_BANDS: optional 1-based band lists (e.g. 4,3,2) when the raster's "
            "band count differs from the model's.\n"
            "TILE_SIZE: pixels per tile side (0 = the model's native tile). OVERLAP: pixels shared by "
            "neighbouring tiles, blended smoothly (-1 = the model's default).\n"
            "DEVICE: Auto uses the GPU when onnxruntime-gpu and a driver are present.\n" + AREA_SCALE_HELP + "\n"
            "OUTPUT: GeoTIFF on the optical grid; further model outputs are written beside it as "
            "<name>_<output>.tif. Nodata pixels of the inputs stay nodata.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model (.onnx with a SkyClear card)",
                                                     extension="onnx"))
        self.addParameter(QgsProcessingParameterRasterLayer("OPTICAL", "Optical raster (defines the grid)"))
        self.addParameter(QgsProcessingParameterRasterLayer("SAR", "SAR raster", optional=True))
        self.add_band_parameter("OPTICAL_BANDS", "Optical bands (e.g. 4,3,2; empty = automatic)")
        self.add_band_parameter("SAR_BANDS", "SAR bands (e.g. 1,2; empty = automatic)")
        self.add_extent_and_scale_parameters()
        self.add_tiling_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Output"))
        self.addOutput(QgsProcessingOutputString("PROVIDER", "Execution provider"))

    def execute_job(self, parameters, context, feedback):
        from ..core import jobs

        tile, overlap = self.tiling(parameters, context)
        progress, cancelled = self.callbacks(feedback)
        report = jobs.run_model(
            model=self.parameterAsFile(parameters, "MODEL", context),
            optical=self.raster_path(parameters, "OPTICAL", context),
            output=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            sar=self.raster_path(parameters, "SAR", context, optional=True),
            tile_size=tile, overlap=overlap, device=self.device(parameters, context),
            compression=self.compression(parameters, context),
            optical_bands=self.bands(parameters, "OPTICAL_BANDS", context),
            sar_bands=self.bands(parameters, "SAR_BANDS", context),
            **self.area_and_scale(parameters, context, "OPTICAL"),
            progress=progress, is_cancelled=cancelled)
        self.report(feedback, report)
        first = next(iter(report.outputs.values()))
        return {"OUTPUT": first, "PROVIDER": report.provider}
