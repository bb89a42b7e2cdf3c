"""Screenshots of the SkyClear dialog and of results, taken from the real QGIS widgets.

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/screenshots.py OUT_DIR
    (without a display it falls back to QT_QPA_PLATFORM=offscreen)

Loads real rasters from ../shared/data (Sentinel-2 L1C + Sentinel-1 of SSL4EO-S12 location
0000200, the CFOG SAR/optical pair), opens the dialog for each task and saves
``dialog_<task>.png``, ``dialog_dependencies.png`` and ``dialog_1280x800.png`` (the dialog as it
opens on a 1280×800 laptop screen, buttons on screen); then runs the jobs that can run here
(classical fusion always; the bundled models of models/zoo when present) through the QGIS task
manager and saves map renders ``result_<task>.png`` (input | output side by side) and
``qgis_window.png`` (layer tree with the SkyClear group, map and message bar).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
S2_CLOUDY = os.path.join(DATA, "ssl4eo", "0000200", "s2l1c_20200823.tif")
S1 = os.path.join(DATA, "ssl4eo", "0000200", "s1_20200903.tif")
CFOG_OPT = os.path.join(DATA, "sar_optical", "cfog_stest3_optical.tif")
CFOG_SAR = os.path.join(DATA, "sar_optical", "cfog_stest3_sar.tif")
THIN_CLOUD = os.path.join(DATA, "thin_cloud", "pna_1_cloudy.tif")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for the PNG files")
    parser.add_argument("--no-run", action="store_true", help="dialogs only, no result renders")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/runtime-" + str(os.getuid()))
    # settings and result rasters of this run go to a scratch folder, not the user's profile
    scratch = tempfile.mkdtemp(prefix="skyclear-shots-")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = os.path.join(scratch, "profile")

    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QSettings

    QCoreApplication.setOrganizationName(QgsApplication.QGIS_ORGANIZATION_NAME)
    QCoreApplication.setOrganizationDomain(QgsApplication.QGIS_ORGANIZATION_DOMAIN)
    QCoreApplication.setApplicationName(QgsApplication.QGIS_APPLICATION_NAME)
    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, os.path.join(scratch, "profile"))
    app = QgsApplication([], True)
    app.initQgis()
    shooter = Shooter(app, os.path.abspath(args.out), os.path.join(scratch, "outputs"))
    try:
        return shooter.run(not args.no_run)
    finally:
        shooter.close()
        del shooter
        app.exitQgis()
        shutil.rmtree(scratch, ignore_errors=True)


class Shooter:
    def __init__(self, app, out, outputs):
        from qgis.core import QgsLayerTreeModel, QgsProject
        from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtCore import Qt
        from qgis.PyQt.QtWidgets import QMainWindow, QSplitter, QVBoxLayout, QWidget

        self.app = app
        self.out = out
        self.outputs = outputs
        os.makedirs(self.outputs, exist_ok=True)
        self.window = QMainWindow()
        self.window.setWindowTitle("QGIS — SkyClear")
        self.canvas = QgsMapCanvas()
        self.canvas.setCanvasColor(Qt.white)
        self.bar = QgsMessageBar()
        root = QgsProject.instance().layerTreeRoot()
        self.bridge = QgsLayerTreeMapCanvasBridge(root, self.canvas)
        self.tree = QgsLayerTreeView()
        self.tree_model = QgsLayerTreeModel(root, self.tree)
        self.tree.setModel(self.tree_model)
        splitter = QSplitter()
        splitter.addWidget(self.tree)
        splitter.addWidget(self.canvas)
        splitter.setSizes([320, 1000])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.bar)
        layout.addWidget(splitter, 1)
        self.window.setCentralWidget(central)
        self.window.resize(1320, 820)
        self.iface = _Iface(self.canvas, self.bar, self.window)

    # -- helpers ---------------------------------------------------------------------------
    def process(self, seconds=0.2):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.01)

    def add(self, path, name):
        from qgis.core import QgsProject, QgsRasterLayer

        layer = QgsRasterLayer(path, name, "gdal")
        if not layer.isValid():
            raise SystemExit(f"cannot load {path}")
        QgsProject.instance().addMapLayer(layer)
        return layer

    def save(self, widget_or_image, name):
        path = os.path.join(self.out, name)
        image = widget_or_image if hasattr(widget_or_image, "save") and not hasattr(widget_or_image, "grab") \
            else widget_or_image.grab()
        if not image.save(path):
            raise SystemExit(f"could not write {path}")
        print(path)
        return path

    def render(self, layers, size=560):
        from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
        from qgis.PyQt.QtCore import QSize
        from qgis.PyQt.QtGui import QColor

        settings = QgsMapSettings()
        settings.setLayers(layers)
        settings.setBackgroundColor(QColor(255, 255, 255))
        settings.setDestinationCrs(layers[-1].crs())
        settings.setExtent(layers[-1].extent())
        settings.setOutputSize(QSize(size, size))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        return job.renderedImage()

    def side_by_side(self, panels, name):
        """panels: [(title, [layers])] rendered next to each other with captions."""
        from qgis.PyQt.QtCore import QRect, Qt
        from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

        size, caption = 560, 34
        image = QImage(size * len(panels) + 10 * (len(panels) - 1), size + caption, QImage.Format_ARGB32)
        image.fill(QColor(255, 255, 255))
        painter = QPainter(image)
        font = QFont()
        font.setPointSize(13)
        painter.setFont(font)
        for i, (title, layers) in enumerate(panels):
            x = i * (size + 10)
            painter.drawImage(x, caption, self.render(layers, size))
            painter.setPen(QColor(30, 30, 30))
            painter.drawText(QRect(x, 0, size, caption), Qt.AlignCenter, title)
        painter.end()
        return self.save(image, name)

    def laptop_screen(self, dialog, name, size=(1280, 800), panel=30):
        """The dialog as it opens on a ``size`` screen with a desktop panel of ``panel`` px:
        a screen-sized image with the dialog (and a title bar) where it would sit."""
        from qgis.PyQt.QtCore import QRect, Qt
        from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

        available = QRect(0, panel, size[0], size[1] - panel)
        dialog.fit_to_screen(available)
        self.process(0.5)
        shot = dialog.grab()
        image = QImage(size[0], size[1], QImage.Format_ARGB32)
        image.fill(QColor(70, 90, 110))
        painter = QPainter(image)
        painter.fillRect(0, 0, size[0], panel, QColor(30, 30, 30))
        font = QFont()
        font.setPointSize(10)
        painter.setFont(font)
        painter.setPen(QColor(230, 230, 230))
        painter.drawText(QRect(10, 0, size[0] - 20, panel), Qt.AlignVCenter | Qt.AlignRight, f"{size[0]}×{size[1]}")
        x, y, title = dialog.x(), dialog.y(), 24
        painter.fillRect(x, y - title, shot.width(), title, QColor(210, 210, 215))
        painter.setPen(QColor(20, 20, 20))
        painter.drawText(QRect(x + 10, y - title, shot.width() - 20, title), Qt.AlignVCenter | Qt.AlignLeft,
                         dialog.windowTitle())
        painter.drawPixmap(x, y, shot)
        painter.end()
        bottom = y + shot.height()
        if bottom > size[1] or y - title < panel:
            raise SystemExit(f"{name}: the dialog does not fit the {size[0]}×{size[1]} screen")
        return self.save(image, name)

    def wait(self, task, timeout=600):
        end = time.monotonic() + timeout
        while not task.is_done and time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.02)
        if task.report is None:
            print(f"warning: {task.title}: {task.error or 'no result'}", file=sys.stderr)
        return task

    # -- the run -------------------------------------------------------------------------------
    def run_task(self, dialog, task_key, optical, output_name, sar=None):
        """Fill the real dialog, press Run, wait; the result layers, or None with the reason printed."""
        dialog.set_task(task_key)
        dialog.optical_combo.setLayer(optical)
        if sar is not None:
            dialog.sar_combo.setLayer(sar)
        dialog.output_widget.setFilePath(os.path.join(self.outputs, output_name))
        task = dialog.run()
        if task is None:
            print(f"{task_key} not started: " + "; ".join(dialog.errors()), file=sys.stderr)
            return None
        self.wait(task)
        return task.layers or None

    def run(self, with_results: bool) -> int:
        from qgis.core import QgsProject
        from qgis.PyQt.QtCore import QRect

        from skyclear.ui.main_dialog import SkyClearDialog

        s2 = self.add(S2_CLOUDY, "S2 L1C 2020-08-23 (cloudy)")
        s1 = self.add(S1, "S1 2020-09-03 (VV, VH dB)")
        cfog_opt = self.add(CFOG_OPT, "CFOG optical")
        cfog_sar = self.add(CFOG_SAR, "CFOG SAR")
        thin = self.add(THIN_CLOUD, "thin cloud (RGB)") if os.path.exists(THIN_CLOUD) else s2
        from skyclear.plugin.layers import style_layer

        for layer in {s2, cfog_opt, thin}:
            style_layer(layer)   # inputs get the same kind of rendering as the outputs
        self.canvas.setExtent(s2.extent())
        self.window.show()
        dialog = self.dialog = SkyClearDialog(self.iface, parent=self.window)
        dialog.auto_estimate = False      # timed explicitly below, once per task
        dialog.fit_to_screen(QRect(0, 0, 1600, 1000))
        dialog.show()
        self.process(0.5)
        plan = {
            "sar_cloud_removal": (s2, s1),
            "optical_cloud_removal": (thin, None),
            "fusion": (cfog_opt, cfog_sar),
            "custom": (s2, s1),
        }
        for key, (optical, sar) in plan.items():
            dialog.set_task(key)
            dialog.optical_combo.setLayer(optical)
            if sar is not None:
                dialog.sar_combo.setLayer(sar)
            stem = os.path.splitext(os.path.basename(optical.source()))[0]
            dialog.output_widget.setFilePath(os.path.join(self.outputs, f"{stem}_{key}.tif"))
            if key == "optical_cloud_removal":
                dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("diffusion"))
            dialog.validate()
            dialog.measure()              # one real tile through the engine: the time estimate
            self.process(0.3)
            self.save(dialog, f"dialog_{key}.png")
        dialog.tabs.setCurrentIndex(1)
        self.process(0.3)
        self.save(dialog, "dialog_dependencies.png")
        dialog.tabs.setCurrentIndex(0)
        dialog.set_task("optical_cloud_removal")
        dialog.output_widget.setFilePath(os.path.join(self.outputs, "pna_1_cloudy_cloudfree.tif"))
        dialog.validate()
        self.laptop_screen(dialog, "dialog_1280x800.png")
        dialog.fit_to_screen(QRect(0, 0, 1600, 1000))
        if not with_results:
            dialog.shutdown()
            return 0

        # classical fusion: needs no model, so it always runs
        dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("laplacian"))
        layers = self.run_task(dialog, "fusion", cfog_opt, "cfog_fused_laplacian.tif", sar=cfog_sar)
        if layers:
            same_stretch(cfog_opt, layers)
            self.side_by_side([("optical input", [cfog_opt]), ("SAR input", [cfog_sar]),
                               ("SkyClear fusion (Laplacian)", layers)], "result_fusion.png")

        # bundled models, when the zoo has them
        from skyclear.ui import logic

        if logic.zoo_for_task("sar_cloud_removal"):
            # a SEN12MS-CR triplet held out from training (models/ibhfn/splits.py)
            held_out = os.path.join(DATA, "sen12mscr", "oriolac_5278")
            s2h = self.add(os.path.join(held_out, "s2_cloudy.tif"), "S2 cloudy (SEN12MS-CR 5278)")
            s1h = self.add(os.path.join(held_out, "s1.tif"), "S1 (SEN12MS-CR 5278)")
            ref = self.add(os.path.join(held_out, "s2_cloudfree.tif"), "S2 cloud-free reference (5278)")
            style_layer(ref)  # a clear-sky stretch: with the cloudy image's, clouds squash the land to black
            layers = self.run_task(dialog, "sar_cloud_removal", s2h, "s2_cloudfree_sar.tif", sar=s1h)
            if layers:
                image = [l for l in layers if l.bandCount() > 1]
                prob = [l for l in layers if l.bandCount() == 1]
                same_stretch(ref, image + [s2h])
                self.side_by_side([("cloudy Sentinel-2 (held out)", [s2h]),
                                   ("SkyClear SAR-assisted (IB-HFN)", image),
                                   ("cloud-free reference (other date)", [ref]),
                                   ("cloud probability", prob + [s2h])], "result_sar_cloud_removal.png")
        else:
            print("no bundled SAR cloud-removal model: result_sar_cloud_removal.png skipped", file=sys.stderr)

        if logic.zoo_for_task("optical_cloud_removal") and os.path.exists(THIN_CLOUD):
            dialog.set_task("optical_cloud_removal")
            if not logic.zoo_for_task("optical_cloud_removal", step=True):
                dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("reference"))
            layers = self.run_task(dialog, "optical_cloud_removal", thin, "thin_cloud_removed.tif")
            if layers:
                same_stretch(thin, layers)
                mode = "diffusion enhancement" if dialog.mode_combo.currentData() == "diffusion" \
                    else "reference network only"
                self.side_by_side([("cloudy input", [thin]), (f"SkyClear optical ({mode})", layers)],
                                  "result_optical_cloud_removal.png")
        else:
            print("no bundled optical cloud-removal model: result_optical_cloud_removal.png skipped",
                  file=sys.stderr)

        dialog.hide()
        group = QgsProject.instance().layerTreeRoot().findGroup("SkyClear")
        if group is not None and group.findLayers():
            first = group.findLayers()[-1].layer()
            self.canvas.setDestinationCrs(first.crs())
            self.canvas.setExtent(first.extent())
        self.tree.expandAll()
        self.canvas.refresh()
        self.process(1.5)
        self.canvas.waitWhileRendering()
        self.process(0.3)
        self.save(self.window, "qgis_window.png")
        dialog.shutdown()
        return 0


    def close(self):
        from qgis.core import QgsProject

        for widget in (getattr(self, "dialog", None), self.window):
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self.process(0.3)
        QgsProject.instance().removeAllMapLayers()
        self.process(0.2)


def same_stretch(reference, layers):
    """Render outputs with the input's bands and stretch, so that the side-by-side compares
    pixels, not two different contrast stretches (the plugin itself stretches each output)."""
    for layer in layers:
        if layer.bandCount() == reference.bandCount():
            layer.setRenderer(reference.renderer().clone())


class _Iface:
    """The part of QgisInterface the dialog and tasks use."""

    def __init__(self, canvas, bar, window):
        self._canvas, self._bar, self._window = canvas, bar, window

    def mapCanvas(self):  # noqa: N802
        return self._canvas

    def messageBar(self):  # noqa: N802
        return self._bar

    def mainWindow(self):  # noqa: N802
        return self._window


if __name__ == "__main__":
    if __package__ in (None, ""):
        # run as a file: import the installed package, never the repo root as a top-level path
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    sys.exit(main())
