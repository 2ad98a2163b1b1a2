"""Reading and writing volumes with exact geometry (no torch).

Public API: ``read_volume``, ``read_label``, ``write_volume``, ``write_label``, ``list_series``,
``write_dicom_series``, ``Geometry``, ``same_geometry``, ``resample_to_spacing``, ``resample_to_geometry``.
"""

from deepliver.imaging.geometry import Geometry, geometry_differences, same_geometry
from deepliver.imaging.resample import resample_to_geometry, resample_to_spacing, spacing_geometry
from deepliver.imaging.volumes import (VOLUME_EXTENSIONS, check_volume, read_label, read_volume,
                                       volume_extension, write_label, write_volume)


def list_series(folder, **kwargs):
    """List the DICOM series under ``folder``; see ``deepliver.imaging.dicom.list_series``."""
    from deepliver.imaging.dicom import list_series as _list_series
    return _list_series(folder, **kwargs)


def write_dicom_series(image, folder, **kwargs):
    """Write a 3D CT image as a DICOM series; see ``deepliver.imaging.dicom_write.write_dicom_series``."""
    from deepliver.imaging.dicom_write import write_dicom_series as _write_dicom_series
    return _write_dicom_series(image, folder, **kwargs)


__all__ = ["Geometry", "geometry_differences", "same_geometry", "resample_to_geometry",
           "resample_to_spacing", "spacing_geometry", "VOLUME_EXTENSIONS", "check_volume", "read_label",
           "read_volume", "volume_extension", "write_label", "write_volume", "list_series",
           "write_dicom_series"]
