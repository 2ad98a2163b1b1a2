"""Reading and writing volumes with exact geometry (no torch).

Public API: ``read_volume``, ``read_label``, ``write_volume``, ``write_label``, ``list_series``,
``Geometry``, ``same_geometry``, ``resample_to_spacing``, ``resample_to_geometry``.
"""

from deepliver.imaging.geometry import Geometry, geometry_differences, same_geometry
from deepliver.imaging.resample import resample_to_geometry, resample_to_spacing, spacing_geometry
from deepliver.imaging.volumes import (VOLUME_EXTENSIONS, check_volume, read_label, read_volume,
                                       volume_extension, write_label, write_volume)


def list_series(folder, **kwargs):
    """List the DICOM series under ``folder``; see ``deepliver.imaging.dicom.list_series``."""
    from deepliver.imaging.dicom import list_series as _list_series
    return _list_series(folder, **kwargs)


__all__ = ["Geometry", "geometry_differences", "same_geometry", "resample_to_geometry",
           "resample_to_spacing", "spacing_geometry", "VOLUME_EXTENSIONS", "check_volume", "read_label",
           "read_volume", "volume_extension", "write_label", "write_volume", "list_series"]
