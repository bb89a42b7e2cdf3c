"""The band table: which raster band feeds each model band, prefilled by the core's band
mapper; a one-line summary with an "Edit…" button, opened by itself when a band is left
to choose."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                                 QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..plugin.core import bands as core_bands


class BandTable(QWidget):
    changed = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.note = QLabel()
        self.note.setTextFormat(Qt.PlainText)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #444;")
        self.toggle = QPushButton("Edit…")
        self.toggle.setObjectName("bandToggle")
        self.toggle.setCheckable(True)
        self.toggle.setToolTip("Show the band table: which raster band feeds each model band")
        self.toggle.toggled.connect(self._show)
        self.toggle.clicked.connect(lambda *_: setattr(self, "_auto_open", False))
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("bandTable")
        self.table.setHorizontalHeaderLabels(["Input", "Model band", "Raster band"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(self.toggle, 0, Qt.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.table)
        self.rows: List[Tuple[str, str, str, QComboBox]] = []      # (role, model band, file, combo)
        self._auto_open = False
        self._chosen: Dict[Tuple[str, str, str], int] = {}       # the user's own picks, kept across refills
        self._automatic: Dict[str, core_bands.BandMapping] = {}   # role -> the mapper's own choice

    def fill(self, entries: Sequence[Tuple[str, List[Tuple[str, str]], object]]) -> None:
        """``entries``: (role, [(model band, meaning)], LayerInfo) per role with a layer. A band
        the user chose for the same file and model band is kept."""
        self.table.setRowCount(0)
        self.rows = []
        self._automatic.clear()
        complete = True
        for role, wanted, info in entries:
            found = core_bands.map_bands([n for n, _ in wanted], info.descriptions, info.band_count)
            complete = complete and found.complete
            self._automatic[role] = found
            for (name, meaning), chosen in zip(wanted, found.bands):
                key = (role, name, info.path)
                chosen = self._chosen.get(key, chosen)
                row = self.table.rowCount()
                self.table.insertRow(row)
                for column, text in ((0, role.upper()), (1, name + (f" — {meaning}" if meaning else ""))):
                    item = QTableWidgetItem(text)
                    item.setFlags(Qt.ItemIsEnabled)
                    self.table.setItem(row, column, item)
                combo = QComboBox()
                combo.addItem("— choose —", 0)
                for i in range(1, info.band_count + 1):
                    desc = info.descriptions[i - 1] if i - 1 < len(info.descriptions) else ""
                    combo.addItem(f"{i}" + (f": {desc}" if desc else ""), i)
                combo.setCurrentIndex(max(0, combo.findData(chosen or 0)))
                combo.currentIndexChanged.connect(lambda _, key=key, combo=combo: self._user_chose(key, combo))
                self.table.setCellWidget(row, 2, combo)
                self.rows.append((role, name, info.path, combo))
        self.table.setFixedHeight(min(250, 34 + 31 * max(1, self.table.rowCount())))
        self._update_note()
        if not complete and not self.toggle.isChecked():
            self.toggle.setChecked(True)        # something to choose: show the table
            self._auto_open = True
        elif complete and self._auto_open:
            self._auto_open = False              # opened only because a band was missing
            self.toggle.setChecked(False)
        self._show(self.toggle.isChecked())

    def _user_chose(self, key: Tuple[str, str, str], combo: QComboBox) -> None:
        self._chosen[key] = combo.currentData() or 0
        self._update_note()
        self.changed.emit()

    def _update_note(self) -> None:
        """One line per role: the automatic mapping, or the user's choice once it differs."""
        summary = []
        for role, found in self._automatic.items():
            bands = self.mapping(role)
            rule = found.text().rsplit(" (", 1)[-1].rstrip(")") if bands == found.bands else "chosen in the table"
            if len(bands) <= 4:
                pairs = ", ".join(f"{w}←{b if b else '?'}" for w, b in zip(found.wanted, bands))
                summary.append(f"{role.upper()} {pairs} ({rule})")
            else:
                summary.append(f"{role.upper()} {sum(1 for b in bands if b)} of {len(bands)} bands {rule}")
        self.note.setText("Bands: " + "; ".join(summary) if summary else "Bands: choose the layers first.")

    def _show(self, show: bool) -> None:
        """The table only when asked for, or when a band is left to choose."""
        self.table.setVisible(bool(show) and bool(self.rows))
        self.toggle.setText("Hide" if show else "Edit…")

    def mapping(self, role: str) -> List[Optional[int]]:
        return [combo.currentData() or None for r, _, _, combo in self.rows if r == role]

    def set_band(self, role: str, model_band: str, raster_band: int) -> None:
        for r, name, _, combo in self.rows:
            if r == role and name == model_band:
                combo.setCurrentIndex(combo.findData(raster_band))
