"""skyclear:remove_clouds_sar and skyclear:remove_clouds_optical."""
from qgis.core import (QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from ..core.choices import OPTICAL_MODES
from .base import AREA_SCALE_HELP, SkyClearAlgorithm

TILING_HELP = (
    "TILE_SIZE: pixels per tile side (0 = the model's native tile). OVERLAP: pixels shared by "
    "neighbouring tiles and blended smoothly (-1 = the model's default). DEVICE: Auto uses the GPU "
    "when onnxruntime-gpu and an NVIDIA driver are present, else the CPU.")


class RemoveCloudsSarAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "remove_clouds_sar"

    def displayName(self):  # noqa: N802
        return "Remove clouds (SAR-assisted)"

    def shortHelpString(self):  # noqa: N802
        return (
            "IB-HFN: restores a cloudy Sentinel-2 image with the help of a Sentinel-1 image of the "
            "same area.\n\n"
            "OPTICAL: cloudy Sentinel-2 L1C, 13 bands in the order B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,"
            "B11,B12, uint16 DN (reflectance × 10000). It defines the output grid.\n"
            "SAR: Sentinel-1 GRD backscatter σ⁰ in dB, bands VV, VH. Another CRS, resolution or extent "
            "is fine: it is reprojected onto the optical grid on the fly.\n"
            "OPTICAL_BANDS / SAR_BANDS: 1-based band lists when the rasters hold other bands or orders "
            "(bands named like B4 or VV in the band descriptions are found automatically).\n"
            "MODEL: a SkyClear SAR cloud-removal ONNX model; empty = the bundled IB-HFN.\n"
            "KEEP_CLEAR: where the predicted cloud probability is below CLEAR_THRESHOLD, copy the "
            "input pixel unchanged.\n" + AREA_SCALE_HELP + "\n" + TILING_HELP + "\n"
            "OUTPUT: 13-band cloud-free GeoTIFF in the input's units (uint16 DN). CLOUD_PROBABILITY: "
            "float GeoTIFF, 0 = clear, 1 = cloud.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("OPTICAL", "Cloudy Sentinel-2 (13 bands)"))
        self.addParameter(QgsProcessingParameterRasterLayer("SAR", "Sentinel-1 (VV, VH in dB)"))
        self.add_band_parameter("OPTICAL_BANDS", "Optical bands (empty = automatic)")
        self.add_band_parameter("SAR_BANDS", "SAR bands (empty = automatic)")
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model (empty = bundled IB-HFN)",
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterBoolean("KEEP_CLEAR", "Keep clear pixels unchanged", False))
        self.addParameter(QgsProcessingParameterNumber(
            "CLEAR_THRESHOLD", "Cloud probability below which a pixel counts as clear",
            QgsProcessingParameterNumber.Double, 0.5, minValue=0.0, maxValue=1.0))
        self.add_extent_and_scale_parameters()
        self.add_tiling_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Cloud-free image"))
        self.addParameter(QgsProcessingParameterRasterDestination("CLOUD_PROBABILITY", "Cloud probability"))
        self.addOutput(QgsProcessingOutputString("PROVIDER", "Execution provider"))

    def execute_job(self, parameters, context, feedback):
        from ..core import jobs

        tile, overlap = self.tiling(parameters, context)
        progress, cancelled = self.callbacks(feedback)
        report = jobs.remove_clouds_sar(
            optical=self.raster_path(parameters, "OPTICAL", context),
            sar=self.raster_path(parameters, "SAR", context),
            output=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            cloud_probability=self.parameterAsOutputLayer(parameters, "CLOUD_PROBABILITY", context),
            model=self.parameterAsFile(parameters, "MODEL", context) or None,
            keep_clear=self.parameterAsBoolean(parameters, "KEEP_CLEAR", context),
            clear_threshold=self.parameterAsDouble(parameters, "CLEAR_THRESHOLD", context),
            tile_size=tile, overlap=overlap, device=self.device(parameters, context),
            compression=self.compression(parameters, context),
            optical_bands=self.bands(parameters, "OPTICAL_BANDS", context),
            sar_bands=self.bands(parameters, "SAR_BANDS", context),
            **self.area_and_scale(parameters, context, "OPTICAL"),
            progress=progress, is_cancelled=cancelled)
        self.report(feedback, report)
        paths = list(report.outputs.values())
        return {"OUTPUT": paths[0], "CLOUD_PROBABILITY": paths[1], "PROVIDER": report.provider}




class RemoveCloudsOpticalAlgorithm(SkyClearAlgorithm):
    def name(self):
        return "remove_clouds_optical"

    def displayName(self):  # noqa: N802
        return "Remove clouds (diffusion)"

    def shortHelpString(self):  # noqa: N802
        return (
            "Diffusion Enhancement: removes clouds from an RGB (or RGB+NIR) image without SAR. A "
            "reference network gives a first estimate; a diffusion model refines its texture.\n\n"
            "INPUT: cloudy image, bands R,G,B (8-bit for the bundled models). It defines the output grid.\n"
            "INPUT_BANDS: 1-based band list when the raster has other bands (e.g. 4,3,2 for Sentinel-2).\n"
            "MODEL / STEP_MODEL: reference and per-step ONNX models; empty = bundled (trained on RICE).\n"
            "MODE: diffusion (reference + sampling) or reference (fast, reference network only).\n"
            "STEPS: sampling steps (more = slower). ETA: lower bound of the reference weight W (0–1). "
            "SEED: noise seed; the same seed and input give the same output.\n" + AREA_SCALE_HELP + "\n"
            + TILING_HELP + "\n"
            "OUTPUT: GeoTIFF in the input's dtype on the input's grid.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Cloudy image (RGB)"))
        self.add_band_parameter("INPUT_BANDS", "Bands (empty = automatic)")
        self.addParameter(QgsProcessingParameterFile("MODEL", "Reference model (empty = bundled)",
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterFile("STEP_MODEL", "Diffusion step model (empty = bundled)",
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterEnum("MODE", "Mode", options=list(OPTICAL_MODES.values()),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("STEPS", "Sampling steps",
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=1,
                                                       maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber("ETA", "η (minimum reference weight)",
                                                       QgsProcessingParameterNumber.Double, 0.3, minValue=0.0,
                                                       maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber("SEED", "Random seed",
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.add_extent_and_scale_parameters()
        self.add_tiling_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Cloud-free image"))
        self.addOutput(QgsProcessingOutputString("PROVIDER", "Execution provider"))

    def execute_job(self, parameters, context, feedback):
        from ..core import jobs

        tile, overlap = self.tiling(parameters, context)
        progress, cancelled = self.callbacks(feedback)
        report = jobs.remove_clouds_optical(
            optical=self.raster_path(parameters, "INPUT", context),
            output=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            model=self.parameterAsFile(parameters, "MODEL", context) or None,
            step_model=self.parameterAsFile(parameters, "STEP_MODEL", context) or None,
            mode=list(OPTICAL_MODES)[self.parameterAsEnum(parameters, "MODE", context)],
            steps=self.parameterAsInt(parameters, "STEPS", context),
            eta=self.parameterAsDouble(parameters, "ETA", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            tile_size=tile, overlap=overlap, device=self.device(parameters, context),
            compression=self.compression(parameters, context),
            optical_bands=self.bands(parameters, "INPUT_BANDS", context),
            **self.area_and_scale(parameters, context, "INPUT"),
            progress=progress, is_cancelled=cancelled)
        self.report(feedback, report)
        return {"OUTPUT": next(iter(report.outputs.values())), "PROVIDER": report.provider}
