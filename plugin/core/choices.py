"""The fixed choices every front end offers (Processing, the dialog, batch manifests), each
defined once, in the order offered, with the label a user sees. Light on purpose: the
Processing provider imports it when QGIS starts."""

DEVICES = {
    "auto": "Auto (GPU if available)",
    "cpu": "CPU",
    "gpu": "GPU (CUDA)",
}

FUSION_METHODS = {
    "network": "Network (trained fusion model)",
    "laplacian": "Laplacian pyramid (classical)",
    "guided": "Guided filter (classical)",
    "average": "Luminance average (classical)",
    "optical": "Optical only (reference)",
}

OPTICAL_MODES = {
    "diffusion": "Diffusion enhancement (reference + diffusion steps)",
    "reference": "Reference network only (fast)",
}

# output GeoTIFF compression (raster_io.COMPRESSIONS has the creation options)
COMPRESSIONS = {
    "deflate": "DEFLATE (every GIS reads it)",
    "zstd": "ZSTD (faster, same size)",
    "none": "None (fastest, largest)",
}

# what skyclear:evaluate_fusion returns (metrics.fusion computes them, in this order)
FUSION_METRICS = ("en", "sd", "sf", "ag", "qabf", "ssim", "vif", "mi", "psnr")

# the overall row of skyclear:evaluate_restoration (metrics.restoration)
RESTORATION_METRICS = ("psnr", "ssim", "sam", "mae")
