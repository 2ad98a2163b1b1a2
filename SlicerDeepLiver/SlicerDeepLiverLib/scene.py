"""Slicer scene helpers: volumes in and out, the working segmentation, label maps to and from segments.

Imported inside Slicer only (it needs ``slicer``, ``vtk``, ``sitkUtils``). Arrays are ``(z, y, x)``,
which is Slicer's ``(k, j, i)`` for a volume node and SimpleITK's ``GetArrayFromImage`` order.

Why series are loaded with ``deepliver.imaging.read_volume`` and ``sitkUtils.PushVolumeToSlicer``
rather than through Slicer's DICOM module: the image shown is then the very image the command line
reads (same slice order, Hounsfield rescale, origin, spacing and direction, no acquisition-geometry
regularization transform or resampling that the DICOM plugin may add for uneven or tilted series),
so a label saved on it has exactly the geometry ``deepliver`` expects, and the case id can come from
the SeriesInstanceUID. The volume node stores spacing, origin and directions separately, so pulling
the image back (``PullVolumeFromSlicer``) returns the same geometry (LPS<->RAS is a sign flip).
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import sitkUtils
import slicer
import vtk

from SlicerDeepLiverLib.structures import (LABEL_VALUE_TAG, Structure, export_order, parse_label_value,
                                           remap_exported, structures_for_values)

WORKING_ATTRIBUTE = "DeepLiver.WorkingSegmentation"
"""Attribute set to "1" on the segmentation node the module edits for a volume."""

SOURCE_ATTRIBUTE = "DeepLiver.Source"
"""Attribute of a volume node loaded from DICOM: the series description as JSON (``SeriesInfo.to_dict``)."""

STARTED_FROM_ATTRIBUTE = "DeepLiver.StartedFrom"
"""Attribute of a segmentation node that began as a model result: ``bundles.model_provenance`` as JSON."""


def push_image(image, name: str, label: bool = False):
    """A new scalar (or label map) volume node holding SimpleITK ``image`` with its geometry."""
    className = "vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode"
    return sitkUtils.PushVolumeToSlicer(image, name=name, className=className)


def pull_image(volumeNode):
    """The SimpleITK image (LPS geometry, original voxel type) of ``volumeNode``."""
    return sitkUtils.PullVolumeFromSlicer(volumeNode)


def set_source(volumeNode, source: Optional[dict[str, Any]]) -> None:
    """Remember where ``volumeNode`` came from (saved with the scene)."""
    volumeNode.SetAttribute(SOURCE_ATTRIBUTE, json.dumps(source) if source else "")


def get_source(volumeNode) -> Optional[dict[str, Any]]:
    """The series description stored by ``set_source``, or None for a volume not loaded by this module."""
    text = volumeNode.GetAttribute(SOURCE_ATTRIBUTE) if volumeNode else None
    return json.loads(text) if text else None


def reference_volume(segmentationNode):
    """The volume whose geometry ``segmentationNode`` was made on, or None."""
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    return segmentationNode.GetNodeReference(role) if segmentationNode else None


def find_working_segmentation(volumeNode):
    """The working segmentation made for ``volumeNode`` earlier, or None."""
    for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
        if node.GetAttribute(WORKING_ATTRIBUTE) == "1" and reference_volume(node) is volumeNode:
            return node
    return None


def new_working_segmentation(volumeNode, suffix: str = "structures"):
    """A new, empty segmentation on ``volumeNode``'s geometry, placed beside it in the data tree (under
    the same study), named ``<volume> <suffix>``."""
    name = slicer.mrmlScene.GetUniqueNameByString(f"{volumeNode.GetName()} {suffix}")
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentationNode.SetAttribute(WORKING_ATTRIBUTE, "1")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    parent = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
    shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), parent)
    return segmentationNode


def retire_working_segmentation(volumeNode):
    """Make ``volumeNode``'s working segmentation an ordinary, hidden one (it stays in the scene, unchanged);
    returns it, or None when there was none."""
    segmentationNode = find_working_segmentation(volumeNode)
    if segmentationNode is not None:
        segmentationNode.SetAttribute(WORKING_ATTRIBUTE, "0")
        set_display(segmentationNode, False, False)
    return segmentationNode


def set_started_from(segmentationNode, started_from: Optional[dict[str, Any]]) -> None:
    """Record that ``segmentationNode`` began as a model result (saved with the scene; read at save time)."""
    segmentationNode.SetAttribute(STARTED_FROM_ATTRIBUTE, json.dumps(started_from) if started_from else "")


def get_started_from(segmentationNode) -> Optional[dict[str, Any]]:
    """The record of ``set_started_from``, or None for a segmentation drawn from scratch."""
    text = segmentationNode.GetAttribute(STARTED_FROM_ATTRIBUTE) if segmentationNode else None
    return json.loads(text) if text else None


def segment_ids(segmentationNode) -> list[str]:
    """The segment IDs of ``segmentationNode`` in display order."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def add_segment(segmentationNode, structure: Structure) -> str:
    """Add an empty segment for ``structure`` (name, color, terminology, label value tag); its ID."""
    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentation.AddEmptySegment("", structure.name, list(structure.color))
    segment = segmentation.GetSegment(segmentId)
    if structure.terminology:  # the tag Slicer's terminology selector reads (Slicer 5.0 and newer)
        segment.SetTag(segment.GetTerminologyEntryTagName(), structure.terminology)
    segment.SetTag(LABEL_VALUE_TAG, str(structure.value))
    return segmentId


