"""The widget's "AI segmentation" section: models folder, bundle table, device, Segment, progress, Cancel.

Imported inside Slicer only (needs ``qt`` and ``slicer``). Nothing here blocks the GUI: the run and the
device probe are child processes (``process.BackgroundProcess``) polled by one ``qt.QTimer``; ``Cancel``
ends the run's whole process tree and the scene is left as it was (results enter the scene only when a
run finished). The scene work is ``oneclick.OneClickLogic``'s.
"""

from __future__ import annotations

from pathlib import Path

import qt
import slicer

from SlicerDeepLiverLib.bundles import (BUNDLE_COLUMNS, NoBundleError, choose_bundles, default_models_folder,
                                        list_bundles)
from SlicerDeepLiverLib.deps import DeepLiverMissing, require_deepliver, torch_installed
from SlicerDeepLiverLib.inference import device_probe_command, parse_device_probe, summary_text
from SlicerDeepLiverLib.install import offer_install, offer_torch
from SlicerDeepLiverLib.oneclick import OneClickLogic
from SlicerDeepLiverLib.process import CANCELLED, DONE, FAILED, RUNNING, BackgroundProcess
from SlicerDeepLiverLib.widgets import fill_table

SETTINGS_MODELS = "SlicerDeepLiver/ModelsFolder"
SETTINGS_DEVICE = "SlicerDeepLiver/Device"
POLL_MS = 200
DEVICE_NAMES = {"auto": "Auto (GPU when available)", "cpu": "CPU (ONNX Runtime)", "cuda": "GPU (CUDA, PyTorch)"}
GPU_INSTALLS_TORCH = "GPU (needs PyTorch: installs it)"
NO_TUMOR = "None (liver only)"


