"""Background runs through the QGIS task manager.

``SkyClearTask.run`` executes on a worker thread and only calls a QGIS-free ``jobs.*``
function with paths and numbers; everything touching QGIS (layers, message bar, log) happens
in ``finished`` on the main thread.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Any, Callable, Dict, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QUrl, pyqtSignal

LOG_TAG = "SkyClear"

# Python references to running tasks: the task manager owns the C++ objects, but the Python
# subclass must stay alive until finished() has run. Also used to cancel everything on unload.
_RUNNING: set = set()


def resolve_job(function_name: str) -> Callable:
    """The ``jobs.*`` function by name."""
    from .core import jobs

    return getattr(jobs, function_name)


def job_available(function_name: str):
    """(available, reason) of the dialog task whose job is ``function_name``."""
    from .core import jobs

    for task_key, entry in jobs.TASKS.items():
        if task_key == function_name or entry["function"].__name__ == function_name:
            return jobs.available(task_key)
    return hasattr(jobs, function_name), ""


class SkyClearTask(QgsTask):
    """Run ``jobs.<function_name>(**kwargs)`` in the background.

    ``kwargs`` must hold only plain values (paths, numbers, tuples). ``add_to_map``: load the
    outputs into the "SkyClear" group when done. ``iface`` is used only in ``finished``.
    """

    etaChanged = pyqtSignal(str)       # noqa: N815 - emitted from the worker, queued to the main thread
    done = pyqtSignal(object)          # the task itself, after finished() on the main thread

    def __init__(self, title: str, function_name: str, kwargs: Dict[str, Any], iface=None,
                 add_to_map: bool = True, job: Optional[Callable] = None):
        super().__init__(f"SkyClear: {title}", QgsTask.CanCancel)
        self.title = title
        self.function_name = function_name
        self.kwargs = dict(kwargs)
        self.iface = iface
        self.add_to_map = add_to_map
        self.job = job
        self.report = None
        self.error: Optional[str] = None
        self.detail: Optional[str] = None
        self.was_cancelled = False
        self.layers = []
        self.status_text = ""
        self._started = None
        self.seconds = 0.0
        self.is_done = False               # plain Python flag: the manager deletes the C++ task after finished()
        self.etaChanged.connect(self._show_eta)

    # -- worker thread ----------------------------------------------------------------------
    def run(self):  # noqa: D401 - QgsTask API
        from .core.errors import Cancelled, SkyClearError

        self._started = time.monotonic()
        try:
            job = self.job or resolve_job(self.function_name)
            self.report = job(**self.kwargs, progress=self._progress, is_cancelled=self.isCanceled)
            if self.isCanceled():
                # a job that finished despite the request: keep its result, it is complete
                pass
            return True
        except Cancelled:
            self.was_cancelled = True
            return False
        except SkyClearError as exc:
            self.error = str(exc)
            self.detail = traceback.format_exc()
            return False
        except Exception as exc:  # anything else: show it, never crash QGIS
            self.error = f"unexpected error: {type(exc).__name__}: {exc}"
            self.detail = traceback.format_exc()
            return False
        finally:
            self.seconds = time.monotonic() - (self._started or time.monotonic())

    def _progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.setProgress(100.0 * fraction)
        elapsed = time.monotonic() - (self._started or time.monotonic())
        eta = ""
        if 0.02 < fraction < 1.0 and elapsed > 0.5:
            from ..ui.logic import format_seconds

            eta = f", {format_seconds(elapsed * (1 - fraction) / fraction)} left"
        text = f"{100 * fraction:.0f}%{eta}" + (f" — {message}" if message else "")
        if text != self.status_text:
            self.status_text = text
            self.etaChanged.emit(text)

    # -- main thread --------------------------------------------------------------------------
    def _show_eta(self, text: str) -> None:
        self.setDescription(f"SkyClear: {self.title} ({text})")

    def finished(self, result):  # noqa: D401 - QgsTask API
        _RUNNING.discard(self)
        try:
            if result and self.report is not None:
                self._succeeded()
            elif self.was_cancelled or self.isCanceled():
                self.was_cancelled = True
                self._message(f"{self.title} cancelled; no output was written.", Qgis.Info, 5)
                QgsMessageLog.logMessage(f"{self.title}: cancelled", LOG_TAG, Qgis.Info)
            else:
                error = self.error or "the task stopped without a result"
                QgsMessageLog.logMessage(f"{self.title} failed: {error}\n\n{self.detail or ''}",
                                         LOG_TAG, Qgis.Critical)
                self._message(f"{self.title} failed: {error}", Qgis.Critical, 0,
                              detail=(self.detail or error) + "\n(see the SkyClear tab of the log panel)")
        finally:
            self.is_done = True
            self.done.emit(self)

    def _succeeded(self) -> None:
        report = self.report
        outputs = dict(getattr(report, "outputs", {}) or {})
        provider = getattr(report, "provider", "?")
        seconds = getattr(report, "seconds", None) or self.seconds
        if self.add_to_map:
            from .layers import add_outputs

            try:
                self.layers = add_outputs(outputs, self.title)
            except Exception as exc:  # the files are fine; only loading them failed
                QgsMessageLog.logMessage(f"{self.title}: could not add the outputs to the map: {exc}\n"
                                         + traceback.format_exc(), LOG_TAG, Qgis.Warning)
        first = next(iter(outputs.values()), "")
        folder = os.path.dirname(os.path.abspath(first)) if first else ""
        from ..ui.logic import format_seconds

        link = (f' — <a href="{QUrl.fromLocalFile(folder).toString()}">open output folder</a>'
                if folder else "")
        text = (f"{self.title} finished in {format_seconds(seconds)} on {provider}"
                f" ({getattr(report, 'tiles', '?')} tiles){link}")
        QgsMessageLog.logMessage(
            f"{self.title}: {format_seconds(seconds)}, provider {provider}, tile "
            f"{getattr(report, 'tile_size', '?')}, overlap {getattr(report, 'overlap', '?')}, outputs "
            + ", ".join(f"{k}={v}" for k, v in outputs.items()), LOG_TAG, Qgis.Info)
        self._message(text, Qgis.Success, 15)

    def _message(self, text: str, level, duration: int, detail: Optional[str] = None) -> None:
        bar = None
        if self.iface is not None:
            try:
                bar = self.iface.messageBar()
            except Exception:
                bar = None
        if bar is None:
            return
        if detail:
            bar.pushMessage("SkyClear", text, detail, level, duration)
        else:
            bar.pushMessage("SkyClear", text, level, duration)


def start(task: SkyClearTask) -> SkyClearTask:
    _RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    return task


def running() -> list:
    return list(_RUNNING)


def cancel_all(wait_ms: int = 10000) -> None:
    """Cancel every SkyClear task and wait (bounded) until they stopped: the engine checks
    the flag per tile batch and removes its temporary file, so nothing half-written remains."""
    tasks = list(_RUNNING)
    for task in tasks:
        try:
            task.cancel()
        except RuntimeError:  # C++ object already deleted
            _RUNNING.discard(task)
    deadline = time.monotonic() + wait_ms / 1000.0
    for task in tasks:
        remaining = int(max(0.0, deadline - time.monotonic()) * 1000)
        try:
            if task.status() not in (QgsTask.Complete, QgsTask.Terminated):
                task.waitForFinished(remaining)
        except RuntimeError:
            pass
