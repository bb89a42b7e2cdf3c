"""Dependencies panel: what the Python running QGIS can import, the exact install commands
and the known bad combinations."""
from __future__ import annotations

import sys

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication, QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

from ..plugin import dependencies

PACKAGES = (("numpy", "numpy"), ("rasterio", "rasterio"), ("onnxruntime", "onnxruntime / onnxruntime-gpu"),
            ("scipy", "scipy"), ("skimage", "scikit-image"))


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def distribution_versions():
    """Installed onnxruntime distributions (CPU and GPU builds share the module name)."""
    found = {}
    try:
        from importlib import metadata

        for name in ("onnxruntime", "onnxruntime-gpu"):
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    except Exception:
        pass
    return found


def report_html() -> str:
    from ..plugin.core.runtime import gpu_status

    status = dependencies.status()
    rows = []
    for module, label in PACKAGES:
        version = status.get(module)
        mark = "<span style='color:#1b7e2b'>✔</span>" if version else "<span style='color:#b00020'>✖ missing</span>"
        rows.append(f"<tr><td>{_esc(label)}</td><td>{mark}</td><td>{_esc(version or '')}</td></tr>")
    dists = distribution_versions()
    dist_text = ", ".join(f"{k} {v}" for k, v in dists.items()) or "none"
    gpu_ok, gpu_reason = gpu_status()
    parts = [
        "<h3>Python packages</h3>",
        f"<p>QGIS runs Python {sys.version.split()[0]} (<code>{_esc(dependencies.qgis_python())}</code>).</p>",
        "<table cellpadding='3'><tr><th align='left'>package</th><th></th><th align='left'>version</th></tr>"
        + "".join(rows) + "</table>",
        f"<p>onnxruntime distributions: {_esc(dist_text)}<br>GPU: {'available' if gpu_ok else 'not available'}"
        f" — {_esc(gpu_reason)}</p>",
    ]
    warnings = dependencies.warnings()
    if warnings:
        parts.append("<h3 style='color:#b36b00'>Warnings</h3><ul>"
                     + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>")
    parts.append("<h3>Install or repair</h3>")
    parts.append(f"<p>For this QGIS: <code>{_esc(dependencies.pip_command())}</code></p>")
    for platform, command in dependencies.platform_commands():
        parts.append(f"<p><b>{_esc(platform)}</b><br><code>{_esc(command)}</code></p>")
    parts.append("<p>Install <b>either</b> onnxruntime <b>or</b> onnxruntime-gpu, never both. Keep "
                 "numpy below 2 unless your QGIS's GDAL bindings were built for numpy 2. Restart QGIS "
                 "after installing.</p>")
    return "".join(parts)


class DependenciesPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.browser = QTextBrowser()
        self.browser.setObjectName("dependenciesReport")
        self.browser.setOpenExternalLinks(True)
        self.copy = QPushButton("Copy install command")
        self.copy.clicked.connect(lambda: QApplication.clipboard().setText(dependencies.pip_command()))
        self.recheck = QPushButton("Check again")
        self.recheck.clicked.connect(self.refresh)
        note = QLabel("SkyClear runs its models with onnxruntime inside the Python that runs QGIS.")
        note.setWordWrap(True)
        note.setAlignment(Qt.AlignLeft)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.browser, 1)
        layout.addWidget(self.copy)
        layout.addWidget(self.recheck)
        self.refresh()

    def refresh(self) -> None:
        self.browser.setHtml(report_html())
