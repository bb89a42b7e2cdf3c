"""What runs on a worker: one job, one row band of a split job, or the assembly of the bands.

Every task returns a result dict and never raises for a job's own failure (bad input, model
error): that job fails alone and the message reaches the report. A task that dies with its
worker is retried elsewhere by Dask; whatever the dead process left half-written is a
hidden temporary file, swept by the next write into that folder (``atomic.sweep_stale``)
and by the driver at the end of the batch.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import socket
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

from ..plugin.core import atomic, engine, jobs, tools
from ..plugin.core.errors import OutputError, SkyClearError
from ..plugin.core.pipelines import generic

log = logging.getLogger("skyclear.batch")


def _configure(threads: Optional[int]) -> dict:
    """Model sessions kept for the worker's life; onnxruntime threads per job."""
    if threads:
        os.environ["SKYCLEAR_THREADS"] = str(int(threads))
    elif not os.environ.get("SKYCLEAR_THREADS"):
        slots = 1
        with contextlib.suppress(Exception):
            from distributed import get_worker

            slots = get_worker().state.nthreads
        os.environ["SKYCLEAR_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, slots)))
    return generic.keep_sessions()


def _result(job: Dict, **extra) -> Dict[str, Any]:
    out = {"job": job["name"], "row": job["row"], "tool": job["tool"], "status": "failed", "seconds": 0.0,
           "provider": "", "error": "", "outputs": {}, "worker": f"{socket.gethostname()}:{os.getpid()}",
           "models_loaded": 0}
    out.update(extra)
    return out


def _call(job: Dict, kwargs: Dict, tags: Dict[str, str], tile_rows=None):
    with engine.run_options(tile_rows=tile_rows, tags=tags):
        return getattr(jobs, job["tool"])(**kwargs)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SkyClearError):
        return str(exc)
    log.error("unexpected error:\n%s", traceback.format_exc())
    return f"{type(exc).__name__}: {exc}"


def run_job(job: Dict, tags: Dict[str, str], threads: Optional[int] = None) -> Dict[str, Any]:
    """Run one whole job on this worker."""
    started = time.time()
    sessions = _configure(threads)
    loaded = len(sessions)
    result = _result(job)
    try:
        report = _call(job, dict(job["kwargs"]), tags)
        result.update(status="done", provider=report.provider, outputs=report.outputs)
    except Exception as exc:
        result["error"] = _error_text(exc)
    result.update(seconds=round(time.time() - started, 3), models_loaded=len(sessions) - loaded)
    return result


# ---------------------------------------------------------------------------------------
# split scenes


def parts_folder(output: str, key: str) -> str:
    """Hidden folder beside the output for a split job's row-band files."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.skyclear-parts-{key[:12]}")


def part_kwargs(job: Dict, folder: str, index: int) -> Tuple[Dict, str]:
    """The job's keywords with its outputs redirected into the parts folder."""
    kwargs = dict(job["kwargs"])
    main = os.path.join(folder, f"part{index:03d}.tif")
    kwargs["output"] = main
    for output in tools.tool(job["tool"]).outputs[1:]:     # further outputs beside the part
        kwargs[output.keyword] = tools.sibling_path(main, output.sibling)
    return kwargs, main


def run_part(job: Dict, tags: Dict[str, str], folder: str, index: int, tile_rows: Tuple[int, Optional[int]],
             threads: Optional[int] = None) -> Dict[str, Any]:
    """Compute one row band of a split job into its part files."""
    started = time.time()
    sessions = _configure(threads)
    loaded = len(sessions)
    result = _result(job, part=index)
    try:
        os.makedirs(folder, exist_ok=True)
        kwargs, _ = part_kwargs(job, folder, index)
        report = _call(job, kwargs, tags, tile_rows=tuple(tile_rows))
        result.update(status="done", provider=report.provider, outputs=report.outputs)
    except Exception as exc:
        result["error"] = _error_text(exc)
    result.update(seconds=round(time.time() - started, 3), models_loaded=len(sessions) - loaded)
    return result


