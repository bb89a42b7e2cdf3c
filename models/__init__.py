"""Torch training module and the bundled model zoo.

Importing this package must stay cheap and torch-free: QGIS imports `skyclear.models.card`
(the zoo path itself lives in `plugin.core.zoo`), while torch is only imported by the training
and export commands.
The training module never runs inside QGIS.
"""
import os

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
