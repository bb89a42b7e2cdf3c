"""The "Output" box: the GeoTIFF to write (suggested from the optical layer and the tool,
in the folder last used for this project) and whether to add the results to the map."""
from __future__ import annotations

import os

from qgis.core import QgsProject, QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QGroupBox

from . import controller

S = "skyclear/"


class OutputPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Output", parent)
        form = QFormLayout(self)
        self.output_widget = QgsFileWidget()
        self.output_widget.setObjectName("outputFile")
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("GeoTIFF (*.tif *.tiff)")
        self.output_widget.setDialogTitle("Output GeoTIFF")
        form.addRow("GeoTIFF", self.output_widget)
        self.add_to_map = QCheckBox("Add the results to the map")
        self.add_to_map.setObjectName("addToMap")
        self.add_to_map.setChecked(True)
        form.addRow(self.add_to_map)
        self._suggested = None

    def output_path(self) -> str:
        return controller.output_path(self.output_widget.filePath())

    def suggest(self, form: controller.Form, optical_path: str = "") -> None:
        """Fill in <optical stem>_<tool suffix>.tif unless the user typed or browsed a path."""
        current = self.output_widget.filePath()
        if current and current != self._suggested:
            return
        self._suggested = controller.suggested_output(form, self.default_folder(optical_path))
        self.output_widget.setFilePath(self._suggested)

    @staticmethod
    def default_folder(optical_path: str = "") -> str:
        """Where a new output goes: the folder last used in this project, else the project's
        folder, else the folder last used, else the optical input's folder, else home."""
        settings = QgsSettings()
        last = settings.value(S + "output_dir", "") or ""
        project = QgsProject.instance()
        project_file = project.fileName() or ""
        home = project.homePath() if project_file or project.presetHomePath() else ""
        candidates = []
        if last and project_file and settings.value(S + "output_dir_project", "") == project_file:
            candidates.append(last)
        candidates += [home, last]
        if optical_path:
            candidates.append(os.path.dirname(os.path.abspath(optical_path)))
        for folder in candidates:
            if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
                return folder
        return os.path.expanduser("~")

    def remember(self, settings: QgsSettings) -> None:
        settings.setValue(S + "add_to_map", self.add_to_map.isChecked())
        out = self.output_path()
        if out:
            settings.setValue(S + "output_dir", os.path.dirname(os.path.abspath(out)))
            settings.setValue(S + "output_dir_project", QgsProject.instance().fileName() or "")
