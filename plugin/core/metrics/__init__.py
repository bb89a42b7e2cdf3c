"""Quality metrics (numpy, QGIS-free): restoration (PSNR/SSIM/SAM/MAE) and fusion (EN, SD, ...)."""
