"""SkyClear plugin package: `core` is QGIS-free; `processing` and `qgis_plugin` are the QGIS glue."""
