"""A checkable, collapsible "limit to an extent" box around QgsExtentWidget, with a title
that says in words what will be processed (QgsExtentGroupBox appends "(current: none)"),
following the optical layer."""
from __future__ import annotations

from qgis.core import QgsRectangle
from qgis.gui import QgsCollapsibleGroupBox, QgsExtentWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QVBoxLayout

WHOLE = "Extent: the whole optical layer (tick to process only part of it)"
PART = "Extent: only this part of the optical layer"


class ExtentBox(QgsCollapsibleGroupBox):
    extentChanged = pyqtSignal(QgsRectangle)   # noqa: N815 - same name as QgsExtentWidget's

    def __init__(self, parent=None):
        super().__init__(WHOLE, parent)
        self.setCheckable(True)
        self.setChecked(False)
        self.setSaveCollapsedState(False)
        self.setSaveCheckedState(False)
        self.widget = QgsExtentWidget(self, QgsExtentWidget.ExpandedStyle)
        layout = QVBoxLayout(self)
        layout.addWidget(self.widget)
        self.widget.extentChanged.connect(self.extentChanged)
        self.toggleDialogVisibility = self.widget.toggleDialogVisibility
        self.toggled.connect(self._on_toggled)
        self.setCollapsed(True)

    def _on_toggled(self, on: bool) -> None:
        self.setTitle(PART if on else WHOLE)
        self.setCollapsed(not on)

    # the QgsExtentWidget calls the dialog uses
    def setMapCanvas(self, canvas):  # noqa: N802
        self.widget.setMapCanvas(canvas)

    def setOriginalExtent(self, extent, crs):  # noqa: N802
        self.widget.setOriginalExtent(extent, crs)

    def setCurrentExtent(self, extent, crs):  # noqa: N802
        self.widget.setCurrentExtent(extent, crs)

    def setOutputCrs(self, crs):  # noqa: N802
        self.widget.setOutputCrs(crs)

    def setOutputExtentFromOriginal(self):  # noqa: N802
        self.widget.setOutputExtentFromOriginal()

    def setOutputExtentFromUser(self, extent, crs):  # noqa: N802
        self.widget.setOutputExtentFromUser(extent, crs)

    def outputExtent(self):  # noqa: N802
        return self.widget.outputExtent()

    # what the dialog asks of it
    def follow(self, layer, canvas=None) -> None:
        """Offer ``layer``'s extent (and the map canvas's); a raster without CRS is processed whole."""
        georeferenced = layer.crs().isValid()
        if not georeferenced and self.isChecked():
            self.setChecked(False)
        self.setEnabled(georeferenced)
        self.setToolTip("" if georeferenced else "The optical raster has no CRS: SkyClear processes all of it")
        self.setOriginalExtent(layer.extent(), layer.crs())
        self.setOutputCrs(layer.crs())
        if not self.isChecked():
            self.blockSignals(True)
            self.setOutputExtentFromOriginal()
            self.setChecked(False)
            self.blockSignals(False)
        if canvas is not None:
            try:
                self.setCurrentExtent(canvas.extent(), canvas.mapSettings().destinationCrs())
            except Exception:
                pass

    def box(self):
        """(xmin, ymin, xmax, ymax) in the optical layer's CRS when ticked, else None."""
        if not self.isChecked():
            return None
        r = self.outputExtent()
        if r.isNull() or r.isEmpty():
            return None
        return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())

