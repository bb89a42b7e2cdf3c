"""Run a manifest on Dask: a LocalCluster by default, or an existing scheduler.

Workers are processes running one job at a time, each job with ``threads`` onnxruntime
threads, so that workers x threads <= cores. Each worker keeps every model it loaded
(``generic.keep_sessions``). Jobs whose outputs already carry this job's provenance key
are skipped (resume); a job that fails is reported and the others go on; a task whose
worker dies is rerun by Dask on another worker (``distributed.scheduler.allowed-failures``).
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from .manifest import Job, jobs_from_rows, read_manifest
from .plan import Plan, plan_jobs, require_valid, split_bands
from .progress import ProgressLine
from .provenance import batch_tags, is_done
from . import tasks

log = logging.getLogger("skyclear.batch")

REPORT_COLUMNS = ("job", "row", "tool", "status", "seconds", "provider", "error", "outputs", "worker",
                  "megapixels", "parts", "models_loaded")


@dataclass
class BatchSummary:
    results: List[Dict[str, Any]]
    seconds: float
    report: Optional[str] = None
    dashboard: Optional[str] = None
    workers: int = 0
    threads: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    interrupted: bool = False          # Ctrl-C: the unfinished jobs are "cancelled"

    @property
    def ok(self) -> bool:
        return all(r["status"] in ("done", "skipped") for r in self.results)

    def by_job(self) -> Dict[str, Dict[str, Any]]:
        return {r["job"]: r for r in self.results}


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a batch, raised once the report is written: the finished jobs
    are in ``summary`` with the others "cancelled". A KeyboardInterrupt, not a SkyClearError,
    so that code calling ``run_batch`` stops as Ctrl-C means."""

    def __init__(self, summary: "BatchSummary"):
        super().__init__(summary)
        self.summary = summary

    def __str__(self):
        done = sum(r["status"] == "done" for r in self.summary.results)
        cancelled = self.summary.counts.get("cancelled", 0)
        where = f"; report: {self.summary.report}" if self.summary.report else ""
        return f"interrupted: {done} job(s) done, {cancelled} cancelled (no partial outputs){where}"


def run_batch(manifest: Union[str, Sequence[Dict[str, Any]], Sequence[Job]], *, scheduler: Optional[str] = None,
              client=None, workers: Optional[int] = None, threads: Optional[int] = None, resume: bool = True,
              report: Optional[str] = None, skip_invalid: bool = False, progress: bool = True,
              stream=None) -> BatchSummary:
    """Validate the whole manifest, then run it; returns every job's result.

    ``manifest``: a CSV/JSON-lines path, or rows (dicts of parameter -> value), or Jobs.
    ``client``: an existing ``distributed.Client``; else ``scheduler`` ("tcp://host:8786")
    connects to a running cluster; else a LocalCluster of ``workers`` processes starts
    (``workers=0``: run in this process, no Dask). ``threads``: onnxruntime threads per
    job (default: cores // workers locally; on a cluster, the worker's SKYCLEAR_THREADS,
    else its cores // its Dask threads). Raises ``ManifestError`` listing every problem
    unless ``skip_invalid``, which runs the valid rows and reports the others as invalid.
    Ctrl-C stops the run, reports the unfinished jobs as "cancelled" and raises ``BatchInterrupted``.
    """
    started = time.time()
    stream = stream or sys.stderr
    source = manifest if isinstance(manifest, str) else "manifest"
    if isinstance(manifest, str):
        jobs = read_manifest(manifest)
    elif manifest and isinstance(manifest[0], Job):
        jobs = list(manifest)
    else:
        jobs = jobs_from_rows(manifest)
    plans = plan_jobs(jobs)
    if not skip_invalid:
        require_valid(plans, source)
    results: Dict[int, Dict[str, Any]] = {}
    todo: List[Plan] = []
    for plan in plans:
        base = {"job": plan.job.name, "row": plan.job.row, "tool": plan.job.tool, "megapixels": round(plan.megapixels, 3)}
        if not plan.ok:
            results[plan.job.row] = dict(base, status="invalid", error="; ".join(plan.job.problems))
        elif resume and is_done(plan):
            results[plan.job.row] = dict(base, status="skipped", outputs=plan.outputs, error="outputs up to date")
        else:
            todo.append(plan)
    summary = BatchSummary([], 0.0)
    already = {"skipped": sum(r["status"] == "skipped" for r in results.values()),
               "invalid": sum(r["status"] == "invalid" for r in results.values())}
    if todo:
        if client is None and scheduler is None and workers == 0:
            summary.threads = threads or os.cpu_count() or 1
            run = _run_in_process(todo, summary.threads, stream, progress, already)
        else:
            run = _run_on_dask(todo, scheduler, client, workers, threads, summary, stream, progress, already)
        try:
            for plan, result in run:
                result["megapixels"] = round(plan.megapixels, 3)
                results[plan.job.row] = result
        except KeyboardInterrupt:
            run.close()   # stops the workers before the outputs are looked at
            summary.interrupted = True
        finally:
            # whatever a dead worker (or an interrupted run) left behind; the next write
            # into a folder also sweeps temporary files of processes that no longer run
            tasks.remove_leftovers([path for plan in todo for path in plan.outputs.values()])
        for plan in todo if summary.interrupted else ():
            results.setdefault(plan.job.row, _interrupted_result(plan, started))
    summary.results = [results[p.job.row] for p in plans]
    summary.seconds = time.time() - started
    for r in summary.results:
        summary.counts[r["status"]] = summary.counts.get(r["status"], 0) + 1
    if report:
        summary.report = write_report(summary.results, report)
    if summary.interrupted:
        raise BatchInterrupted(summary)
    return summary


