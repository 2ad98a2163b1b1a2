"""DICOM SEG output: a label map written as a DICOM Segmentation object that references its CT series.

Segments and their codes come from ``deepliver.labels`` (SNOMED CT category/type/region). The label must
lie exactly on the source series' grid (same rows, columns, orientation and slice positions), which is the
case for the output of ``deepliver segment`` on a DICOM input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from deepliver import __version__
from deepliver.errors import GeometryError, ReadError
from deepliver.imaging.geometry import Geometry
from deepliver.labels import LABELS, Label

__all__ = ["write_dicom_seg"]


def _coded(code):
    from highdicom.sr.coding import CodedConcept
    return CodedConcept(code.value, code.scheme, code.meaning)


def _segment_description(label: Label, number: int, algorithm):
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription
    return SegmentDescription(
        segment_number=number, segment_label=label.name, segmented_property_category=_coded(label.category),
        segmented_property_type=_coded(label.type), algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[_coded(label.region)] if label.region else None)


def _frames_in_label_order(datasets, geometry: Geometry, source: str) -> list[int]:
    """For each label slice z, the index of the source dataset at that position (raises if any is off-grid)."""
    rows, cols = geometry.size[1], geometry.size[0]
    by_z: dict[int, int] = {}
    for i, ds in enumerate(datasets):
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise GeometryError(f"source slice {ds.Rows}x{ds.Columns} differs from the label's {rows}x{cols}", source)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        direction = geometry.direction_matrix
        if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-4):
            raise GeometryError("the label's orientation differs from the source series'", source)
        index = geometry.physical_to_index(np.asarray(ds.ImagePositionPatient, dtype=float))
        z = int(round(index[2]))
        if not np.allclose(index, [0, 0, z], atol=1e-3) or not 0 <= z < geometry.size[2]:
            raise GeometryError(f"source slice at {list(ds.ImagePositionPatient)} mm is not on the label grid", source)
        by_z[z] = i
    missing = [z for z in range(geometry.size[2]) if z not in by_z]
    if missing:
        raise GeometryError(f"no source slice for label slice(s) {missing[:5]}", source)
    return [by_z[z] for z in range(geometry.size[2])]


def write_dicom_seg(label: sitk.Image, source_files: Sequence[str | os.PathLike], out: str | os.PathLike,
                    series_description: str = "deepliver liver and tumor",
                    labels: Optional[Sequence[Label]] = None) -> Path:
    """Write ``label`` (uint8 values from the label table) as a DICOM SEG file ``out`` referencing the CT
    slices ``source_files``. Empty segments are still described; empty frames are omitted. Returns ``out``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    from deepliver.atomic import atomic_path

    source = str(Path(source_files[0]).parent) if source_files else "source"
    try:
        datasets = [pydicom.dcmread(str(f)) for f in source_files]
    except Exception as e:  # pydicom raises several types for broken files
        raise ReadError(f"cannot read the source DICOM series for SEG output ({e})", source) from e
    geometry = Geometry.from_image(label)
    order = _frames_in_label_order(datasets, geometry, source)
    array = sitk.GetArrayFromImage(label)
    wanted = [l for l in (labels or LABELS) if l.value != 0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="deepliver", version=__version__,
        family=hd.sr.coding.CodedConcept("123109", "DCM", "Artificial Intelligence"))
    seg_array = np.zeros(array.shape, dtype=np.uint8)
    for number, lab in enumerate(wanted, 1):
        seg_array[array == lab.value] = number
    seg = hd.seg.Segmentation(
        source_images=[datasets[i] for i in order], pixel_array=seg_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(l, n, algorithm) for n, l in enumerate(wanted, 1)],
        series_instance_uid=generate_uid(), series_number=900, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="SlicerDeepLiver", manufacturer_model_name="deepliver",
        software_versions=__version__, device_serial_number="0", series_description=series_description)
    out = Path(out)
    with atomic_path(out) as tmp:
        seg.save_as(str(tmp))
    return out
