"""Helpers of the SlicerDeepLiver module.

Pure Python (no ``slicer``, ``qt`` or ``vtk``; tested with pytest outside Slicer, Testing/slicer/):
  ``deps``        find the ``deepliver`` package, or say exactly how to install it
  ``structures``  the Structures table: rows from ``deepliver.labels`` plus custom structures, label values
  ``series``      the Data table: rows from ``deepliver.imaging.list_series``
  ``summary``     the status line after a save, and the provenance written to the case manifest
  ``selftest``    phantom, sphere masks and label checks of the module's self-test
Slicer only (imported inside Slicer):
  ``scene``       volumes in and out, the working segmentation, label maps to and from segments, jump
  ``widgets``     table filling, the Structures table kept in step with the segmentation, editor node

Nothing here imports ``deepliver`` at import time, so Slicer lists the module even before ``deepliver`` is
installed into its Python.
"""
