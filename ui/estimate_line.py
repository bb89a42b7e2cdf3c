"""The estimate line: tile count and memory at once, and the time of one real tile measured
in the background (``controller.Estimator``) once the inputs stayed unchanged for a moment."""
from __future__ import annotations

import time
from typing import Callable, Optional

from qgis.PyQt.QtCore import QObject, Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QLabel

from . import controller


class EstimateLine(QObject):
    def __init__(self, label: QLabel, form: Callable[[], controller.Form], valid: Callable[[], bool], parent=None):
        super().__init__(parent)
        self.label, self.form, self.valid = label, form, valid
        self.estimator = controller.Estimator()
        self.last = None
        self.auto = QTimer(self)
        self.auto.setSingleShot(True)
        self.auto.setInterval(700)
        self.auto.timeout.connect(self.start)
        self.polling = QTimer(self)
        self.polling.setInterval(100)
        self.polling.timeout.connect(self.poll)

    def update(self):
        """Show the estimate for the current form (the time once a tile was measured)."""
        self.last, text = self.estimator.estimate(self.form(), valid=self.valid())
        self.label.setText(text)
        return self.last

    def schedule(self, form: controller.Form) -> None:
        """Time a tile soon, unless this job's settings were timed already."""
        if controller.measure_key(form) not in self.estimator.measured:
            self.auto.start()

    def start(self) -> bool:
        """Time one tile in the background; an older timing still running is cancelled."""
        form = self.form()
        if not self.valid() or form.layer("optical") is None or not self.estimator.start(form):
            return False
        self.label.setText(self.label.text().split(" — ")[0])
        self.polling.start()
        return True

    def poll(self) -> None:
        if self.estimator.poll():
            self.polling.stop()
            try:
                self.update()
            except RuntimeError:     # the dialog was deleted meanwhile
                pass

    def measure(self, timeout: float) -> Optional[float]:
        """Time one tile now and wait for it (the Estimate button, scripts and tests)."""
        self.auto.stop()
        key = controller.measure_key(self.form())
        if not self.start():
            return None
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            deadline = time.monotonic() + timeout
            while self.estimator.running and time.monotonic() < deadline:
                QApplication.processEvents()
                time.sleep(0.02)
        finally:
            QApplication.restoreOverrideCursor()
        return self.estimator.measured.get(key)

    def stop(self) -> None:
        self.auto.stop()
        self.estimator.stop(15.0)         # a running timing stops at its next tile batch
