"""QGIS-free core: raster I/O, tiling, ONNX runtime, pipelines and metrics.

Nothing under this package may import `qgis`; the training module and headless
scripts use it directly.
"""
