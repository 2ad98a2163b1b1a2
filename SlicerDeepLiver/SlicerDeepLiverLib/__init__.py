"""Helpers of the SlicerDeepLiver module.

Pure Python (no ``slicer``, ``qt`` or ``vtk``; tested with pytest outside Slicer, Testing/slicer/):
  ``deps``        find the ``deepliver`` package, or say exactly how to install it
  ``structures``  the Structures table: rows from ``deepliver.labels`` plus custom structures, label values
  ``series``      the Data table: rows from ``deepliver.imaging.list_series``
  ``summary``     the status line after a save, and the provenance written to the case manifest
  ``selftest``    phantom, sphere masks, label checks and tiny trained bundles of the module's self-test
  ``bundles``     the models folder: bundles listed (task, architecture, Dice, date), the pair to run
  ``inference``   the ``deepliver segment`` command, its progress lines and percent, its sidecar summary,
                  the CT intensity check, the device probe
  ``process``     child processes in their own process group: polled output, cancel kills the whole tree
Slicer only (imported inside Slicer):
  ``scene``       volumes in and out, the working segmentation, label maps to and from segments, jump
  ``widgets``     table filling, the Structures table kept in step with the segmentation, editor node
  ``oneclick``    the AI segmentation on the scene: start a run on a volume, load its result, cancel
  ``aisection``   the widget's AI segmentation section (QTimer polling, progress bar, Cancel)
  ``install``     first use: install deepliver (and PyTorch through the PyTorch extension) after asking
  ``selftest_ai`` the one-click part of the module's self-test

Nothing here imports ``deepliver`` at import time, so Slicer lists the module even before ``deepliver`` is
installed into its Python.
"""
