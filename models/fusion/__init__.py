"""SAR–optical fusion (issue 5): CycleGAN cross-modal enhancement + hierarchical fusion network.

Torch is imported only by the submodules that need it (``splits`` is numpy/rasterio-only).
"""