class AISegmentationSection:
    """Drives the section's widgets. ``volume()`` gives the volume node to segment (or None);
    ``onResult(segmentationNode)`` makes a finished result the working segmentation."""

    def __init__(self, ui, logic, tr, volume, onResult, moduleDir) -> None:
        self.ui, self.tr, self.volume, self.onResult = ui, tr, volume, onResult
        self.moduleDir = Path(moduleDir)
        self.oneClick = OneClickLogic(logic)
        self.bundles, self.devices, self.gpuNeedsTorch = [], ["cpu"], False
        self.job, self.probe, self.probeOutput = None, None, []
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.poll)
        fill_table(ui.bundlesTable, [tr(c) for c in BUNDLE_COLUMNS], [])
        default = default_models_folder(slicer.app.slicerUserSettingsFilePath)
        ui.modelsFolderPathLineEdit.currentPath = str(qt.QSettings().value(SETTINGS_MODELS, str(default)))
        ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelsFolderChanged)
        ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshBundles())
        ui.segmentButton.connect("clicked(bool)", lambda checked: self.onSegment())
        ui.cancelButton.connect("clicked(bool)", lambda checked: self.cancel())
        self._showDevices(self.devices)
        self._showRunning(False)
        self.refreshBundles()
        self.startDeviceProbe()

    def folder(self) -> Path:
        return Path(self.ui.modelsFolderPathLineEdit.currentPath)

    # --- models and devices ---------------------------------------------------------------------------------
    def onModelsFolderChanged(self, path) -> None:
        qt.QSettings().setValue(SETTINGS_MODELS, str(path))
        self.refreshBundles()

    def refreshBundles(self) -> None:
        """List the bundles of the models folder in the table and the two model choices."""
        try:
            require_deepliver()
            self.bundles = list_bundles(self.folder())
        except DeepLiverMissing as e:
            self.bundles = []
            self.ui.aiStatusLabel.text = str(e)
        fill_table(self.ui.bundlesTable, [self.tr(c) for c in BUNDLE_COLUMNS], [b.row() for b in self.bundles])
        for combo, task, extra in ((self.ui.liverModelComboBox, "liver", []),
                                   (self.ui.tumorModelComboBox, "tumor", [self.tr(NO_TUMOR)])):
            combo.clear()
            for name in [b.name for b in self.bundles if b.task == task] + extra:
                combo.addItem(name)
        try:
            choose_bundles(self.bundles, self.folder())
            self.ui.aiStatusLabel.text = self.tr("{count} model bundle(s) in {folder}.").format(
                count=len(self.bundles), folder=self.folder())
        except NoBundleError as e:
            self.ui.aiStatusLabel.text = str(e)
        self.updateButtons()

    def startDeviceProbe(self) -> None:
        """Ask a child Python for an NVIDIA driver and what torch sees (the GPU choice appears when torch sees
        CUDA, or, offering to install PyTorch, when a driver is there and torch is not)."""
        self.ui.deviceComboBox.toolTip = self.tr("Checking for a GPU ...")
        try:
            self.probe, self.probeOutput = BackgroundProcess(device_probe_command()), []
        except OSError as e:
            self.ui.deviceComboBox.toolTip = self.tr("Could not check for a GPU: {error}").format(error=e)
            return
        self.timer.start()

    def _probeFinished(self) -> None:
        stdout = "\n".join(line for stream, line in self.probeOutput if stream == "stdout")
        report = parse_device_probe(self.probe.returncode, stdout, "\n".join(self.probe.stderr_tail))
        self.probe = None
        self.gpuNeedsTorch = report.gpu_needs_torch
        self._showDevices(report.devices)
        if report.gpu_needs_torch:
            tip = self.tr("An NVIDIA driver is present; choosing the GPU installs PyTorch first. The CPU runs "
                          "with ONNX Runtime and needs no PyTorch.")
        elif report.torch is None and not report.error:
            tip = self.tr("No NVIDIA GPU found: the segmentation runs on the CPU with ONNX Runtime.")
        elif report.torch is None:
            tip = self.tr("PyTorch is not usable in Slicer's Python: {error}. The CPU (ONNX Runtime) does not "
                          "need it.").format(error=report.error)
        elif report.cuda:
            tip = self.tr("PyTorch {version} sees: {gpus}").format(version=report.torch, gpus=", ".join(report.gpus))
        else:
            tip = self.tr("PyTorch {version} sees no CUDA GPU: the segmentation runs on the CPU (ONNX "
                          "Runtime).").format(
                version=report.torch)
        self.ui.deviceComboBox.toolTip = tip

    def _showDevices(self, devices) -> None:
        self.devices = list(devices)
        wanted = str(qt.QSettings().value(SETTINGS_DEVICE, self.devices[0]))  # the first is the default
        self.ui.deviceComboBox.clear()
        for device in self.devices:
            name = GPU_INSTALLS_TORCH if device == "cuda" and self.gpuNeedsTorch else DEVICE_NAMES[device]
            self.ui.deviceComboBox.addItem(self.tr(name))
        self.ui.deviceComboBox.currentIndex = self.devices.index(wanted) if wanted in self.devices else 0

    # --- the run ----------------------------------------------------------------------------------------
    def onSegment(self) -> None:
        if self.job is not None or not offer_install(self.moduleDir, self.tr):
            return
        volume = self.volume()
        if volume is None:
            self.ui.aiStatusLabel.text = self.tr("Load a series, or pick a volume in the Data section, first.")
            return
        with slicer.util.tryWithErrorDisplay(self.tr("Could not start the AI segmentation."), waitCursor=True):
            tumorName = self.ui.tumorModelComboBox.currentText
            liver, tumor = choose_bundles(self.bundles, self.folder(), self.ui.liverModelComboBox.currentText or None,
                                          tumorName or None, use_tumor=tumorName != self.tr(NO_TUMOR))
            warning = self.oneClick.checkVolume(volume)
            if warning and not slicer.util.confirmOkCancelDisplay(self.tr(
                    "The volume '{name}' does not look like a CT in Hounsfield units: {why}.\n\n"
                    "Segment it anyway?").format(name=volume.GetName(), why=warning)):
                return
            device = self.devices[max(0, self.ui.deviceComboBox.currentIndex)]
            if device == "cuda" and not offer_torch(self.tr):
                return
            if device == "cuda" and self.gpuNeedsTorch and torch_installed():
                self.gpuNeedsTorch = False
                self.startDeviceProbe()  # the list and tooltip then say what the new torch sees
            self.job = self.oneClick.start(volume, liver, tumor, device)
            qt.QSettings().setValue(SETTINGS_DEVICE, device)
            self.ui.aiStatusLabel.text = self.tr("Segmenting '{name}' in the background ...").format(
                name=volume.GetName())
            self._showRunning(True)
            self.timer.start()

    def poll(self) -> None:
        """QTimer slot: read the probe's and the run's output, update the progress, finish what ended."""
        if self.probe is not None:
            self.probeOutput += self.probe.read()
            if self.probe.finished:
                self._probeFinished()
        if self.job is not None:
            state = self.job.run.poll()
            self.ui.segmentProgressBar.value = self.job.run.percent
            self.ui.segmentProgressBar.format = f"{self.job.run.stage or '...'} %p%"
            if state != RUNNING:
                self._runEnded()
        if self.probe is None and self.job is None:
            self.timer.stop()

    def _runEnded(self) -> None:
        job, self.job = self.job, None
        self._showRunning(False)
        if job.run.state == DONE:
            with slicer.util.tryWithErrorDisplay(self.tr("Could not load the AI result."), waitCursor=True):
                segmentationNode = self.oneClick.finish(job)
                self.ui.aiStatusLabel.text = summary_text(job.run.summary, self.tr)
                self.onResult(segmentationNode)
        elif job.run.state == FAILED:
            self.oneClick.cancel(job)
            self.ui.aiStatusLabel.text = self.tr("The AI segmentation failed; the scene is unchanged.")
            slicer.util.errorDisplay(self.tr("The AI segmentation failed; the scene is unchanged.\n\n{error}")
                                     .format(error=job.run.error))

    def cancel(self) -> None:
        """End a running segmentation (its whole process tree); the scene stays as it was."""
        if self.job is None:
            return
        job, self.job = self.job, None
        self.oneClick.cancel(job)
        self._showRunning(False)
        if job.run.state == CANCELLED:
            self.ui.aiStatusLabel.text = self.tr("Cancelled; the scene is unchanged.")

    def cleanup(self) -> None:
        """Module cleanup: stop the run and the probe, stop the timer."""
        self.cancel()
        if self.probe is not None:
            self.probe.kill_tree()
            self.probe = None
        self.timer.stop()

    def _showRunning(self, running: bool) -> None:
        self.ui.segmentProgressBar.visible = running
        self.ui.cancelButton.visible = running
        if running:
            self.ui.segmentProgressBar.value = 0
        self.updateButtons()

    def updateButtons(self) -> None:
        idle = self.job is None
        for widget in (self.ui.segmentButton, self.ui.modelsFolderPathLineEdit, self.ui.refreshModelsButton,
                       self.ui.liverModelComboBox, self.ui.tumorModelComboBox, self.ui.deviceComboBox):
            widget.enabled = idle
        self.ui.segmentButton.enabled = idle and self.volume() is not None
        self.ui.segmentButton.toolTip = (self.tr("Segment liver and tumors of the loaded volume in the background.")
                                         if self.volume() is not None else self.tr("Load a volume first."))
