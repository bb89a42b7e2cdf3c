"""Background runs through the QGIS task manager.

``SkyClearTask.run`` executes on a worker thread and only calls a QGIS-free ``jobs.*``
function with paths and numbers; everything touching QGIS (layers, message bar, log) happens
in ``finished`` on the main thread.
"""
from __future__ import annotations

import html
import logging
import os
import time
import traceback
from typing import Any, Callable, Dict, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QTimer, QUrl, pyqtSignal

from .core import tools
from .core.words import format_seconds, plural

LOG_TAG = "SkyClear"

# Python references to running tasks: the task manager owns the C++ objects, but the Python
# subclass must stay alive until finished() has run. Also used to cancel everything on unload.
_RUNNING: set = set()


class _RunWarnings(logging.Handler):
    """Collects the core's warnings (``skyclear`` logger) while a task runs, from any thread:
    the engine reads on its own I/O thread. They are shown in ``finished``; Processing has its
    own handler that writes them to the feedback."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        text = record.getMessage()
        if text not in self.messages:
            self.messages.append(text)


def resolve_job(function_name: str) -> Callable:
    """The ``jobs.*`` function by name."""
    from .core import jobs

    return getattr(jobs, function_name)


class SkyClearTask(QgsTask):
    """Run ``jobs.<function_name>(**kwargs)`` in the background.

    ``kwargs`` must hold only plain values (paths, numbers, tuples). ``add_to_map``: load the
    outputs into the "SkyClear" group when done. ``iface`` is used only in ``finished``.
    """

    etaChanged = pyqtSignal(str)       # noqa: N815 - emitted from the worker, queued to the main thread
    done = pyqtSignal(object)          # the task itself, after finished() on the main thread

    def __init__(self, title: str, function_name: str, kwargs: Dict[str, Any], iface=None,
                 add_to_map: bool = True, job: Optional[Callable] = None,
                 expected_seconds: Optional[float] = None):
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
        self.warnings = []                 # the core's warnings during the run, shown when it ends
        self.layers = []
        self.status_text = ""
        self._started = None
        self.seconds = 0.0
        self.is_done = False               # plain Python flag: the manager deletes the C++ task after finished()
        # the engine reports progress once per tile batch: a run of one tile (or one slow batch)
        # would sit at 0 % until it ends. Between reports the progress moves on by the time
        # measured for a tile (the dialog's estimate), never past the next report.
        self.expected_seconds = expected_seconds if expected_seconds and expected_seconds > 0 else None
        self._reported = 0.0               # last fraction reported by the engine
        self._reported_at = None
        self._timer = QTimer()
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._interpolate)
        self.etaChanged.connect(self._show_eta)

    # -- worker thread ----------------------------------------------------------------------
    def run(self):  # noqa: D401 - QgsTask API
        from .core.errors import Cancelled, SkyClearError

        self._started = self._reported_at = time.monotonic()
        warnings = _RunWarnings()
        logger = logging.getLogger("skyclear")
        logger.addHandler(warnings)
        try:
            job = self.job or resolve_job(self.function_name)
            self.report = job(**self.kwargs, progress=self._progress, is_cancelled=self.isCanceled)
            # a job that finished despite a late cancel request keeps its result: it is complete
            return True
        except Cancelled:
            # a user's cancel is not a failure: return True so that QGIS does not announce
            # "Task failed"; finished() tells the user that the run was cancelled
            self.was_cancelled = True
            return True
        except SkyClearError as exc:
            self.error = str(exc)
            self.detail = traceback.format_exc()
            return False
        except Exception as exc:  # anything else: show it, never crash QGIS
            self.error = f"unexpected error: {type(exc).__name__}: {exc}"
            self.detail = traceback.format_exc()
            return False
        finally:
            logger.removeHandler(warnings)
            self.warnings = warnings.messages
            self.seconds = time.monotonic() - (self._started or time.monotonic())

    def _progress(self, fraction: float, message: str = "") -> None:
        """Engine callback (worker thread)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        self._reported, self._reported_at = fraction, time.monotonic()
        self._message_text = message
        self._show_progress(fraction, message)

    def _show_progress(self, fraction: float, message: str = "", estimated: bool = False) -> None:
        fraction = 1.0 if fraction >= 1.0 else max(fraction, self.progress() / 100.0)  # never backwards
        self.setProgress(100.0 * fraction)
        elapsed = time.monotonic() - (self._started or time.monotonic())
        eta = ""
        if estimated and self.expected_seconds:
            eta = f", ≈ {format_seconds(max(0.0, self.expected_seconds - elapsed))} left (estimated)"
        elif 0.02 < fraction < 1.0 and elapsed > 0.5:
            eta = f", {format_seconds(elapsed * (1 - fraction) / fraction)} left"
        text = f"{100 * fraction:.0f}%{eta}" + (f" — {message}" if message else "")
        if text != self.status_text:
            self.status_text = text
            self.etaChanged.emit(text)

    def _interpolate(self) -> None:
        """Main-thread timer: move the bar on by elapsed / expected time until the next report."""
        try:
            if self.is_done or self._started is None or self.isCanceled():
                return
        except RuntimeError:      # the C++ task is gone
            self._timer.stop()
            return
        elapsed = time.monotonic() - self._started
        if not self.expected_seconds:     # nothing measured yet: at least show that it runs
            if self._reported == 0.0 and elapsed > 2.0:
                text = f"running, {format_seconds(elapsed)} so far (no estimate yet)"
                if text != self.status_text:
                    self.status_text = text
                    self.etaChanged.emit(text)
            return
        guess = min(0.99, elapsed / self.expected_seconds)
        if guess > self._reported + 0.005:
            self._show_progress(guess, getattr(self, "_message_text", "") or "running", estimated=True)

    # -- main thread --------------------------------------------------------------------------
    def _show_eta(self, text: str) -> None:
        self.setDescription(f"SkyClear: {self.title} ({text})")

    def finished(self, result):  # noqa: D401 - QgsTask API
        _RUNNING.discard(self)
        self._timer.stop()
        for text in self.warnings:
            QgsMessageLog.logMessage(_esc(f"{self.title}: {text}"), LOG_TAG, Qgis.Warning)
        try:
            if result and self.report is not None:
                self._succeeded()
            elif self.was_cancelled or self.isCanceled():
                self.was_cancelled = True
                self.status_text = "cancelled"
                self.setDescription(f"SkyClear: {self.title} (cancelled)")
                self._message(f"{self.title} cancelled; no output was written.", Qgis.Info, 5)
                QgsMessageLog.logMessage(_esc(f"{self.title}: cancelled by the user; no output was written"),
                                         LOG_TAG, Qgis.Info)
            else:
                error = self.error or "the task stopped without a result"
                QgsMessageLog.logMessage(_esc(f"{self.title} failed: {error}\n\n{self.detail or ''}"),
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
                spec = tools.TOOLS_BY_NAME.get(self.function_name)
                self.layers = add_outputs(outputs, self.title, names=spec.layer_names(outputs) if spec else None)
            except Exception as exc:  # the files are fine; only loading them failed
                QgsMessageLog.logMessage(f"{self.title}: could not add the outputs to the map: {exc}\n"
                                         + traceback.format_exc(), LOG_TAG, Qgis.Warning)
        first = next(iter(outputs.values()), "")
        folder = os.path.dirname(os.path.abspath(first)) if first else ""
        link = (f' — <a href="{html.escape(QUrl.fromLocalFile(folder).toString())}">open output folder</a>'
                if folder else "")
        tiles = getattr(report, "tiles", None)
        text = _esc(f"{self.title} finished in {format_seconds(seconds)} on {provider}"
                    + (f" ({plural(tiles, 'tile')})" if isinstance(tiles, int) else "")
                    + (f", {plural(len(self.warnings), 'warning')} (see the SkyClear log)" if self.warnings else "")
                    ) + link
        QgsMessageLog.logMessage(_esc(
            f"{self.title}: {format_seconds(seconds)}, provider {provider}, tile "
            f"{getattr(report, 'tile_size', '?')}, overlap {getattr(report, 'overlap', '?')}, outputs "
            + ", ".join(f"{k}={v}" for k, v in outputs.items())), LOG_TAG, Qgis.Info)
        self._message(text, Qgis.Warning if self.warnings else Qgis.Success, 15, markup=True)

    def _message(self, text: str, level, duration: int, detail: Optional[str] = None,
                 markup: bool = False) -> None:
        """Push to the message bar, which renders HTML: plain text is escaped (a "<" would
        swallow the rest of the message), ``markup=True`` text is passed as it is."""
        if not markup:
            text = _esc(text)
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


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def start(task: SkyClearTask) -> SkyClearTask:
    _RUNNING.add(task)
    QgsApplication.taskManager().addTask(task)
    task._timer.start()
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
