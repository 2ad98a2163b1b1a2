"""DICOM series: write with write_dicom_series, read back with read_volume / list_series, compare with
pydicom-computed positions and SimpleITK's own series reader; real-world quirks; bad input."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from deepliver.errors import GeometryError, ReadError
from deepliver.imaging import list_series, read_volume, write_dicom_series
from deepliver.imaging.dicom import DEFAULT_PATIENT_KEY

DIRECTION_NAMES = ["identity", "flipped", "oblique"]


def _write(make_ct, folder, direction="identity", **kwargs):
    image = make_ct(direction)
    files = write_dicom_series(image, folder, uid_seed=kwargs.pop("uid_seed", 1), **kwargs)
    return image, files


def _assert_same_image(read, source):
    np.testing.assert_allclose(read.GetOrigin(), source.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(read.GetSpacing(), source.GetSpacing(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), source.GetDirection(), rtol=0, atol=1e-6)
    assert read.GetSize() == source.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(source))


def _rewrite(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


@pytest.mark.parametrize("direction", DIRECTION_NAMES)
def test_round_trip_keeps_geometry_and_voxels(tmp_path, make_ct, direction):
    image, _ = _write(make_ct, tmp_path / "s", direction)
    read = read_volume(tmp_path / "s")
    _assert_same_image(read, image)
    assert read.GetPixelID() == sitk.sitkInt16


@pytest.mark.parametrize("direction", DIRECTION_NAMES)
def test_positions_agree_with_pydicom(tmp_path, make_ct, direction):
    image, files = _write(make_ct, tmp_path / "s", direction)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3)
    origin, spacing = np.asarray(image.GetOrigin()), np.asarray(image.GetSpacing())
    read = read_volume(tmp_path / "s")
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        expected = origin + k * spacing[2] * matrix[:, 2]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
        np.testing.assert_allclose(read.TransformIndexToPhysicalPoint((0, 0, k)), expected, atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   np.concatenate([matrix[:, 0], matrix[:, 1]]), atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [spacing[1], spacing[0]], atol=1e-6)
        assert float(ds.SliceThickness) == pytest.approx(spacing[2])
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        stored = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(stored, sitk.GetArrayFromImage(image)[k])


@pytest.mark.parametrize("direction", ["flipped", "oblique"])
def test_matches_simpleitk_series_reader(tmp_path, make_ct, direction):
    _write(make_ct, tmp_path / "s", direction)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader_GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = reader.Execute()
    _assert_same_image(read_volume(tmp_path / "s"), reference)


def test_writer_is_reproducible_with_a_seed(tmp_path, make_ct):
    _, a = _write(make_ct, tmp_path / "a", uid_seed=7)
    _, b = _write(make_ct, tmp_path / "b", uid_seed=7)
    _, c = _write(make_ct, tmp_path / "c", uid_seed=8)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert pydicom.dcmread(a[0]).SeriesInstanceUID != pydicom.dcmread(c[0]).SeriesInstanceUID
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in a}
    assert len(uids) == len(a)


def test_values_beyond_int16_use_an_intercept(tmp_path, make_ct):
    image = make_ct()
    array = sitk.GetArrayFromImage(image).astype(np.int32) * 10  # up to 30710: still int16...
    array[0, 0, :3] = [-30000, 35000, 34999]  # ...but these need uint16 with an intercept
    wide = sitk.GetImageFromArray(array)
    wide.CopyInformation(image)
    write_dicom_series(wide, tmp_path / "s", uid_seed=1)
    ds = pydicom.dcmread(next((tmp_path / "s").iterdir()))
    assert ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) == -30000
    read = read_volume(tmp_path / "s")
    assert read.GetPixelID() == sitk.sitkFloat32  # the values do not fit int16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), array)


def test_per_slice_rescale_uint16_and_bits_stored(tmp_path, make_ct):
    """Scanner style: unsigned 13-bit stored values, a different intercept on each slice, junk above
    BitsStored (which readers must ignore)."""
    image, files = _write(make_ct, tmp_path, "flipped")
    hu = sitk.GetArrayFromImage(image)
    for k, path in enumerate(files):
        def scanner_style(ds, k=k):
            intercept = -1024 - k
            stored = (hu[k].astype(np.int32) - intercept).astype(np.uint16)
            assert stored.max() < 2 ** 13
            ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 13, 12
            ds.RescaleIntercept = intercept
            ds.PixelData = (stored | np.uint16(0xA000)).tobytes()  # bits 13 and 15 set: junk
        _rewrite(path, scanner_style)
    read = read_volume(tmp_path)
    assert read.GetPixelID() == sitk.sitkInt16
    _assert_same_image(read, image)


def test_left_handed_direction_is_refused(tmp_path, make_ct):
    with pytest.raises(GeometryError, match="left-handed"):
        write_dicom_series(make_ct(np.diag([1.0, 1.0, -1.0])), tmp_path / "s")


def test_shuffled_names_no_extension_dicomdir_and_other_files(tmp_path, make_ct):
    image, files = _write(make_ct, tmp_path / "orig", "oblique")
    target = tmp_path / "study" / "deep" / "SER1"
    target.mkdir(parents=True)
    names = [f"{random.Random(3).randrange(10**8):08d}{i:03d}" for i in range(len(files))]
    random.Random(5).shuffle(names)  # file name order is unrelated to slice order
    for path, name in zip(files, names):
        shutil.copy(path, target / name)
    _, other = _write(make_ct, tmp_path / "other", uid_seed=99)
    shutil.copy(other[0], tmp_path / "study" / "DICOMDIR")  # a DICOMDIR is never read as an image
    (tmp_path / "study" / "README.txt").write_text("not dicom\n")
    _assert_same_image(read_volume(tmp_path / "study"), image)


def _blank_uids(ds):
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, name, "")
    ds.file_meta.MediaStorageSOPInstanceUID = ""


def test_anonymized_series_without_uids(tmp_path, make_ct):
    image, files = _write(make_ct, tmp_path / "s", "flipped", description="first")
    other, other_files = _write(make_ct, tmp_path / "t", "identity", description="second", uid_seed=2)
    (tmp_path / "both").mkdir()
    for path in files + other_files:
        _rewrite(path, _blank_uids)
        shutil.move(path, tmp_path / "both" / f"{path.parent.name}_{path.name}")
    infos = list_series(tmp_path / "both")
    assert sorted(i.description for i in infos) == ["first", "second"]
    assert all(i.series_uid == "" and i.series_id.startswith("anon-") for i in infos)
    assert [i.series_id for i in list_series(tmp_path / "both")] == [i.series_id for i in infos]  # stable
    first = next(i for i in infos if i.description == "first")
    _assert_same_image(read_volume(tmp_path / "both", series=first.series_id), image)
    second = next(i for i in infos if i.description == "second")
    _assert_same_image(read_volume(tmp_path / "both", series=second.short_id), other)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless"])
def test_compressed_series_read_identically(tmp_path, make_ct, syntax):
    if syntax == "JPEGLSLossless":
        pytest.importorskip("jpeg_ls")
    image, files = _write(make_ct, tmp_path / "s", "oblique")
    for path in files:
        _rewrite(path, lambda ds: ds.compress(getattr(pydicom.uid, syntax)))
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    _assert_same_image(read_volume(tmp_path / "s"), image)


def test_list_series_summaries(tmp_path, make_ct):
    write_dicom_series(make_ct("oblique"), tmp_path / "a", uid_seed=1, description="venous")
    write_dicom_series(make_ct(size=(32, 24, 5), spacing=(0.9, 0.9, 3.0)), tmp_path / "b", uid_seed=2,
                       patient_id="X2", patient_name="DOE^JANE", birth_date="19800202", description="arterial")
    infos = {i.description: i for i in list_series(tmp_path)}
    assert set(infos) == {"venous", "arterial"}
    venous, arterial = infos["venous"], infos["arterial"]
    assert (venous.size, venous.num_slices, venous.modality) == ((48, 40, 12), 12, "CT")
    np.testing.assert_allclose(arterial.spacing, (0.9, 0.9, 3.0), atol=1e-6)
    expected = hmac.new(DEFAULT_PATIENT_KEY, b"X2|DOE^JANE|19800202", hashlib.sha256).hexdigest()[:16]
    assert arterial.patient_key == expected
    assert list_series(tmp_path, key=b"secret")[0].patient_key not in (venous.patient_key, arterial.patient_key)
    # files in slice order: positions increase along the normal
    normal = np.asarray(make_ct("oblique").GetDirection()).reshape(3, 3)[:, 2]
    distances = [np.dot([float(v) for v in pydicom.dcmread(f).ImagePositionPatient], normal) for f in venous.files]
    assert np.all(np.diff(distances) > 0)
    text = json.dumps([i.to_dict() for i in infos.values()])
    for identifier in ("DOE", "X2\"", "19800202", "PHANTOM", "PH0001", "19700101"):
        assert identifier not in text


# --- bad input -------------------------------------------------------------------------------------------
def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadError, match="empty") as err:
        read_volume(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello")
    (tmp_path / "text" / "b.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(ReadError, match=r"no DICOM files among its 2 file"):
        list_series(tmp_path / "text")


def test_several_series_ask_for_one(tmp_path, make_ct):
    write_dicom_series(make_ct(), tmp_path, uid_seed=1, description="venous", file_names="a{index}.dcm")
    write_dicom_series(make_ct(), tmp_path, uid_seed=2, description="arterial", file_names="b{index}.dcm")
    ids = {i.description: i.short_id for i in list_series(tmp_path)}
    with pytest.raises(ReadError) as err:
        read_volume(tmp_path)
    message = str(err.value)
    assert "2 DICOM series" in message and "--series" in message and "\n" not in message
    assert ids["venous"] in message and ids["arterial"] in message and "'venous'" in message
    assert read_volume(tmp_path, series=ids["arterial"]).GetSize() == (48, 40, 12)
    with pytest.raises(ReadError, match="no DICOM series 'nope'"):
        read_volume(tmp_path, series="nope")


def test_missing_slice_names_the_gap(tmp_path, make_ct):
    _, files = _write(make_ct, tmp_path, "flipped")
    files[5].unlink()
    normal = np.asarray(make_ct("flipped").GetDirection()).reshape(3, 3)[:, 2]
    missing_at = np.dot(np.asarray(make_ct().GetOrigin()) + 5 * 2.5 * normal, normal)
    with pytest.raises(GeometryError) as err:
        read_volume(tmp_path)
    message = str(err.value)
    assert "missing slice" in message and "about 1 slice(s) missing" in message
    assert f"{missing_at:.4g}" in message and files[4].name in message


def test_mixed_orientation(tmp_path, make_ct):
    _, files = _write(make_ct, tmp_path)
    rotation = np.asarray(make_ct("oblique").GetDirection()).reshape(3, 3)
    tilted = np.concatenate([rotation[:, 0], rotation[:, 1]])
    _rewrite(files[3], lambda ds: setattr(ds, "ImageOrientationPatient", [f"{v:.8f}" for v in tilted]))
    with pytest.raises(GeometryError, match=f"mixed orientations.*{files[3].name}"):
        read_volume(tmp_path)


def test_gantry_tilt_reports_the_angle(tmp_path, make_ct):
    _, files = _write(make_ct, tmp_path)
    for k, path in enumerate(files):  # shift each slice along y by tan(15 deg) * its z offset
        def shift(ds, k=k):
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + np.tan(np.radians(15)) * 2.5 * k, z]
        _rewrite(path, shift)
    with pytest.raises(GeometryError, match=r"gantry tilt of 15\.00 degrees"):
        read_volume(tmp_path)


def test_single_slice_is_2d(tmp_path, make_ct):
    _, files = _write(make_ct, tmp_path)
    for path in files[1:]:
        path.unlink()
    with pytest.raises(ReadError, match="2D image"):
        read_volume(tmp_path)


def test_duplicate_positions_are_4d(tmp_path, make_ct):
    _write(make_ct, tmp_path, file_names="t0_{index}.dcm")
    _write(make_ct, tmp_path, file_names="t1_{index}.dcm")  # same UIDs: one series, two time points
    with pytest.raises(GeometryError, match=r"24 files but only 12 distinct.*4D"):
        read_volume(tmp_path)


def test_truncated_and_corrupted_files_are_named(tmp_path, make_ct):
    _, files = _write(make_ct, tmp_path)
    data = files[4].read_bytes()
    files[4].write_bytes(data[:-1000])  # truncated inside the pixel data
    with pytest.raises(ReadError, match=rf"{files[4].name}: truncated DICOM file"):
        read_volume(tmp_path)
    files[4].write_bytes(data[:400])  # truncated inside the header: listing goes on, reading refuses
    (info,) = infos = list_series(tmp_path)
    assert info.num_slices == 11 and [(s.path, s.kind) for s in infos.skipped] == [(files[4], "unreadable")]
    with pytest.raises(ReadError, match=rf"{files[4].name}: corrupted or truncated DICOM file"):
        read_volume(tmp_path)
    (tmp_path / "other").mkdir()  # series unknown, not among this series' folders: not blamed
    files[4].rename(tmp_path / "other" / files[4].name)
    with pytest.raises(GeometryError, match=rf"missing slice.*{files[3].name}, {files[5].name}"):
        read_volume(tmp_path)  # ...and the gap it leaves is still found
    (tmp_path / "other" / files[4].name).rename(files[4])
    files[4].write_bytes(data[:132] + b"\xff" * 500)  # garbage after the preamble
    with pytest.raises(ReadError, match=rf"{files[4].name}: corrupted DICOM file"):
        read_volume(tmp_path)


def test_damaged_file_of_another_series_does_not_block_reading(tmp_path, make_ct):
    image, _ = _write(make_ct, tmp_path, file_names="a{index}.dcm", uid_seed=1)
    _, other = _write(make_ct, tmp_path, file_names="b{index}.dcm", uid_seed=2)
    data = other[3].read_bytes()
    series_uid = pydicom.dcmread(other[3]).SeriesInstanceUID
    cut = data.index(series_uid.encode()) + len(series_uid) + 40  # keeps its SeriesInstanceUID, loses the rest
    other[3].write_bytes(data[:cut])
    infos = list_series(tmp_path)
    assert len(infos) == 2 and [(s.path, s.series_uid) for s in infos.skipped] == [(other[3], series_uid)]
    wanted = next(i for i in infos if i.series_uid != series_uid)
    _assert_same_image(read_volume(tmp_path, series=wanted.short_id), image)
    with pytest.raises(ReadError, match=rf"{other[3].name}: corrupted or truncated DICOM file"):
        read_volume(tmp_path, series=series_uid)


# --- the command line --------------------------------------------------------------------------------------
def test_cli_series_lists_and_checks(tmp_path, make_ct, cli):
    write_dicom_series(make_ct("oblique"), tmp_path / "ok", uid_seed=1, description="venous phase")
    result = cli("series", tmp_path / "ok", "--json", "--check")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["size"] == [48, 40, 12] and rows[0]["description"] == "venous phase"


@pytest.mark.parametrize("case", ["empty", "gap", "corrupted"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, make_ct, cli, case):
    folder = tmp_path / case
    folder.mkdir()
    if case != "empty":
        files = write_dicom_series(make_ct(), folder, uid_seed=1)
        if case == "gap":
            files[6].unlink()
        else:
            files[2].write_bytes(files[2].read_bytes()[:300])
    result = cli("series", folder, "--check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and str(folder) in lines[0]
    assert {"empty": "is empty", "gap": "missing slice", "corrupted": "IM0002.dcm: corrupted"}[case] in lines[0]
    assert result.stdout == ""


def test_files_without_preamble_implicit_vr(tmp_path, make_ct):
    image, files = _write(make_ct, tmp_path, "oblique")
    for path in files:  # old style: no 128-byte preamble, no file meta, implicit VR little endian
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    _assert_same_image(read_volume(tmp_path), image)


@pytest.mark.parametrize("implicit", [False, True])
def test_header_walker_skips_nested_undefined_length_sequences(tmp_path, make_ct, implicit):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from deepliver.imaging.dicom_parse import parse_header

    _, files = _write(make_ct, tmp_path)
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "123", "x" * 63  # an odd length, padded
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds = pydicom.dcmread(files[0])
    ds.SourceImageSequence = Sequence([item, item])
    for element in (ds["SourceImageSequence"], item["PurposeOfReferenceCodeSequence"]):
        element.is_undefined_length = True
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(files[0], implicit_vr=implicit, little_endian=True)
    buf = files[0].read_bytes()
    wanted = frozenset({0x00200032, 0x00280010})
    parsed = parse_header(buf, wanted, complete=True)
    assert parsed is not None and parsed.implicit_vr == implicit
    reference = pydicom.dcmread(files[0])
    assert [float(v) for v in parsed.values[0x00200032].decode().split("\\")] == \
        [float(v) for v in reference.ImagePositionPatient]
    assert int.from_bytes(parsed.values[0x00280010], "little") == reference.Rows
    assert buf[parsed.pixel_offset:parsed.pixel_offset + 4] == b"\xe0\x7f\x10\x00"  # (7FE0,0010)
    assert parse_header(buf[:parsed.pixel_offset - 1], wanted, complete=False) is None  # needs more bytes
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path))[0], reference.pixel_array)
