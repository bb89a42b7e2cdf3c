"""Batch and distributed runs of the SkyClear tools on Dask (QGIS-free, on ``plugin.core``).

    from skyclear.batch import run_batch
    summary = run_batch("jobs.csv", workers=2, report="report.csv")

or ``python -m skyclear.batch jobs.csv``. See ``manifest`` for the manifest's columns,
``pairing`` for building one from folders, ``runner`` for how jobs reach the workers.
"""
from .manifest import TOOLS, Job, ManifestError, read_manifest, write_manifest
from .pairing import pair_scenes
from .plan import plan_jobs, require_valid
from .runner import BatchInterrupted, BatchSummary, run_batch, write_report

__all__ = ["TOOLS", "BatchInterrupted", "BatchSummary", "Job", "ManifestError", "pair_scenes", "plan_jobs",
           "read_manifest", "require_valid", "run_batch", "write_manifest", "write_report"]