def assemble(job: Dict, outputs: Dict[str, str], folder: str, parts: List[Dict[str, Any]],
             threads: Optional[int] = None) -> Dict[str, Any]:
    """Stack the row bands into each final output (all committed together), then remove
    the parts. The result is the single-process output, pixel for pixel, with its profile."""
    t0 = time.time()
    result = _result(job, parts=len(parts))
    failed = [p for p in parts if p["status"] != "done"]
    try:
        if failed:
            result["error"] = failed[0]["error"]
            return result
        result["provider"] = parts[0]["provider"]
        elapsed = max(p["seconds"] for p in parts)  # the bands ran side by side
        with engine_env(threads):
            result["outputs"] = stack_parts({n: [p["outputs"][n] for p in parts] for n in outputs}, outputs, elapsed)
        result["status"] = "done"
    except Exception as exc:
        result["error"] = _error_text(exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        result["assemble_seconds"] = round(time.time() - t0, 3)
        result["seconds"] = round(sum(p["seconds"] for p in parts) + result["assemble_seconds"], 3)
        result["worker"] = ",".join(sorted({p["worker"] for p in parts}))
        result["models_loaded"] = sum(p.get("models_loaded", 0) for p in parts)
    return result


@contextlib.contextmanager
def engine_env(threads: Optional[int]):
    """The GDAL settings the engine writes under (internal masks), plus threaded compression."""
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=engine.GDAL_CACHE_BYTES, GDAL_TIFF_INTERNAL_MASK=True,
                      GDAL_NUM_THREADS=str(threads or os.environ.get("SKYCLEAR_THREADS") or 1)):
        yield


def stack_parts(parts: Dict[str, List[str]], outputs: Dict[str, str], seconds: float) -> Dict[str, str]:
    """Write each output from its part files (in row order), strip by strip; commit all or none."""
    import warnings

    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    from ..plugin.core.raster_io import GeoTiffWriter, Grid

    writers = []
    try:
        for name, final in outputs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                sources = [rasterio.open(path) for path in parts[name]]
            try:
                height = _check_rows(name, sources)
                first = sources[0]
                use_mask = MaskFlags.per_dataset in first.mask_flag_enums[0]
                nodata = next((s.nodata for s in sources if s.nodata is not None), None)
                tags = {k: v for k, v in first.tags().items() if k != "SKYCLEAR_PART"}
                tags["SKYCLEAR_SECONDS"] = f"{seconds:.2f}"
                writer = GeoTiffWriter(final, Grid(first.crs, first.transform, first.width, height), first.count,
                                       first.dtypes[0], nodata, list(first.descriptions), tags,
                                       first.block_shapes[0][0], use_mask=use_mask)
                writers.append(writer)
                if nodata is not None:
                    writer.mark_invalid()  # a part declared nodata: some pixel of the scene is invalid
                y = 0
                step = first.block_shapes[0][0]
                for src in sources:
                    for r in range(0, src.height, step):
                        window = Window(0, r, src.width, min(step, src.height - r))
                        data = src.read(window=window)
                        valid = src.read_masks(1, window=window) > 0 if use_mask else None
                        writer.write(data, Window(0, y + r, src.width, window.height), valid)
                    y += src.height
            finally:
                for src in sources:
                    src.close()
        for writer in writers:
            writer.finish()
        atomic.commit([(w.tmp_path, w.path) for w in writers])
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return {name: os.path.abspath(path) for name, path in outputs.items()}


def _check_rows(name: str, sources) -> int:
    """The scene height, after checking that the parts cover it row for row, in order."""
    y, height = 0, None
    for src in sources:
        part = json.loads(src.tags().get("SKYCLEAR_PART", "null") or "null")
        if not part:
            raise OutputError(f"{src.name} is not a SkyClear row band (no SKYCLEAR_PART tag)")
        height = part["height"]
        if part["rows"][0] != y or part["rows"][1] - y != src.height or src.width != sources[0].width:
            raise OutputError(f"output '{name}': row bands do not tile the scene (band {src.name} covers rows "
                              f"{part['rows']}, expected to start at row {y})")
        y = part["rows"][1]
    if y != height:
        raise OutputError(f"output '{name}': row bands cover rows 0-{y} of {height}; the plan and the "
                          "engine's tile grid disagree")
    return height


# ---------------------------------------------------------------------------------------
# leftovers


def remove_leftovers(paths) -> List[str]:
    """Remove SkyClear temporary files and part folders of these outputs (run when no task
    of theirs is running: the end of a batch)."""
    removed = []
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        for found in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.skyclear-*")):
            if os.path.isdir(found):
                shutil.rmtree(found, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(found)
            removed.append(found)
    return removed
