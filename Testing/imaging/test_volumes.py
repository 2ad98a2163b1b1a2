"""read_volume / write_volume / read_label / write_label on NIfTI, NRRD and MetaImage; bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.errors import GeometryError, LabelError, ReadError
from deepliver.imaging import read_label, read_volume, same_geometry, write_label, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd"]


def _label_for(image: sitk.Image) -> np.ndarray:
    """A (z, y, x) label: liver box with a tumor inside, on the image's grid."""
    z, y, x = sitk.GetArrayViewFromImage(image).shape
    label = np.zeros((z, y, x), dtype=np.uint8)
    label[2:z - 2, 5:y - 5, 6:x - 6] = 1
    label[4:6, 10:14, 12:18] = 2
    return label


@pytest.mark.parametrize("ext", FORMATS)
def test_volume_round_trip(tmp_path, make_ct, ext):
    image = make_ct("oblique")
    path = write_volume(image, tmp_path / f"ct{ext}")
    read = read_volume(path)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("ext", [".nii.gz", ".seg.nrrd", ".mha"])
def test_label_round_trip(tmp_path, make_ct, ext):
    image = make_ct("flipped")
    label = _label_for(image)
    write_label(label, tmp_path / f"label{ext}", image)
    read = read_label(tmp_path / f"label{ext}", reference=image)
    assert read.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), label)
    assert same_geometry(read, image, tol=1e-4)


def test_write_label_refuses_other_geometry(tmp_path, make_ct):
    image = make_ct()
    label = sitk.GetImageFromArray(_label_for(image))
    label.CopyInformation(image)
    label.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match=r"label geometry differs from its image: origin") as err:
        write_label(label, tmp_path / "label.nii.gz", image)
    assert "label.nii.gz" in str(err.value)
    assert not (tmp_path / "label.nii.gz").exists()


def test_write_label_refuses_values_outside_the_table(tmp_path, make_ct):
    image = make_ct()
    label = _label_for(image)
    label[0, 0, 0] = 7
    with pytest.raises(LabelError, match="7"):
        write_label(label, tmp_path / "label.nii.gz", image)
    assert not list(tmp_path.iterdir())


def test_read_label_checks_reference_geometry(tmp_path, make_ct):
    image = make_ct()
    write_label(_label_for(image), tmp_path / "label.nii.gz", image)
    moved = make_ct(spacing=(0.7, 0.8, 3.0))
    with pytest.raises(GeometryError, match="spacing"):
        read_label(tmp_path / "label.nii.gz", reference=moved)


# --- bad input -------------------------------------------------------------------------------------------
def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_files(tmp_path, make_ct, ext):
    path = write_volume(make_ct(), tmp_path / f"ct{ext}")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.9)])
    with pytest.raises(ReadError) as err:
        read_volume(path)
    message = _one_line(err)
    assert message.startswith(str(path)) and "truncated" in message


def test_multi_member_gzip_still_reads(tmp_path, make_ct):
    image = make_ct()
    path = write_volume(image, tmp_path / "ct.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(path)), sitk.GetArrayFromImage(image))


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "ct.png").write_bytes(b"\x89PNG")
    with pytest.raises(ReadError, match=r"ct\.png: unknown file extension"):
        read_volume(tmp_path / "ct.png")
    with pytest.raises(ReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    with pytest.raises(ReadError, match="unknown output extension"):
        write_volume(sitk.Image(4, 4, 4, sitk.sitkInt16), tmp_path / "out.vtk")


def test_garbage_nifti(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(ReadError) as err:
        read_volume(path)
    assert str(path) in _one_line(err)


def test_nan_voxels(tmp_path, make_ct):
    array = sitk.GetArrayFromImage(make_ct()).astype(np.float32)
    array[3, 4, 5] = np.nan
    array[1, 2, 3] = np.inf
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(ReadError, match="2 voxel.s. are NaN or infinite"):
        read_volume(path)


def test_4d_and_2d_images(tmp_path):
    four = sitk.JoinSeries([sitk.Image(6, 5, 4, sitk.sitkInt16)] * 3)
    sitk.WriteImage(four, str(tmp_path / "t.nii.gz"))
    with pytest.raises(ReadError, match="4D image"):
        read_volume(tmp_path / "t.nii.gz")
    sitk.WriteImage(sitk.Image(6, 5, sitk.sitkInt16), str(tmp_path / "flat.nrrd"))
    with pytest.raises(ReadError, match="2D image"):
        read_volume(tmp_path / "flat.nrrd")
    sitk.WriteImage(sitk.Image([6, 5, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.mha"))
    with pytest.raises(ReadError, match="3 components"):
        read_volume(tmp_path / "rgb.mha")