def _interrupted_result(plan: Plan, started: float) -> Dict[str, Any]:
    """An unreported job of an interrupted batch: "done" when a worker committed its outputs
    while the batch stopped (they carry its key and are newer than the batch), else "cancelled"."""
    finished = is_done(plan) and all(os.path.getmtime(p) >= started for p in plan.outputs.values())
    return {"job": plan.job.name, "row": plan.job.row, "tool": plan.job.tool, "megapixels": round(plan.megapixels, 3),
            "status": "done" if finished else "cancelled", "outputs": plan.outputs if finished else {},
            "error": "finished as the batch was interrupted" if finished else "interrupted (Ctrl-C) before it finished"}


# ---------------------------------------------------------------------------------------


def _run_in_process(todo: List[Plan], threads: int, stream, show: bool, already: Dict[str, int]):
    bar = ProgressLine(len(todo), sum(p.megapixels for p in todo), stream, enabled=show, **already)
    previous = os.environ.get("SKYCLEAR_THREADS")
    try:
        yield from _jobs_in_process(todo, threads, bar)
    finally:  # the tasks set it for their worker process; this process is the caller's
        if previous is None:
            os.environ.pop("SKYCLEAR_THREADS", None)
        else:
            os.environ["SKYCLEAR_THREADS"] = previous
    bar.close()


def _jobs_in_process(todo: List[Plan], threads: int, bar: ProgressLine):
    for plan in todo:
        job, tags = plan.job.to_dict(), batch_tags(plan)
        bands = _bands(plan, 1)
        if len(bands) > 1:
            folder = tasks.parts_folder(plan.outputs[next(iter(plan.outputs))], plan.key)
            parts = [tasks.run_part(job, tags, folder, k, rows, threads) for k, rows in enumerate(bands)]
            result = tasks.assemble(job, plan.outputs, folder, parts, threads)
        else:
            result = tasks.run_job(job, tags, threads)
        bar.job_finished(result, plan.megapixels)
        yield plan, result


def _bands(plan: Plan, workers: int):
    split = plan.job.split
    parts = workers if split == "auto" else int(split)
    if parts <= 1 or plan.grid is None:
        return [(0, None)]
    return split_bands(plan.grid, parts)


def _client(scheduler, client, workers, threads, todo, stream, show):
    """(client, whether we close it, cluster to close or None, onnxruntime threads per job or None)."""
    from distributed import Client

    if client is not None:
        return client, False, None, threads
    if scheduler:
        return Client(scheduler), True, None, threads
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    tasks_count = sum(max(1, len(_bands(p, cores))) for p in todo)
    if not workers and _uses_gpu(todo):
        workers = 1
        if show:
            print("a CUDA GPU is available: one worker runs the jobs on it (--workers to change)", file=stream)
    workers = workers or max(1, min(cores, tasks_count))
    threads = threads or max(1, cores // workers)
    dashboard = ":8787" if _has_bokeh() else None
    with _sigint_ignored():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard,
                               silence_logs=logging.ERROR, env={"SKYCLEAR_THREADS": str(threads)})
    return Client(cluster), True, cluster, threads


