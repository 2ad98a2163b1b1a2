"""SlicerDeepLiver: annotate liver and liver tumors on CT and save each case into a training dataset.

MPReview's workflow rebuilt on segmentation nodes: pick a DICOM folder and a series (or a volume already
in the scene), optionally let a model segment it in the background (``SlicerDeepLiverLib.aisection``),
paint or correct the structures of ``deepliver.labels`` with the Segment Editor, save the case with
``deepliver.dataset.export_case`` (previous labels are kept in the case history). The logic class works
without the widget; the ``deepliver`` package is imported only when an action needs it.
"""

import pathlib

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from SlicerDeepLiverLib.aisection import AISegmentationSection
from SlicerDeepLiverLib.deps import DeepLiverMissing, require_deepliver
from SlicerDeepLiverLib import scene
from SlicerDeepLiverLib.series import COLUMNS, folder_is_set, series_rows
from SlicerDeepLiverLib.structures import custom_structure, reserved_values, standard_structures
from SlicerDeepLiverLib.summary import annotation_provenance, case_summary
from SlicerDeepLiverLib.widgets import StructuresTable, editor_node, fill_table, slicer_version

SETTINGS_ANNOTATOR = "SlicerDeepLiver/Annotator"
SETTINGS_DATASET = "SlicerDeepLiver/DatasetFolder"
EDITOR_NODE_TAG = "SlicerDeepLiver"


