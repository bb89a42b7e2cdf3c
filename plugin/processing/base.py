"""What every SkyClear algorithm shares (progress, errors, log, rasters, extents), and
``ToolAlgorithm``: the one Processing algorithm class for every tool of the registry
(``core/tools.py``): its parameters, help and job call all come from the tool's spec."""
from __future__ import annotations

import contextlib
import logging
import os
import time

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)
from qgis.PyQt.QtGui import QIcon

from ..core import tools
from ..core.errors import SkyClearError

ICON = os.path.join(os.path.dirname(__file__), "..", "..", "icons", "skyclear.svg")


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

    def add_extent_parameter(self, label="Process only this extent (any CRS; empty = the whole optical raster)"):
        self.addParameter(QgsProcessingParameterExtent("EXTENT", label, optional=True))

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

    def bands(self, parameters, name, context):
        from ..core.bands import parse_band_list

        try:
            return parse_band_list(self.parameterAsString(parameters, name, context))
        except ValueError as exc:
            raise QgsProcessingException(f"{name}: {exc}") from None

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
        if report.tiles_skipped:
            feedback.pushInfo(f"{report.tiles_skipped} tiles hold only nodata: written as nodata without the model")
        if report.provider == "CPUExecutionProvider":
            from ..core.runtime import gpu_status

            available, reason = gpu_status()
            if not available:
                feedback.pushInfo(f"GPU not used: {reason}")
        for name, path in report.outputs.items():
            feedback.pushInfo(f"{name}: {path}")

    def execute_job(self, parameters, context, feedback):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# the registry's tools


def _parameter(option: tools.Option):
    """The Processing parameter of a registry option."""
    number = QgsProcessingParameterNumber
    limits = {k: v for k, v in (("minValue", option.minimum), ("maxValue", option.maximum)) if v is not None}
    if option.kind == tools.BOOL:
        parameter = QgsProcessingParameterBoolean(option.param, option.label, bool(option.default))
    elif option.kind in (tools.INT, tools.FLOAT):
        kind = number.Integer if option.kind == tools.INT else number.Double
        if option.from_model:     # -1 = the model card's value
            limits["minValue"] = -1
        default = -1 if option.from_model and option.default is None else option.default
        parameter = number(option.param, option.label, kind, default, **limits)
    elif option.kind == tools.TILE:       # 0 = the model's tile
        parameter = number(option.param, option.label, number.Integer, option.default or 0, **limits)
    elif option.kind == tools.OVERLAP:    # -1 = the model's default
        parameter = number(option.param, option.label, number.Integer,
                           -1 if option.default is None else option.default, **limits)
    elif option.kind == tools.CHOICE:
        parameter = QgsProcessingParameterEnum(option.param, option.label, options=list(option.choices.values()),
                                               defaultValue=list(option.choices).index(option.default))
    elif option.kind == tools.EXTENT:
        parameter = QgsProcessingParameterExtent(option.param, option.label, optional=True)
    elif option.kind == tools.SCALE:
        parameter = QgsProcessingParameterString(option.param, option.label, optional=True, defaultValue="")
    else:
        raise ValueError(f"option {option.keyword}: unknown kind {option.kind!r}")
    if option.advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


class ToolAlgorithm(SkyClearAlgorithm):
    """The algorithm ``skyclear:<spec.name>`` of a registry tool."""

    def __init__(self, spec: tools.ToolSpec):
        super().__init__()
        self.spec = spec

    def createInstance(self):  # noqa: N802
        return type(self)(self.spec)

    def name(self):
        return self.spec.name

    def displayName(self):  # noqa: N802
        return self.spec.title

    def shortHelpString(self):  # noqa: N802
        return self.spec.help_text()

    def initAlgorithm(self, config=None):  # noqa: N802
        spec = self.spec
        for item in spec.inputs:
            self.addParameter(QgsProcessingParameterRasterLayer(item.param, item.label, optional=not item.required))
        for item in spec.inputs:
            if item.bands_param:
                self.addParameter(QgsProcessingParameterString(item.bands_param, item.bands_label, optional=True,
                                                               defaultValue=""))
        for slot in spec.models:
            self.addParameter(QgsProcessingParameterFile(slot.param, slot.label, extension="onnx",
                                                         optional=not slot.required))
        for option in spec.all_options():
            self.addParameter(_parameter(option))
        main = spec.outputs[0].param
        for output in spec.outputs:   # the further outputs are optional: the job puts them beside the main one
            label = f"{output.label} (empty = <{main} name>_{output.sibling}.tif beside {main})" if output.sibling \
                else output.label
            self.addParameter(QgsProcessingParameterRasterDestination(output.param, label,
                                                                      optional=bool(output.sibling)))
        self.addOutput(QgsProcessingOutputString("PROVIDER", "Execution provider"))

    def option_value(self, option: tools.Option, parameters, context):
        """A parameter as the job keyword wants it."""
        kind, name = option.kind, option.param
        if kind == tools.BOOL:
            return self.parameterAsBoolean(parameters, name, context)
        if kind in (tools.INT, tools.FLOAT):
            read = self.parameterAsInt if kind == tools.INT else self.parameterAsDouble
            value = read(parameters, name, context)
            return None if option.from_model and value < 0 else value
        if kind == tools.CHOICE:
            return list(option.choices)[self.parameterAsEnum(parameters, name, context)]
        if kind == tools.TILE:
            return self.parameterAsInt(parameters, name, context) or None
        if kind == tools.OVERLAP:
            value = self.parameterAsInt(parameters, name, context)
            return None if value < 0 else value
        if kind == tools.EXTENT:
            return self.extent(parameters, context, self.spec.input("optical").param)
        return self.value_scale(parameters, context)

    def job_kwargs(self, parameters, context):
        """The ``jobs.<name>`` keywords from the parameters, as the registry declares them."""
        spec, kwargs = self.spec, {}
        for item in spec.inputs:
            kwargs[item.keyword] = self.raster_path(parameters, item.param, context, optional=not item.required)
            if item.bands_param:
                chosen = self.bands(parameters, item.bands_param, context)
                kwargs[item.bands_keyword] = chosen or (list(item.default_bands) if item.default_bands else None)
        for slot in spec.models:
            kwargs[slot.keyword] = self.parameterAsFile(parameters, slot.param, context) or None
        for option in spec.all_options():
            kwargs[option.keyword] = self.option_value(option, parameters, context)
        for output in spec.outputs:   # an optional output not given comes as "": None lets the job pick its default
            kwargs[output.keyword] = self.parameterAsOutputLayer(parameters, output.param, context) or None
        return kwargs

    def execute_job(self, parameters, context, feedback):
        kwargs = self.job_kwargs(parameters, context)
        progress, cancelled = self.callbacks(feedback)
        report = self.spec.job()(**kwargs, progress=progress, is_cancelled=cancelled)
        self.report(feedback, report)
        results = {output.param: path for output, path in zip(self.spec.outputs, report.outputs.values())}
        return dict(results, PROVIDER=report.provider)
