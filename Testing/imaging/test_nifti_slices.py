"""``read_nifti_slices`` gives SimpleITK's voxels for a run of slices, declines what it does not handle, and
names the file when it ends early; ``deflate`` gives streams that zlib inflates."""

from __future__ import annotations

import gzip
import zlib

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.dataset.nifti import write_nifti_gz
from deepliver.errors import ReadError
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.nifti_slices import deflate, read_nifti_slices


def _image(dtype, shape=(9, 7, 5), seed=0):
    """A ``(z, y, x)`` volume with every voxel distinct enough to catch an axis or offset mix-up."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    array = rng.integers(max(info.min, -3000), min(info.max, 3000) + 1, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))     # oblique and flipped in z
    return image


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.uint16, np.int8])
@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii"])
def test_slices_equal_simpleitks_voxels(tmp_path, dtype, name):
    image = _image(dtype)
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    for lo, hi in ((0, 9), (3, 4), (2, 8), (8, 9)):
        got = read_nifti_slices(path, lo, hi)
        assert got.dtype == reference.dtype and got.flags.writeable
        np.testing.assert_array_equal(got, reference[lo:hi])


def test_our_exporters_files_and_big_endian_files(tmp_path):
    image = _image(np.int16)
    ours = tmp_path / "ours.nii.gz"
    write_nifti_gz(sitk.GetArrayFromImage(image), Geometry.from_image(image), ours)
    np.testing.assert_array_equal(read_nifti_slices(ours, 1, 6), sitk.GetArrayFromImage(sitk.ReadImage(str(ours)))[1:6])
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)           # nibabel: (x, y, z)
    big = nibabel.Nifti1Image(data, np.eye(4), nibabel.Nifti1Header(endianness=">"))
    big.set_data_dtype(np.int16)
    path = tmp_path / "big.nii.gz"
    nibabel.save(big, str(path))
    assert nibabel.load(str(path)).header.endianness == ">"
    got = read_nifti_slices(path, 0, 9)
    assert got.dtype == np.dtype("=i2")
    np.testing.assert_array_equal(got, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def test_scaled_float_and_4d_files_are_left_to_simpleitk(tmp_path):
    data = np.arange(5 * 7 * 9, dtype=np.int16).reshape(5, 7, 9)
    scaled = nibabel.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(2.0, -1024.0)
    cases = {"scaled.nii.gz": scaled, "float.nii.gz": nibabel.Nifti1Image(data.astype(np.float32), np.eye(4)),
             "4d.nii.gz": nibabel.Nifti1Image(data[..., None].repeat(2, 3), np.eye(4))}
    for name, img in cases.items():
        nibabel.save(img, str(tmp_path / name))
        assert read_nifti_slices(tmp_path / name, 0, 1) is None, name


def test_a_truncated_file_names_the_file_and_the_slice(tmp_path):
    image = _image(np.int16)
    path = tmp_path / "cut.nii.gz"
    sitk.WriteImage(image, str(path))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:len(raw) - 7 * 5 * 2 * 3 - 10]))     # 3 slices and a bit missing
    assert read_nifti_slices(path, 0, 5).shape == (5, 7, 5)                   # what is there reads
    with pytest.raises(ReadError) as e:
        read_nifti_slices(path, 2, 9)
    assert str(e.value) == f"{path}: the file ends inside slice 5 of 9; copy or write it again"
    with pytest.raises(ReadError, match="slices 7 to 9 asked for, the image has 9"):
        read_nifti_slices(path, 7, 10)


def test_deflate_gives_zlib_streams():
    data = np.random.default_rng(1).integers(0, 40, 200_000).astype(np.uint8).tobytes()
    for level in (0, 1, 6, 9):
        assert zlib.decompress(deflate(data, level)) == data
    assert deflate(data) == deflate(data)                                     # deterministic


def test_nifti2_files_read_as_nibabel_reads_them(tmp_path):
    data = np.random.default_rng(2).integers(-1000, 1000, (5, 7, 9)).astype(np.int16)    # nibabel (x, y, z)
    nibabel.save(nibabel.Nifti2Image(data, np.eye(4)), str(tmp_path / "two.nii.gz"))
    expected = np.asanyarray(nibabel.load(str(tmp_path / "two.nii.gz")).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(read_nifti_slices(tmp_path / "two.nii.gz", 2, 9), expected[2:9])


def test_read_volume_gives_simpleitks_image_for_every_kind_of_nifti(tmp_path):
    """read_volume inflates plain integer NIfTI itself (geometry from ITK's header reading) and leaves
    scaled and float files to ITK: either way the image is the one SimpleITK reads, voxels and geometry."""
    from deepliver.imaging.volumes import read_volume

    files = []
    for dtype in (np.int16, np.uint8, np.int32, np.uint16):
        for name in ("a.nii.gz", "a.nii"):
            path = tmp_path / f"{np.dtype(dtype).name}_{name}"
            sitk.WriteImage(_image(dtype), str(path))
            files.append(path)
    ours = tmp_path / "ours.nii.gz"
    image = _image(np.int16)
    write_nifti_gz(sitk.GetArrayFromImage(image), Geometry.from_image(image), ours)
    data = np.arange(5 * 7 * 9, dtype=np.int16).reshape(5, 7, 9)
    affine = np.array([[0, -0.8, 0, 3], [0.7, 0, 0, -2], [0, 0, 2.5, 7], [0, 0, 0, 1]])   # permuted axes
    big = nibabel.Nifti1Image(data, affine, nibabel.Nifti1Header(endianness=">"))
    scaled = nibabel.Nifti1Image(data, affine)
    scaled.header.set_slope_inter(2.0, -1024.0)
    for name, img in (("big.nii.gz", big), ("scaled.nii.gz", scaled),
                      ("float.nii", nibabel.Nifti1Image(data.astype(np.float32), affine))):
        nibabel.save(img, str(tmp_path / name))
        files.append(tmp_path / name)
    for path in files + [ours]:
        got, expected = read_volume(path), sitk.ReadImage(str(path))
        assert got.GetPixelID() == expected.GetPixelID(), path.name
        assert (got.GetOrigin(), got.GetSpacing(), got.GetDirection()) == \
            (expected.GetOrigin(), expected.GetSpacing(), expected.GetDirection()), path.name
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(expected))
