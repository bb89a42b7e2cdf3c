"""Diffusion Enhancement (DE) for optical-only cloud removal (Sui et al., seed 002).

Modules: ``reference`` (reference network E), ``unet`` (conditional noise predictor and
weight-allocation UNets), ``gaussian`` (schedule, samplers, the DE step), ``data`` (pair
readers), ``splits`` (held-out pairs), ``trainer`` (the four training stages and export).
"""
