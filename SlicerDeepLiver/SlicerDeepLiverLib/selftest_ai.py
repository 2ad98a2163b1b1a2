"""The one-click part of the module's Slicer self-test (Slicer only).

Tiny liver and tumor bundles are trained in a temporary folder (``selftest.train_tiny_bundles``, the real
``deepliver train`` code); a phantom CT is pushed into the scene beside a working segmentation drawn
before. A background run is cancelled after its first progress line (the scene and the working
segmentation stay as they were, the work folder is gone); a second run is followed to the end, loaded,
checked against the sidecar's volumes, geometry and data tree, and saved with its provenance.
The runs are polled in a plain loop here; the widget polls the same ``SegmentationRun`` from a QTimer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from SlicerDeepLiverLib import scene
from SlicerDeepLiverLib.bundles import choose_bundles, list_bundles
from SlicerDeepLiverLib.oneclick import OneClickLogic
from SlicerDeepLiverLib.process import CANCELLED, DONE
from SlicerDeepLiverLib.selftest import phantom_image, train_tiny_bundles

TIMEOUT_S = 600


def _study_of(node):
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    return shNode.GetItemParent(shNode.GetItemByDataNode(node))


def check_one_click(test, logic) -> None:
    """Run the checks with ``test`` (a ``unittest.TestCase``) and the module's logic."""
    oneClick = OneClickLogic(logic)
    with tempfile.TemporaryDirectory() as tmp:
        models = train_tiny_bundles(Path(tmp))
        folder = models["liver"].parent
        liver, tumor = choose_bundles(list_bundles(folder), folder)
        test.assertEqual((liver.path, tumor.path), (models["liver"], models["tumor"]))
        image = phantom_image()
        volumeNode = scene.push_image(image, "DeepLiverPhantom")
        test.assertIsNone(oneClick.checkVolume(volumeNode))
        drawn, _ = logic.prepareVolume(volumeNode)

        nodes = slicer.mrmlScene.GetNumberOfNodes()
        job = oneClick.start(volumeNode, liver, tumor, "cpu", threads=1)
        state = job.run.wait(0.05, TIMEOUT_S, lambda run: run.tracker.progress_lines and oneClick.cancel(job))
        test.assertEqual(state, CANCELLED)
        test.assertFalse(job.folder.exists())
        test.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        test.assertIs(scene.find_working_segmentation(volumeNode), drawn)

        job = oneClick.start(volumeNode, liver, tumor, "cpu", threads=1)
        test.assertEqual(job.run.wait(0.1, TIMEOUT_S), DONE, job.run.error)
        segmentationNode = oneClick.finish(job)
        test.assertFalse(job.folder.exists())
        test.assertIs(scene.find_working_segmentation(volumeNode), segmentationNode)
        test.assertIsNot(segmentationNode, drawn)
        test.assertIs(logic.referenceVolume(segmentationNode), volumeNode)
        test.assertEqual(_study_of(segmentationNode), _study_of(volumeNode))
        test.assertEqual([s.name for _, s in logic.structures(segmentationNode)], ["Liver", "Tumor"])

        label = sitk.GetArrayFromImage(logic.labelImage(volumeNode, segmentationNode))
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        test.assertAlmostEqual(np.count_nonzero(label >= 1) * voxel_ml, job.run.summary.liver_ml, places=2)
        test.assertAlmostEqual(np.count_nonzero(label == 2) * voxel_ml, job.run.summary.tumor_ml, places=2)

        from deepliver.dataset import load_case
        dataset = Path(tmp) / "dataset-corrected"
        result = logic.saveCase(volumeNode, segmentationNode, dataset, "self-test",
                                scene.get_started_from(segmentationNode))
        provenance = load_case(dataset, result.case_id)[2]["provenance"]
        test.assertEqual(provenance["method"], "corrected")
        test.assertEqual(provenance["corrected_by"], "self-test")
        test.assertEqual(provenance["started_from"]["bundle"], f"{liver.name} + {tumor.name}")