@contextlib.contextmanager
def _sigint_ignored():
    """Worker processes started inside inherit an ignored SIGINT: Ctrl-C reaches the whole
    process group, and only this process should act on it (report, then close the cluster),
    not each worker with its own traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _uses_gpu(todo: List[Plan]) -> bool:
    """Whether jobs would run on a CUDA GPU: then one process should own it, not one per core."""
    if all(p.job.kwargs.get("device", "auto") == "cpu" for p in todo):
        return False
    from ..plugin.core.runtime import gpu_status

    return gpu_status()[0]


def _has_bokeh() -> bool:
    """Dask serves its dashboard only with bokeh installed."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _run_on_dask(todo: List[Plan], scheduler, client, workers, threads, summary: BatchSummary, stream,
                 show: bool, already: Dict[str, int]):
    from distributed import as_completed

    client, owned, cluster, threads = _client(scheduler, client, workers, threads, todo, stream, show)
    futures = {}              # future -> (plan, kind[, bands])
    try:
        info = client.scheduler_info()
        summary.workers = len(info.get("workers", {}))
        summary.threads = threads or 0
        if _has_bokeh() and client.dashboard_link:
            summary.dashboard = client.dashboard_link
            if show:
                print(f"Dask dashboard: {client.dashboard_link}", file=stream)
        for plan in todo:
            job, tags = plan.job.to_dict(), batch_tags(plan)
            name = f"skyclear-{plan.job.row}-{plan.key[:10]}"
            bands = _bands(plan, max(1, summary.workers))
            if len(bands) == 1:
                future = client.submit(tasks.run_job, job, tags, threads, key=name, retries=0)
                futures[future] = (plan, "job")
                continue
            folder = tasks.parts_folder(plan.outputs[next(iter(plan.outputs))], plan.key)
            parts = [client.submit(tasks.run_part, job, tags, folder, k, rows, threads, key=f"{name}-part{k}",
                                   retries=0) for k, rows in enumerate(bands)]
            for k, part in enumerate(parts):
                futures[part] = (plan, "part", len(bands))
            final = client.submit(tasks.assemble, job, plan.outputs, folder, parts, threads,
                                  key=f"{name}-assemble", retries=0)
            futures[final] = (plan, "assemble")
        bar = ProgressLine(len(todo), sum(p.megapixels for p in todo), stream, enabled=show, **already)
        for future in as_completed(list(futures)):
            plan, kind = futures[future][:2]
            if kind == "part":
                if future.status == "finished":
                    bar.part_finished(plan.megapixels / futures[future][2])
                continue
            result = _final_result(plan, future)
            bar.job_finished(result, 0.0 if kind == "assemble" else plan.megapixels)
            yield plan, result
        bar.close()
        futures.clear()
    finally:
        if futures and not owned:
            client.cancel(list(futures))  # interrupted: queued tasks do not start on the user's cluster
        if owned:
            client.close()
        if cluster is not None:
            cluster.close()


def _final_result(plan: Plan, future) -> Dict[str, Any]:
    """The task's result, or a failed result saying why Dask gave up on it."""
    try:
        return future.result()
    except Exception as exc:  # KilledWorker, a lost scheduler, a cancelled future
        name = type(exc).__name__
        if name == "KilledWorker":
            text = ("the worker running it died each time it was tried (out of memory, or killed); "
                    "see the worker logs")
        else:
            text = f"{name}: {exc}"
        return {"job": plan.job.name, "row": plan.job.row, "tool": plan.job.tool, "status": "failed",
                "seconds": 0.0, "provider": "", "error": text, "outputs": {}, "worker": ""}


def write_report(results: Sequence[Dict[str, Any]], path: str) -> str:
    """The summary: JSON (a list of results) for .json, else CSV (one row per job)."""
    path = os.path.abspath(path)
    if path.lower().endswith(".json"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(list(results), f, indent=1, default=str)
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, REPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = dict(r)
            outputs = row.get("outputs") or {}
            row["outputs"] = ";".join(outputs.values()) if isinstance(outputs, dict) else outputs
            writer.writerow(row)
    return path
