"""QGIS entry point: Processing provider, toolbar button and menu entries."""
from __future__ import annotations

import html
import os

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import dependencies

MENU = "&SkyClear"
ICON = os.path.join(os.path.dirname(__file__), "..", "icons", "skyclear.svg")
LOG_TAG = "SkyClear"


class SkyClearPlugin:
    """Works with a full QGIS (``iface``) and headless (``iface=None``, e.g. qgis_process)."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.toolbar = None
        self.dialog = None

    # Processing ------------------------------------------------------------------------
    def initProcessing(self):  # noqa: N802
        from .processing.provider import SkyClearProvider

        self.provider = SkyClearProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    # GUI -------------------------------------------------------------------------------
    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        problem = dependencies.problem_message(deep=False)   # start-up: no heavy imports
        if problem:
            # both render HTML: the pins' quotes and "<" must reach the user as text
            QgsMessageLog.logMessage(html.escape(problem, quote=False), LOG_TAG, Qgis.Warning)
            self.iface.messageBar().pushMessage("SkyClear", html.escape(problem, quote=False), Qgis.Warning, 0)
        self.toolbar = self.iface.addToolBar("SkyClear")
        self.toolbar.setObjectName("SkyClearToolbar")
        action = QAction(QIcon(ICON), "SkyClear…", self.iface.mainWindow())
        action.setObjectName("SkyClearOpenDialog")
        action.setToolTip("Cloud removal and SAR-optical fusion")
        action.triggered.connect(self.open_dialog)
        self.toolbar.addAction(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        # QGIS closing with a SkyClear task running: cancel it (no half-written output remains)
        QgsApplication.instance().aboutToQuit.connect(self._cancel_tasks)

    def _cancel_tasks(self):
        from .tasks import cancel_all

        cancel_all()

    def open_dialog(self):
        problem = dependencies.problem_message()
        if problem:
            self.iface.messageBar().pushMessage("SkyClear", html.escape(problem, quote=False), Qgis.Critical, 0)
            return
        from ..ui.main_dialog import SkyClearDialog

        if self.dialog is None:
            self.dialog = SkyClearDialog(self.iface, parent=self.iface.mainWindow())
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

    def unload(self):
        if self.iface is not None:
            try:
                QgsApplication.instance().aboutToQuit.disconnect(self._cancel_tasks)
            except (TypeError, RuntimeError):
                pass
            self._cancel_tasks()
        for action in self.actions:
            if self.iface is not None:
                self.iface.removePluginRasterMenu(MENU, action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
        self.actions = []
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.dialog is not None:
            if hasattr(self.dialog, "shutdown"):
                self.dialog.shutdown()
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