class SlicerDeepLiver(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DeepLiver")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "SegmentEditor"]
        self.parent.contributors = ["SlicerDeepLiver contributors"]
        self.parent.helpText = _("""
Annotate liver and liver tumors on CT and save each case into a training dataset (MSD / nnU-Net layout).
Load a DICOM series, segment it with a model in one click (or paint from scratch), correct the structures
with the Segment Editor, save. Saving again keeps the previous label in the case history. See <a href="https://github.com/SlicerDeepLiver/SlicerDeepLiver#for-radiologists-the-3d-slicer-module">the documentation</a>.
""")
        self.parent.acknowledgementText = _("Workflow after MPReview (SlicerProstate), rebuilt on segmentations.")


@parameterNodeWrapper
class SlicerDeepLiverParameterNode:
    """dicomFolder: where series are listed from. inputVolume: the volume being annotated.
    segmentation: its working segmentation. datasetFolder / annotator: where and by whom cases are saved.
    hideSegmentation / outlineOnly: display of the working segmentation."""

    dicomFolder: pathlib.Path
    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    datasetFolder: pathlib.Path
    annotator: str = ""
    hideSegmentation: bool = False
    outlineOnly: bool = False


class SlicerDeepLiverWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._series = []
        self._structures = None
        self._ai = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SlicerDeepLiver.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlicerDeepLiverLogic()
        self._structures = StructuresTable(self.ui.structuresTable, self.ui.segmentEditorWidget, _)
        fill_table(self.ui.seriesTable, [_(c) for c in COLUMNS], [])

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.listSeriesButton.connect("clicked(bool)", self.onListSeries)
        self.ui.seriesTable.connect("itemSelectionChanged()", self._updateButtons)
        self.ui.seriesTable.connect("cellDoubleClicked(int,int)", lambda row, column: self.onLoadSeries())
        self.ui.loadSeriesButton.connect("clicked(bool)", self.onLoadSeries)
        self.ui.useVolumeButton.connect("clicked(bool)", self.onUseVolume)
        self.ui.addStructureButton.connect("clicked(bool)", self.onAddStructure)
        self.ui.newStructureLineEdit.connect("returnPressed()", self.onAddStructure)
        self.ui.deleteStructureButton.connect("clicked(bool)", self.onDeleteStructure)
        self.ui.jumpToRoiButton.connect("clicked(bool)", self.onJumpToRoi)
        self.ui.saveButton.connect("clicked(bool)", self.onSave)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editor_node(EDITOR_NODE_TAG))
        self._ai = AISegmentationSection(self.ui, self.logic, _, self._currentVolume, self._onAIResult,
                                         pathlib.Path(__file__).resolve().parent)
        self.initializeParameterNode()
        try:
            require_deepliver()
        except DeepLiverMissing as e:
            self.ui.statusLabel.text = str(e)

    def cleanup(self) -> None:
        self.removeObservers()
        self._structures.removeObservers()
        self._ai.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._ai.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editor_node(EDITOR_NODE_TAG))
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        settings = qt.QSettings()
        if not self._parameterNode.annotator:
            self._parameterNode.annotator = str(settings.value(SETTINGS_ANNOTATOR, ""))
        if not folder_is_set(self._parameterNode.datasetFolder) and settings.value(SETTINGS_DATASET, ""):
            self._parameterNode.datasetFolder = pathlib.Path(str(settings.value(SETTINGS_DATASET)))

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        segmentation = p.segmentation if p else None
        self._structures.setSegmentation(segmentation, self.logic)
        editor = self.ui.segmentEditorWidget
        if editor.segmentationNode() is not segmentation:
            editor.setSegmentationNode(segmentation)
            editor.setSourceVolumeNode(self.logic.referenceVolume(segmentation) if segmentation else None)
        if segmentation:
            self.logic.setDisplay(segmentation, not p.hideSegmentation, p.outlineOnly)
        self._updateButtons()

    def _updateButtons(self) -> None:
        p = self._parameterNode
        ready = bool(p and p.segmentation)
        self.ui.loadSeriesButton.enabled = bool(self._series) and self.ui.seriesTable.currentRow() >= 0
        self.ui.useVolumeButton.enabled = bool(p and p.inputVolume)
        for button in (self.ui.addStructureButton, self.ui.deleteStructureButton, self.ui.jumpToRoiButton,
                       self.ui.hideButton, self.ui.outlineButton):
            button.enabled = ready
        self.ui.saveButton.enabled = ready and folder_is_set(p.datasetFolder) and bool(p.annotator.strip())
        if self._ai:
            self._ai.updateButtons()

    def _currentVolume(self):
        return self._parameterNode.inputVolume if self._parameterNode else None

    def _onAIResult(self, segmentation) -> None:
        """A finished model result becomes the working segmentation, to correct and save."""
        self._parameterNode.segmentation = segmentation
        slicer.util.setSliceViewerLayers(background=self.logic.referenceVolume(segmentation), fit=True)

    # --- Data ---------------------------------------------------------------------------------------------
    def onListSeries(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not list the DICOM series of this folder."), waitCursor=True):
            self._series = []
            self._series = self.logic.listSeries(self._parameterNode.dicomFolder)
            self.ui.statusLabel.text = _("{count} series found.").format(count=len(self._series))
        fill_table(self.ui.seriesTable, [_(c) for c in COLUMNS], series_rows(self._series, _))
        self._updateButtons()

    def onLoadSeries(self) -> None:
        row = self.ui.seriesTable.currentRow()
        if not 0 <= row < len(self._series):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the series."), waitCursor=True):
            p = self._parameterNode
            volume, segmentation, caseId = self.logic.loadSeries(p.dicomFolder, self._series[row], self._dataset())
            self._showLoaded(volume, segmentation, caseId)

    def onUseVolume(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not prepare this volume for annotation."), waitCursor=True):
            volume = self._parameterNode.inputVolume
            segmentation, caseId = self.logic.prepareVolume(volume, self._dataset())
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self._showLoaded(volume, segmentation, caseId)

    def _showLoaded(self, volume, segmentation, caseId) -> None:
        self._parameterNode.segmentation = segmentation
        self._parameterNode.inputVolume = volume
        self.ui.statusLabel.text = (_("Loaded the newest saved label of case {case_id}.").format(case_id=caseId)
                                    if caseId else _("No saved case for this volume yet: paint, then save."))

    def _dataset(self):
        p = self._parameterNode
        return p.datasetFolder if folder_is_set(p.datasetFolder) else None

    # --- Structures ---------------------------------------------------------------------------------------
    def onAddStructure(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not add the structure."), waitCursor=False):
            segmentId = self.logic.addStructure(self._parameterNode.segmentation, self.ui.newStructureLineEdit.text)
            self.ui.newStructureLineEdit.text = ""
            self._structures.select(segmentId)

    def onDeleteStructure(self) -> None:
        segmentId, structure = self._structures.current()
        if segmentId is None:
            return
        name = structure.name if structure else segmentId
        if not slicer.util.confirmOkCancelDisplay(_(
                "Delete the structure '{name}' from the working segmentation? Saved cases are not changed "
                "until you save again; the label saved before that is then kept in the case history.").format(name=name)):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not delete the structure."), waitCursor=False):
            self.logic.removeStructure(self._parameterNode.segmentation, segmentId)

    def onJumpToRoi(self) -> None:
        segmentId, structure = self._structures.current()
        if segmentId is None:
            self.ui.statusLabel.text = _("Select a structure in the table first.")
        elif not self.logic.jumpToStructure(self._parameterNode.segmentation, segmentId):
            self.ui.statusLabel.text = _("'{name}' is empty: nothing to jump to.").format(
                name=structure.name if structure else segmentId)

    # --- Save ---------------------------------------------------------------------------------------------
    def onSave(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Saving the case failed; the dataset was not changed."), waitCursor=True):
            unsaved = self.logic.paintedCustomStructures(p.segmentation)
            if unsaved and not slicer.util.confirmOkCancelDisplay(_(
                    "The dataset label holds only the structures of the label table. These custom structures "
                    "stay in the scene but are not saved in the case: {names}. Save the case?").format(
                        names=", ".join(unsaved))):
                return
            volume = self.logic.referenceVolume(p.segmentation)
            result = self.logic.saveCase(volume, p.segmentation, p.datasetFolder, p.annotator.strip(),
                                         scene.get_started_from(p.segmentation))
            settings = qt.QSettings()
            settings.setValue(SETTINGS_ANNOTATOR, p.annotator.strip())
            settings.setValue(SETTINGS_DATASET, str(p.datasetFolder))
            history = (_(" Previous label kept in {path}.").format(path=result.history_path.name)
                       if result.history_path else "")
            self.ui.statusLabel.text = case_summary(result, _) + history


class SlicerDeepLiverLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, callable without it (from the Python console or a test).

    Volumes, segmentations and dataset folders come in as arguments; ``deepliver`` does the reading,
    case ids, statistics and writing. Label values of segments come from ``deepliver.labels``.
    """

    def getParameterNode(self):
        return SlicerDeepLiverParameterNode(super().getParameterNode())

    def listSeries(self, folder):
        """The DICOM series under ``folder`` (``deepliver.imaging.list_series``)."""
        require_deepliver()
        from deepliver.imaging import list_series
        return list_series(folder)

    def loadSeries(self, folder, info, dataset=None):
        """Load series ``info`` (a ``SeriesInfo`` from ``listSeries``) of ``folder``; returns
        ``(volumeNode, segmentationNode, caseId)``, caseId when ``dataset`` holds a saved label for it."""
        require_deepliver()
        from deepliver.imaging import read_volume
        image = read_volume(folder, series=info.series_id)
        volumeNode = scene.push_image(image, info.description or info.short_id)
        scene.set_source(volumeNode, {"folder": str(folder), **info.to_dict()})
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        segmentationNode, caseId = self.prepareVolume(volumeNode, dataset, image)
        return volumeNode, segmentationNode, caseId

    def prepareVolume(self, volumeNode, dataset=None, image=None):
        """The working segmentation of ``volumeNode`` (made with the standard structures when new, then
        filled from the newest saved label in ``dataset`` if there is one): ``(segmentationNode, caseId)``."""
        if volumeNode is None:
            raise ValueError(_("Select a volume first."))
        require_deepliver()
        segmentationNode = scene.find_working_segmentation(volumeNode)
        if segmentationNode is not None:
            return segmentationNode, None
        segmentationNode = scene.new_working_segmentation(volumeNode)
        for structure in standard_structures():
            scene.add_segment(segmentationNode, structure)
        caseId = self.loadSavedLabel(volumeNode, segmentationNode, dataset, image) if dataset else None
        return segmentationNode, caseId

    def findSavedCase(self, dataset, volumeNode, image=None):
        """The case id of ``volumeNode`` in ``dataset`` if it was saved there, else None."""
        require_deepliver()
        from deepliver.dataset import DatasetLayout, case_id_for, find_case
        layout = DatasetLayout(pathlib.Path(dataset))
        if not layout.manifests.is_dir():
            return None
        uid = (scene.get_source(volumeNode) or {}).get("series_uid")
        if uid:
            return find_case(dataset, uid)
        caseId = case_id_for(dataset, image=image if image is not None else scene.pull_image(volumeNode))
        return caseId if layout.manifest(caseId).is_file() else None

    def loadSavedLabel(self, volumeNode, segmentationNode, dataset, image=None):
        """Fill the segments from the newest saved label of ``volumeNode``'s case; its id, or None."""
        caseId = self.findSavedCase(dataset, volumeNode, image)
        if caseId is not None:
            from deepliver.dataset import load_case
            self.importLabel(volumeNode, segmentationNode, load_case(dataset, caseId)[1], image)
        return caseId

    def importLabel(self, volumeNode, segmentationNode, label, image=None):
        """Replace the segments' content with a label map (SimpleITK, ``volumeNode``'s geometry): a saved
        case, or a model's result to correct. Values without a segment get one."""
        import SimpleITK as sitk
        from deepliver.imaging import geometry_differences
        differences = geometry_differences(label, image if image is not None else scene.pull_image(volumeNode))
        if differences:
            raise ValueError(_("The label does not fit this volume: {why}").format(why="; ".join(differences)))
        scene.fill_from_label(segmentationNode, volumeNode, sitk.GetArrayFromImage(label))

    def referenceVolume(self, segmentationNode):
        """The volume ``segmentationNode`` was made on (its reference geometry), or None."""
        return scene.reference_volume(segmentationNode)

    def structures(self, segmentationNode):
        """``(segmentId, Structure or None)`` for every segment, in segment order."""
        return scene.read_structures(segmentationNode)

    def addStructure(self, segmentationNode, name):
        """Add a custom structure called ``name`` with the next free label value; its segment id."""
        require_deepliver()
        existing = [s for _, s in self.structures(segmentationNode) if s is not None]
        return scene.add_segment(segmentationNode, custom_structure(name, existing, reserved_values()))

    def removeStructure(self, segmentationNode, segmentId):
        """Remove a segment from the working segmentation only (saved files are never touched)."""
        segmentationNode.GetSegmentation().RemoveSegment(segmentId)

    def jumpToStructure(self, segmentationNode, segmentId):
        """Center all slice views on the segment; False when it is empty."""
        return scene.jump_to_segment(segmentationNode, segmentId)

    def setDisplay(self, segmentationNode, visible, outline):
        scene.set_display(segmentationNode, visible, outline)

    def paintedCustomStructures(self, segmentationNode):
        """Names of non-empty segments whose value is not in ``deepliver.labels`` (not saved in a case)."""
        require_deepliver()
        return scene.painted_outside(segmentationNode, reserved_values())

    def labelImage(self, volumeNode, segmentationNode, image=None):
        """The label-table structures as a uint8 SimpleITK label map with ``volumeNode``'s geometry."""
        import SimpleITK as sitk
        rows = scene.rows_with_values(segmentationNode, reserved_values())
        label = sitk.GetImageFromArray(scene.export_label_array(segmentationNode, volumeNode, rows))
        label.CopyInformation(image if image is not None else scene.pull_image(volumeNode))
        return label

    def saveCase(self, volumeNode, segmentationNode, dataset, annotator=None, startedFrom=None):
        """Save the case into ``dataset`` (``deepliver.dataset.export_case``); returns its ExportResult.

        A series loaded by ``loadSeries`` is re-read from its DICOM folder, so the dataset gets exactly
        the image (and case id, and pseudonymous source fields) the command line would give.
        """
        require_deepliver()
        from deepliver.dataset import export_case
        image = scene.pull_image(volumeNode)
        label = self.labelImage(volumeNode, segmentationNode, image)
        source = scene.get_source(volumeNode) or {}
        names = [s.name for _, s in self.structures(segmentationNode) if s is not None and s.value in reserved_values()]
        provenance = annotation_provenance(slicer_version(), started_from=startedFrom, structures=names,
                                           annotator=annotator)
        if source.get("folder"):
            if not pathlib.Path(source["folder"]).is_dir():
                raise ValueError(_("The DICOM folder this series was loaded from is not readable any more: "
                                   "{folder}. Reconnect it and save again.").format(folder=source["folder"]))
            return export_case(source["folder"], label, dataset, series=source["series_id"],
                               annotator=annotator or None, provenance=provenance)
        return export_case(image, label, dataset, annotator=annotator or None, provenance=provenance)


class SlicerDeepLiverTest(ScriptedLoadableModuleTest):
    """Load a phantom DICOM series, paint liver and tumor spheres, save the case, reload it and check the
    voxel counts and geometry; then the same for a volume that is only in the scene; then the one-click
    AI segmentation (cancel, run, load, save with provenance)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DicomSeriesSaveAndReload()
        self.setUp()
        self.test_SceneVolumeSave()
        self.setUp()
        self.test_OneClickSegmentation()

    def test_DicomSeriesSaveAndReload(self):
        import tempfile
        from deepliver.dataset import load_case
        from deepliver.imaging import write_dicom_series
        from SlicerDeepLiverLib.selftest import label_differences, paint_spheres, phantom_image
        logic, image = SlicerDeepLiverLogic(), phantom_image()
        with tempfile.TemporaryDirectory() as tmp:
            folder, dataset = pathlib.Path(tmp) / "dicom", pathlib.Path(tmp) / "dataset"
            write_dicom_series(image, folder, uid_seed=11)
            (info,) = logic.listSeries(folder)
            volumeNode, segmentationNode, caseId = logic.loadSeries(folder, info, dataset)
            self.assertIsNone(caseId)
            expected = paint_spheres(logic, volumeNode, segmentationNode, image)
            vessel = logic.addStructure(segmentationNode, "Vessel")  # custom: stays out of the case
            self.assertFalse(logic.jumpToStructure(segmentationNode, vessel))
            self.assertEqual(logic.paintedCustomStructures(segmentationNode), [])
            first = logic.saveCase(volumeNode, segmentationNode, dataset, "self-test")
            self.assertEqual({k: first.voxel_counts[k] for k in expected}, expected)
            self.assertEqual((first.lesion_count, first.history_path), (1, None))
            second = logic.saveCase(volumeNode, segmentationNode, dataset, "self-test")
            self.assertEqual(second.case_id, first.case_id)
            self.assertTrue(second.history_path.is_file())
            self.assertEqual(label_differences(load_case(dataset, first.case_id)[1], image, expected), [])
            slicer.mrmlScene.Clear()
            volumeNode, segmentationNode, caseId = logic.loadSeries(folder, info, dataset)
            self.assertEqual(caseId, first.case_id)
            self.assertEqual(label_differences(logic.labelImage(volumeNode, segmentationNode), image, expected), [])
            self.assertTrue(logic.jumpToStructure(segmentationNode, logic.structures(segmentationNode)[0][0]))
        self.delayDisplay(_("DICOM series test passed"))

    def test_SceneVolumeSave(self):
        import tempfile
        from SlicerDeepLiverLib.selftest import label_differences, paint_spheres, phantom_image
        logic, image = SlicerDeepLiverLogic(), phantom_image(seed=8)
        volumeNode = scene.push_image(image, "DeepLiverPhantom")
        segmentationNode, caseId = logic.prepareVolume(volumeNode)
        expected = paint_spheres(logic, volumeNode, segmentationNode, image)
        with tempfile.TemporaryDirectory() as dataset:
            result = logic.saveCase(volumeNode, segmentationNode, dataset, "self-test")
            self.assertEqual({k: result.voxel_counts[k] for k in expected}, expected)
            slicer.mrmlScene.Clear()
            volumeNode = scene.push_image(image, "DeepLiverPhantom")
            segmentationNode, caseId = logic.prepareVolume(volumeNode, dataset)
            self.assertEqual(caseId, result.case_id)
            self.assertEqual(label_differences(logic.labelImage(volumeNode, segmentationNode), image, expected), [])
        self.delayDisplay(_("Scene volume test passed"))

    def test_OneClickSegmentation(self):
        """Tiny bundles trained here; a run cancelled, then one finished, corrected and saved."""
        from SlicerDeepLiverLib.selftest_ai import check_one_click
        check_one_click(self, SlicerDeepLiverLogic())
        self.delayDisplay(_("One-click segmentation test passed"))
