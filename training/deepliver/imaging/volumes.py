"""Read and write 3D volumes and label maps with their geometry intact.

Formats by extension: ``.nii`` / ``.nii.gz`` (NIfTI), ``.nrrd`` / ``.seg.nrrd`` (NRRD), ``.mha`` / ``.mhd``
(MetaImage); a folder is read as a DICOM series (``deepliver.imaging.dicom``). Images come back as
``SimpleITK.Image`` in Hounsfield units (DICOM rescale slope/intercept applied); labels as uint8.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from deepliver.atomic import atomic_path
from deepliver.errors import GeometryError, ReadError
from deepliver.imaging.file_checks import check_file_complete
from deepliver.imaging.geometry import Geometry, geometry_differences
from deepliver.labels import check_label_values

__all__ = ["VOLUME_EXTENSIONS", "volume_extension", "read_volume", "read_label", "write_volume",
           "write_label", "check_volume"]

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")
"""File extensions read and written, longest first."""


def volume_extension(path: str | os.PathLike) -> str | None:
    """The volume extension of ``path`` (``.nii.gz``, ``.nrrd``...), lower-case, or None if unknown."""
    name = Path(path).name.lower()
    for ext in VOLUME_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def check_volume(image: sitk.Image, path: str | os.PathLike | None = None) -> sitk.Image:
    """Raise ``ReadError`` naming ``path`` unless ``image`` is a scalar 3D volume without NaN voxels."""
    dim = image.GetDimension()
    if dim == 2 or (dim == 3 and image.GetSize()[2] == 1):
        raise ReadError(f"this is a 2D image (size {image.GetSize()}); a 3D volume is needed", path)
    if dim == 4:
        raise ReadError(f"this is a 4D image (size {image.GetSize()}); a 3D volume is needed "
                        "(split the time or channel axis first)", path)
    if dim != 3:
        raise ReadError(f"this is a {dim}D image; a 3D volume is needed", path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ReadError(f"voxels have {image.GetNumberOfComponentsPerPixel()} components (color or vector "
                        "image); a scalar CT or label volume is needed", path)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise ReadError(f"{bad} voxel(s) are NaN or infinite", path)
    return image


def read_volume(path: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """Read a 3D volume from a DICOM folder or a NIfTI / NRRD / MetaImage file.

    ``series`` picks one series when a DICOM folder holds several: its SeriesInstanceUID or the id
    ``deepliver series FOLDER`` shows (``deepliver.imaging.dicom.read_dicom_series``). The result carries
    the file's geometry (origin, spacing, direction in LPS) and, for CT, Hounsfield units. Raises
    ``ReadError`` (one line, naming the file) for missing, unreadable, corrupted, truncated, 2D, 4D,
    multi-component or NaN input.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError("no such file or folder", path)
    if path.is_dir():
        from deepliver.imaging.dicom import read_dicom_series  # local: keeps pydicom off the fast path
        return read_dicom_series(path, series=series)
    ext = volume_extension(path)
    if ext is None:
        raise ReadError(f"unknown file extension; expected a DICOM folder or one of "
                        f"{', '.join(VOLUME_EXTENSIONS)}", path)
    check_file_complete(path, ext)  # ITK zero-fills truncated NIfTI silently
    try:
        image = _read_nifti(path) if ext in (".nii", ".nii.gz") else None
        if image is None:
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ReadError(f"cannot read this {ext} file; it is corrupted or truncated "
                        f"({_itk_reason(e)})", path) from e
    return check_volume(image, path)


def _read_nifti(path: Path) -> sitk.Image | None:
    """A 3D NIfTI file with its geometry as ITK reads it (header only) and its voxels inflated by
    ``read_nifti_slices`` (ISA-L: about a third less time than ITK's zlib for a 512x512x200 CT); None for
    what that reader leaves to ITK (scaled, float, 4D, multi-component files)."""
    from deepliver.imaging.nifti_slices import read_nifti_slices

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        return None
    size = reader.GetSize()
    voxels = read_nifti_slices(path, 0, size[2]) if size[2] > 0 else None
    if voxels is None or voxels.shape != tuple(size[::-1]):
        return None
    image = sitk.GetImageFromArray(voxels)
    if image.GetPixelID() != reader.GetPixelID():
        return None
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    return image


def read_label(path: str | os.PathLike, reference: sitk.Image | Geometry | None = None) -> sitk.Image:
    """Read a label map as uint8, checking its values against ``deepliver.labels`` and, when given, that
    its geometry equals ``reference``'s. Raises ``LabelError`` / ``GeometryError`` naming ``path``."""
    image = read_volume(path)
    _check_label(image, reference, path)
    return sitk.Cast(image, sitk.sitkUInt8) if image.GetPixelID() != sitk.sitkUInt8 else image


def write_volume(image: sitk.Image, path: str | os.PathLike, compression_level: int = 1) -> Path:
    """Write ``image`` to ``path`` (format by extension) atomically; returns the path.

    ``compression_level`` applies to compressed formats (gzip 1 is several times faster than the
    default and only slightly larger on CT).
    """
    path = Path(path)
    ext = volume_extension(path)
    if ext is None:
        raise ReadError(f"unknown output extension; use one of {', '.join(VOLUME_EXTENSIONS)}", path)
    compress = ext in (".nii.gz", ".nrrd", ".seg.nrrd", ".mha")
    if ext == ".mhd":
        return _write_mhd(image, path)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress, compression_level)
        except RuntimeError as e:
            raise ReadError(f"cannot write ({_itk_reason(e)})", path) from e
    return path


def write_label(label: sitk.Image | np.ndarray, path: str | os.PathLike,
                reference: sitk.Image | Geometry, compression_level: int = 1) -> Path:
    """Write a label map as uint8 with exactly ``reference``'s geometry, atomically.

    ``label`` is a ``SimpleITK.Image`` (its geometry must equal the reference's, else ``GeometryError``)
    or a ``(z, y, x)`` numpy array (it takes the reference's geometry). Values must be in the label table.
    """
    ref = reference if isinstance(reference, Geometry) else Geometry.from_image(reference)
    if isinstance(label, np.ndarray):
        label = ref.image_from_array(label)
    _check_label(label, ref, path)
    if label.GetPixelID() != sitk.sitkUInt8:
        label = sitk.Cast(label, sitk.sitkUInt8)
    return write_volume(label, path, compression_level)


def _write_mhd(image: sitk.Image, path: Path) -> Path:
    """MetaImage header + data file: ITK names the data file after the header, so write both under their
    final names in a temporary folder beside ``path``, then move the data file, then the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        header = Path(tmp) / path.name
        try:
            sitk.WriteImage(image, str(header), False)
        except RuntimeError as e:
            raise ReadError(f"cannot write ({_itk_reason(e)})", path) from e
        for data in Path(tmp).iterdir():
            if data != header:
                os.replace(data, path.parent / data.name)
        os.replace(header, path)
    return path


def _check_label(label: sitk.Image, reference: sitk.Image | Geometry | None, path) -> None:
    if reference is not None:
        diffs = geometry_differences(label, reference)
        if diffs:
            raise GeometryError("label geometry differs from its image: " + "; ".join(diffs), path)
    check_label_values(sitk.GetArrayViewFromImage(label), os.fspath(path) if path is not None else None)


def _itk_reason(error: RuntimeError) -> str:
    """The last meaningful line of an ITK exception, without the C++ file/line noise."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    for line in reversed(lines):
        if not line.startswith(("sitk::ERROR", "itk::ERROR")) or ":" in line:
            return line.split("): ", 1)[-1][:200]
    return "unknown reason"
