"""SlicerDeepLiver: liver and liver-tumor segmentation from DICOM to a trusted label map.

Public entry points live in the stage packages (``deepliver.imaging``, ``deepliver.dataset``, ...);
``deepliver.labels`` is the single label table.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
