"""Torch training module and the bundled model zoo.

Importing this package must stay cheap and torch-free: QGIS imports `skyclear.models.card`
and the zoo path, while torch is only imported by the training and export commands.
The training module never runs inside QGIS.
"""
import os

ZOO_DIR = os.path.join(os.path.dirname(__file__), "zoo")
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