def read_structures(segmentationNode) -> list[tuple[str, Optional[Structure]]]:
    """``(segmentId, Structure)`` for each segment; the Structure is None when the segment has no label
    value tag (a segment added outside this module)."""
    segmentation = segmentationNode.GetSegmentation()
    rows = []
    for segmentId in segment_ids(segmentationNode):
        segment = segmentation.GetSegment(segmentId)
        value = parse_label_value(_tag(segment, LABEL_VALUE_TAG))
        structure = None
        if value is not None:
            terminology = _tag(segment, segment.GetTerminologyEntryTagName()) or ""
            structure = Structure(value, segment.GetName(), tuple(segment.GetColor()), terminology,
                                  not terminology)
        rows.append((segmentId, structure))
    return rows


def rows_with_values(segmentationNode, values) -> list[tuple[str, Structure]]:
    """``(segmentId, Structure)`` of the segments whose label value is in ``values``."""
    return [(i, s) for i, s in read_structures(segmentationNode) if s is not None and s.value in values]


def painted_outside(segmentationNode, values) -> list[str]:
    """Names of non-empty segments whose label value is not in ``values`` (or that have none)."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetSegment(i).GetName() for i, s in read_structures(segmentationNode)
            if (s is None or s.value not in values) and segmentationNode.GetSegmentCenterRAS(i) is not None]


def _tag(segment, name: str) -> Optional[str]:
    """The text of segment tag ``name``, or None when the segment has no such tag."""
    value = vtk.mutable("")
    return str(value) if segment.GetTag(name, value) else None


def export_label_array(segmentationNode, volumeNode, rows: list[tuple[str, Structure]]) -> np.ndarray:
    """The segments in ``rows`` merged into a ``(z, y, x)`` uint8 label map on ``volumeNode``'s grid.

    Each voxel gets the label value of its structure (from the table, not the segment order); where
    segments overlap the higher value wins. Raises ``RuntimeError`` when Slicer's export fails.
    """
    shape = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
    ordered = export_order(structure for _, structure in rows)
    idByValue = {structure.value: segmentId for segmentId, structure in rows}
    if not ordered:
        return np.zeros(shape, np.uint8)
    ids = vtk.vtkStringArray()
    for structure in ordered:
        ids.InsertNextValue(idByValue[structure.value])
    labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "DeepLiverExport")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmapNode, volumeNode):
            raise RuntimeError(f"Slicer could not export segmentation {segmentationNode.GetName()!r} "
                               f"as a label map on volume {volumeNode.GetName()!r}")
        exported = slicer.util.arrayFromVolume(labelmapNode)
        if exported.shape != shape:
            raise RuntimeError(f"exported label map has shape {exported.shape}, the volume {shape} (z, y, x)")
        return remap_exported(exported, [s.value for s in ordered])
    finally:
        displayNode = labelmapNode.GetDisplayNode()
        colorNode = displayNode.GetColorNode() if displayNode else None
        slicer.mrmlScene.RemoveNode(labelmapNode)
        if colorNode and colorNode.GetName().startswith(segmentationNode.GetName()):
            slicer.mrmlScene.RemoveNode(colorNode)


def import_label_array(segmentationNode, volumeNode, array: np.ndarray, idByValue: dict[int, str]) -> None:
    """Fill each segment of ``idByValue`` with the voxels of ``array`` (``z, y, x`` on ``volumeNode``'s
    grid) that hold its value; other segments are left as they are."""
    for value, segmentId in idByValue.items():
        mask = (array == value).astype(np.uint8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, volumeNode)


def fill_from_label(segmentationNode, volumeNode, array: np.ndarray) -> None:
    """Load a saved ``(z, y, x)`` label on ``volumeNode``'s grid into the segments, adding a segment for
    each value that has none (standard structure, or a custom ``Label <value>``)."""
    rows = [(i, s) for i, s in read_structures(segmentationNode) if s is not None]
    for structure in structures_for_values(np.unique(array).tolist(), [s for _, s in rows]):
        rows.append((add_segment(segmentationNode, structure), structure))
    import_label_array(segmentationNode, volumeNode, array, {s.value: i for i, s in rows})


def jump_to_segment(segmentationNode, segmentId: str) -> bool:
    """Center every slice view on the segment's center; False when the segment is empty."""
    center = segmentationNode.GetSegmentCenterRAS(segmentId)
    if center is None:
        return False
    slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, center[0], center[1], center[2],
                                          slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return True


def set_display(segmentationNode, visible: bool, outline: bool) -> None:
    """Show or hide the whole segmentation; ``outline`` draws slice views as outlines instead of fill."""
    displayNode = segmentationNode.GetDisplayNode()
    if displayNode is None:
        return
    displayNode.SetVisibility(visible)
    displayNode.SetVisibility2DFill(not outline)
    displayNode.SetVisibility2DOutline(True)
