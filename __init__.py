"""SkyClear QGIS plugin. QGIS calls ``classFactory``; importing the package loads nothing else."""


def classFactory(iface):  # noqa: N802 - QGIS API name
    from .plugin.qgis_plugin import SkyClearPlugin

    return SkyClearPlugin(iface)
