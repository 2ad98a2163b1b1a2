"""One-click AI segmentation on the scene, without the widget: start a background ``deepliver segment`` run
on a volume node, then turn its result into the working segmentation (or cancel, leaving the scene as it
was).

Imported inside Slicer only (needs ``slicer``). The run itself is ``process.SegmentationRun``: the caller
polls it (the widget from a ``qt.QTimer``, the self-test from a loop). The volume goes to the child as an
NRRD (gzip level 1) pulled with its exact geometry (``scene.pull_image``), so the label that comes back fits
the volume voxel for voxel; nothing touches the scene until ``finish``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import slicer

from SlicerDeepLiverLib import scene
from SlicerDeepLiverLib.bundles import BundleInfo, check_bundle_tasks, check_onnx, model_provenance
from SlicerDeepLiverLib.inference import SegmentRequest, ct_warning
from SlicerDeepLiverLib.process import DONE, SegmentationRun, new_work_folder
from SlicerDeepLiverLib.structures import standard_structures

RESULT_SUFFIX = "AI structures"
"""Name suffix of the segmentation node made from a model result."""


@dataclass
class OneClickJob:
    """A started run: the volume it segments, the run, its private work folder (input and output files,
    removed by ``cleanup``) and the provenance the result will carry."""

    volumeNode: Any
    run: SegmentationRun
    folder: Path
    provenance: dict[str, Any]

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class OneClickLogic:
    """The steps of the AI section; ``logic`` is the module's ``SlicerDeepLiverLogic`` (``importLabel``)."""

    def __init__(self, logic) -> None:
        self.logic = logic

    def checkVolume(self, volumeNode) -> Optional[str]:
        """Why ``volumeNode`` does not look like CT in Hounsfield units (``inference.ct_warning``), or None."""
        return ct_warning(slicer.util.arrayFromVolume(volumeNode))

    def start(self, volumeNode, liver: BundleInfo, tumor: Optional[BundleInfo] = None, device: str = "auto",
              threads: Optional[int] = None, python: Optional[str] = None, env=None) -> OneClickJob:
        """Write the volume to a work folder and start ``deepliver segment`` on it; returns at once.

        Raises ``BundleError`` for a bundle of the wrong task, and ``NoBundleError`` for a CPU run (ONNX Runtime)
        of a bundle without ``model.onnx``, before anything is written or started."""
        from deepliver.imaging import write_volume

        if volumeNode is None:
            raise ValueError("Select or load a volume first.")
        check_bundle_tasks(liver.path, tumor.path if tumor else None)
        if device == "cpu":
            check_onnx([b.path for b in (liver, tumor) if b is not None])
        folder = new_work_folder()
        try:
            source = write_volume(scene.pull_image(volumeNode), folder / "input.nrrd")
            request = SegmentRequest(source, folder / "result.nii.gz", liver.path, tumor.path if tumor else None,
                                     device, threads, python)
            run = SegmentationRun(request, env=env).start()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return OneClickJob(volumeNode, run, folder, model_provenance(liver, tumor, device))

    def finish(self, job: OneClickJob):
        """Load a ``DONE`` run's label into a new working segmentation of the job's volume (Liver and Tumor
        segments from ``deepliver.labels``, same study in the data tree); the previous working segmentation
        stays in the scene, hidden. Returns the new segmentation node; the work folder is removed."""
        from deepliver.imaging import read_label

        if job.run.state != DONE:
            raise RuntimeError(f"the segmentation run is {job.run.state}, not done: {job.run.error}")
        try:
            image = scene.pull_image(job.volumeNode)
            label = read_label(job.run.request.output, image)
            scene.retire_working_segmentation(job.volumeNode)
            segmentationNode = scene.new_working_segmentation(job.volumeNode, RESULT_SUFFIX)
            for structure in standard_structures():
                scene.add_segment(segmentationNode, structure)
            self.logic.importLabel(job.volumeNode, segmentationNode, label, image)
            scene.set_started_from(segmentationNode, job.provenance)
            return segmentationNode
        finally:
            job.cleanup()

    def cancel(self, job: OneClickJob) -> None:
        """End the run's whole process tree and remove its files; the scene is not touched."""
        try:
            job.run.cancel()
        finally:
            job.cleanup()
