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


def report_html(refresh: bool = False) -> str:
    status = dependencies.status()
    problems = dependencies.health(refresh=refresh)
    restart = dependencies.restart_needed()
    broken = {"rasterio": [p for p in problems if p.startswith("rasterio")],
              "numpy": [p for p in problems if p.startswith("numpy")],
              "onnxruntime": [p for p in problems if p.startswith("onnxruntime")]}
    rows = []
    for module, label in PACKAGES:
        version = status.get(module)
        if not version:
            mark = "<span style='color:#b00020'>✖ missing</span>"
        elif broken.get(module):
            mark = "<span style='color:#b00020'>✖ broken</span>"
        else:
            mark = "<span style='color:#1b7e2b'>✔ works</span>"
        rows.append(f"<tr><td>{_esc(label)}</td><td>{mark}</td><td>{_esc(version or '')}</td></tr>")
    affine = dependencies.module_version("affine")
    rows.append(f"<tr><td>affine (rasterio's)</td><td>{'✔' if affine and not broken['rasterio'] else '✖'}</td>"
                f"<td>{_esc(affine or 'missing')}</td></tr>")
    dists = distribution_versions()
    dist_text = ", ".join(f"{k} {v}" for k, v in dists.items()) or "none"
    try:
        from ..plugin.core.runtime import gpu_status

        gpu_ok, gpu_reason = gpu_status()
    except Exception as exc:       # onnxruntime missing or broken: the rows above say so
        gpu_ok, gpu_reason = False, str(exc)
    parts = []
    if restart:
        parts.append("<p style='color:#b00020'><b>Restart QGIS</b> to use the packages just installed: "
                     + _esc("; ".join(restart)) + ".</p>")
    parts += [
        "<h3>Python packages</h3>",
        f"<p>QGIS runs Python {sys.version.split()[0]} (<code>{_esc(dependencies.qgis_python())}</code>).</p>",
        "<table cellpadding='3'><tr><th align='left'>package</th><th></th><th align='left'>version</th></tr>"
        + "".join(rows) + "</table>",
        f"<p>onnxruntime distributions: {_esc(dist_text)}<br>GPU: {'available' if gpu_ok else 'not available'}"
        f" — {_esc(gpu_reason)}</p>",
    ]
    if problems:
        parts.append("<h3 style='color:#b00020'>Problems (checked by using the packages)</h3><ul>"
                     + "".join(f"<li>{_esc(p)}</li>" for p in problems) + "</ul>")
    warnings = dependencies.warnings()
    if warnings:
        parts.append("<h3 style='color:#b36b00'>Warnings</h3><ul>"
                     + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>")
    parts.append("<h3>Install or repair</h3>")
    parts.append(f"<p><b>For this QGIS</b> (its own Python, the tested versions):<br>"
                 f"<code>{_esc(dependencies.pip_command())}</code></p>")
    parts.append(f"<p>Why these pins: {_esc(dependencies.PIN_NOTE)}. <b>Restart QGIS</b> after installing: "
                 "packages QGIS has already loaded (numpy always) are not replaced until then.</p>")
    for platform, command in dependencies.platform_commands():
        parts.append(f"<p><b>{_esc(platform)}</b><br><code>{_esc(command)}</code></p>")
    parts.append("<p>Install <b>either</b> onnxruntime <b>or</b> onnxruntime-gpu, never both. On pip older than "
                 "23 (Ubuntu 22.04 and older) leave out <code>--break-system-packages</code>.</p>")
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
        self.recheck.clicked.connect(lambda: self.refresh(True))
        note = QLabel("SkyClear runs its models with onnxruntime inside the Python that runs QGIS.")
        note.setWordWrap(True)
        note.setAlignment(Qt.AlignLeft)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.browser, 1)
        layout.addWidget(self.copy)
        layout.addWidget(self.recheck)
        self.refresh()

    def refresh(self, recheck: bool = False) -> None:
        self.browser.setHtml(report_html(refresh=recheck))
