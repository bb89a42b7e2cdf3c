"""Resume: a job is finished when every output exists and carries the job's provenance key.

The key (``plan.Plan.key``) hashes the tool, its options, the model files' SHA-256 and
each input's path, size and modification time, and the SkyClear version. It is written into
every output as the GeoTIFF tag ``SKYCLEAR_BATCH_KEY``, next to the engine's own
``SKYCLEAR_*`` tags; ``SKYCLEAR_BATCH_JOB`` holds the JSON it hashes, for people to read.
Any change (a retrained model, a new input, another option) gives another key: the job reruns.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict

from .plan import Plan

KEY_TAG = "SKYCLEAR_BATCH_KEY"
JOB_TAG = "SKYCLEAR_BATCH_JOB"


def batch_tags(plan: Plan) -> Dict[str, str]:
    return {KEY_TAG: plan.key, JOB_TAG: plan.describe}


def output_key(path: str):
    """The key in an output's tags, or None when it is missing or unreadable."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    if not os.path.isfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.tags().get(KEY_TAG)
    except RasterioError:
        return None


def is_done(plan: Plan) -> bool:
    return bool(plan.outputs) and all(output_key(p) == plan.key for p in plan.outputs.values())
