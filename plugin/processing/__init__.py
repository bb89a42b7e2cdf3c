"""QGIS Processing glue: a provider and one thin algorithm per job of the core."""
