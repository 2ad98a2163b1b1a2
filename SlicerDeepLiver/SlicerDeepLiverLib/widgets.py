"""Qt helpers of the widget: plain tables, and the Structures table kept in step with the segmentation.

Imported inside Slicer only (needs ``qt`` and ``slicer``).
"""

from __future__ import annotations

import qt
import slicer
from slicer.util import VTKObservationMixin

STRUCTURE_COLUMNS = ("#", "Color", "Name", "Label value")
"""Column titles of the Structures table (translated by the caller's function)."""


def fill_table(table, headers, rows) -> None:
    """Replace ``table``'s (a QTableWidget) content with ``rows`` of text, read-only, one selected row."""
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = qt.QTableWidgetItem(str(text))
            item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()


class StructuresTable(VTKObservationMixin):
    """The Structures table (number, color, name, label value) of one segmentation node.

    Rebuilt whenever a segment is added, removed or modified; selecting a row selects the segment in the
    Segment Editor and the other way round.
    """

    def __init__(self, table, editor, tr) -> None:
        VTKObservationMixin.__init__(self)
        self.table, self.editor, self.tr = table, editor, tr
        self.segmentation = None
        self.logic = None
        self.segmentIds = []
        self.rows = []
        table.connect("itemSelectionChanged()", self._onTableSelection)
        editor.connect("currentSegmentIDChanged(QString)", self.select)

    def setSegmentation(self, segmentationNode, logic) -> None:
        """Show ``segmentationNode``'s structures (None empties the table)."""
        if segmentationNode is self.segmentation:
            return
        self.removeObservers()
        self.segmentation, self.logic = segmentationNode, logic
        if segmentationNode is not None:
            segmentation = segmentationNode.GetSegmentation()
            for event in (segmentation.SegmentAdded, segmentation.SegmentRemoved, segmentation.SegmentModified):
                self.addObserver(segmentationNode, event, self.refresh)
        self.refresh()

    def refresh(self, caller=None, event=None) -> None:
        """Rebuild the rows from the segmentation node."""
        self.rows = self.logic.structures(self.segmentation) if self.segmentation is not None else []
        self.segmentIds = [segmentId for segmentId, _ in self.rows]
        segment = self.segmentation.GetSegmentation().GetSegment if self.segmentation is not None else None
        text = []
        for number, (segmentId, structure) in enumerate(self.rows, start=1):
            value = str(structure.value) if structure else self.tr("none: not saved")
            text.append((str(number), "", segment(segmentId).GetName(), value))
        current = self.editor.currentSegmentID()
        self.table.blockSignals(True)
        fill_table(self.table, [self.tr(c) for c in STRUCTURE_COLUMNS], text)
        for row, (segmentId, _) in enumerate(self.rows):
            r, g, b = segment(segmentId).GetColor()
            self.table.item(row, 1).setBackground(qt.QBrush(qt.QColor.fromRgbF(r, g, b)))
        self.table.blockSignals(False)
        self.select(current)

    def current(self):
        """``(segmentId, Structure or None)`` of the selected row, or ``(None, None)``."""
        row = self.table.currentRow()
        return self.rows[row] if 0 <= row < len(self.rows) else (None, None)

    def select(self, segmentId) -> None:
        """Select the row of ``segmentId`` (no-op when absent) and make it the editor's segment."""
        if segmentId in self.segmentIds:
            row = self.segmentIds.index(segmentId)
            if self.table.currentRow() != row:
                self.table.selectRow(row)
            if self.editor.currentSegmentID() != segmentId:
                self.editor.setCurrentSegmentID(segmentId)

    def _onTableSelection(self) -> None:
        segmentId, _ = self.current()
        if segmentId is not None and self.editor.currentSegmentID() != segmentId:
            self.editor.setCurrentSegmentID(segmentId)


def editor_node(tag: str):
    """The scene's segment editor parameter node with singleton ``tag`` (created when missing), so the
    embedded editor keeps its own tool settings apart from the Segment Editor module's."""
    node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        node.UnRegister(None)
        node.SetSingletonTag(tag)
        node = slicer.mrmlScene.AddNode(node)
    return node


def slicer_version() -> str:
    """The running Slicer's version text, for the manifest's provenance."""
    return str(slicer.app.applicationVersion)
