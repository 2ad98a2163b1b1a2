"""Real scanner files, as shipped inside installed packages, read by deepliver and checked against
independent readers: SimpleITK's ``ImageSeriesReader`` (GDCM) for geometry and voxels, pydicom for header
values, pixel values and the series a folder holds.

Provenance (see pydicom's ``data/test_files/README.txt`` and ``dicomdirtests/README.txt``):
- ``dicomdirtests/``: studies from pcir.org, downsized by pydicom's authors to 16x16 pixels with some images
  removed; patient names replaced. GE LightSpeed Plus CT (77654033/CT2: 4 axial slices, the first 202 mm
  away from the 3 others, which are 1.25 mm apart), GE LightSpeed Ultra CT (98892001/CT5N: 5 axial slices
  2.5 mm apart; CT2N: 2 scouts, one sagittal, one coronal, in one series), Philips Eclipse 1.5T MR
  (98892003: localizers and a radial projection series), Agfa CR radiographs, and DICOMDIR variants
  (several not named DICOMDIR: DICOMDIR-bigEnd, -implicit, -reordered, -nooffset, -nopatient, -empty.dcm).
- single files: ``CT_small.dcm`` (GE CT, from NEMA WG04 CT1_UNC, downsized), ``MR_small*.dcm`` (Toshiba MR
  from NEMA WG04 MR1_UNC, downsized, re-encoded in many transfer syntaxes), ``693_J2KI.dcm`` and
  ``J2K_pixelrep_mismatch.dcm`` (CT, JPEG 2000), ``JPGExtended.dcm`` / ``JPEGLSNearLossless_*.dcm``
  (secondary captures), ``MR_truncated.dcm`` (MR_small with its pixel data cut short).
- nibabel's ``nicom/tests/data``: Siemens MR (``siemens_dwi_*.dcm.gz`` DWI mosaics; ``0.dcm`` a 256x256
  DWI mosaic and ``1.dcm`` nibabel's copy of it with 4 bytes changed: ImagePositionPatient z + 3 mm,
  InstanceNumber and the last digit of the SOP Instance UID; ``decimal_rescale.dcm`` without SOP Class UID in
  its dataset; ``slicethickness_empty_string.dcm`` JPEG 2000), Philips ``philips_mprage.dcm.gz`` (enhanced
  multi-frame MR, 176 frames).
Files are copied into temporary folders (the package data is never touched); a test skips, saying which
file, when its package ships without it.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import UID

from deepliver.errors import GeometryError, ReadError
from deepliver.imaging import list_series, read_volume
from deepliver.imaging.dicom_headers import DICOMDIR, UNREADABLE, SliceHeader, scan_folder
from deepliver.imaging.dicom_pixels import read_pixels

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
DIRTESTS = PYDICOM_DATA / "dicomdirtests"
_NIBABEL = importlib.util.find_spec("nibabel")
NIBABEL_DATA = Path(_NIBABEL.origin).parent / "nicom" / "tests" / "data" if _NIBABEL else Path("/nonexistent/nibabel")
CT2 = "77654033/CT2"


def _real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test file {path} is not shipped with the installed package")
    return path


def _copy(sources, folder: Path) -> list[Path]:
    """Copy real files into ``folder`` unchanged (``.gz`` ones decompressed); return the copies."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in map(_real, sources):
        target = folder / source.name.removesuffix(".gz")
        target.write_bytes(gzip.open(source).read() if source.suffix == ".gz" else source.read_bytes())
        copies.append(target)
    return copies


def _dcm(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _simpleitk(folder: Path, series_uid: str = "") -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return reader.Execute()


def _assert_same_as_simpleitk(ours: sitk.Image, reference: sitk.Image) -> None:
    assert ours.GetSize() == reference.GetSize()
    np.testing.assert_allclose(ours.GetOrigin(), reference.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), reference.GetSpacing(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), reference.GetDirection(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's stored values times RescaleSlope plus RescaleIntercept (float64)."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "excess padding" on MR_small_padded.dcm
        return ds.pixel_array.astype(np.float64) * slope + intercept


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    return np.cross(iop[:3], iop[3:])


# --- series that read: geometry and voxels equal to SimpleITK's ------------------------------------------
SERIES = {
    # name: (files, what they are)
    "ge-lightspeed-plus-ct": ([f"{CT2}/17136", f"{CT2}/17166", f"{CT2}/17196"], "the last 3 slices of GE CT2"),
    "ge-lightspeed-ultra-ct": ([f"98892001/CT5N/{n}" for n in ("2062", "2392", "2693", "3023", "3353")],
                               "GE CT5N, 5 slices named in descending z"),
}


@pytest.mark.parametrize("name", SERIES)
def test_real_ct_series_match_simpleitk_and_pydicom_hu(tmp_path, name):
    """Real GE CT series (files without extension, CT rescale 1/-1024): same origin, spacing, direction and
    voxels as SimpleITK's series reader; voxels equal pydicom's pixel_array * slope + intercept in z order."""
    files = _copy([DIRTESTS / f for f in SERIES[name][0]], tmp_path / name)
    ours, reference = read_volume(tmp_path / name), _simpleitk(tmp_path / name)
    _assert_same_as_simpleitk(ours, reference)
    datasets = sorted((_dcm(f) for f in files), key=lambda ds: float(np.dot(ds.ImagePositionPatient, _normal(ds))))
    assert {(float(ds.RescaleSlope), float(ds.RescaleIntercept)) for ds in datasets} == {(1.0, -1024.0)}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), np.stack([_hu(ds) for ds in datasets]))
    assert ours.GetPixelID() == sitk.sitkInt16  # integer rescale: HU kept exactly in int16


def test_siemens_oblique_pair_matches_simpleitk(tmp_path):
    """nibabel's Siemens DWI mosaic 0.dcm and its edited copy 1.dcm (z + 3 mm) form a 2-slice series with an
    oblique (0.3 degree) orientation: same geometry as SimpleITK (z spacing within 1e-4 mm: ours is the step
    along the slice normal, SimpleITK's the distance between positions) and the same stored values."""
    _copy([NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm"], tmp_path / "siemens")
    _assert_same_as_simpleitk(read_volume(tmp_path / "siemens"), _simpleitk(tmp_path / "siemens"))


def test_multi_vendor_folder_reads_each_series_like_simpleitk(tmp_path):
    """One flat folder of real files from GE (two CT series), Siemens (MR pair), Philips (3 one-slice MR
    localizer series) and Agfa (a CR radiograph), plus a big-endian DICOMDIR under another name: every
    series is listed, the CR and the DICOMDIR are skipped with their reasons, and each 3D series read by
    its UID has exactly the geometry and voxels that SimpleITK's series reader gives for that UID."""
    folder = tmp_path / "archive"
    sources = [DIRTESTS / f for files, _ in SERIES.values() for f in files]
    sources += [NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm", DIRTESTS / "77654033/CR1/6154",
                DIRTESTS / "DICOMDIR-bigEnd", *sorted((DIRTESTS / "98892003/MR1").iterdir())]
    _copy(sources, folder)
    infos = list_series(folder)
    expected = Counter(_dcm(f).SeriesInstanceUID for f in folder.iterdir() if "ImagePositionPatient" in _dcm(f))
    assert {i.series_uid: i.num_slices for i in infos} == dict(expected) and len(infos) == 6
    assert {(s.path.name, s.kind) for s in infos.skipped} == {("6154", "not an image slice"),
                                                              ("DICOMDIR-bigEnd", DICOMDIR)}
    assert "Computed Radiography Image Storage" in next(s.reason for s in infos.skipped if s.path.name == "6154")
    volumes = [i for i in infos if i.num_slices > 1]
    assert len(volumes) == 3
    for info in volumes:
        _assert_same_as_simpleitk(read_volume(folder, series=info.series_uid), _simpleitk(folder, info.series_uid))
    single = next(i for i in infos if i.num_slices == 1)
    with pytest.raises(ReadError, match="2D image"):
        read_volume(folder, series=single.short_id)


# --- series that must not read --------------------------------------------------------------------------
def test_ge_ct_with_a_far_first_slice_is_a_missing_slice_error(tmp_path):
    """All 4 slices of GE CT2: the first is 202.5 mm below the others (1.25 mm apart): our error says where
    the gap is (positions from pydicom) and which files border it."""
    files = _copy(sorted((DIRTESTS / CT2).iterdir()), tmp_path / "ct2")
    z = sorted(float(_dcm(f).ImagePositionPatient[2]) for f in files)  # axial slices: the normal is +z
    step = float(np.median(np.diff(z)))
    with pytest.raises(GeometryError) as err:
        read_volume(tmp_path / "ct2")
    message = str(err.value)
    assert "missing slice" in message and "\n" not in message and str(tmp_path / "ct2") in message
    assert f"between {z[0]:.4g} and {z[1]:.4g} mm" in message and "(17106, 17136)" in message
    assert f"where the spacing is {step:.4g} mm" in message and f"at {z[0] + step:.4g}, " in message
    assert f"about {round((z[1] - z[0]) / step) - 1} slice(s) missing" in message


def test_ge_scouts_in_one_series_are_a_mixed_orientation_error(tmp_path):
    """GE CT2N: a sagittal and a coronal scout share one series: our error names the turned file and the
    angle between the two slice normals (computed here with pydicom)."""
    files = _copy(sorted((DIRTESTS / "98892001/CT2N").iterdir()), tmp_path / "scouts")
    angle = np.degrees(np.arccos(abs(_normal(_dcm(files[0])) @ _normal(_dcm(files[1])))))
    with pytest.raises(GeometryError, match=rf"mixed orientations in one series: {files[1].name} is turned "
                                            rf"{angle:.2f} degrees from {files[0].name}"):
        read_volume(tmp_path / "scouts")


def test_enhanced_multiframe_philips_is_refused_with_its_sop_class(tmp_path):
    """Philips enhanced MR (176 frames in one file, geometry in per-frame groups): not a slice series."""
    (path,) = _copy([NIBABEL_DATA / "philips_mprage.dcm.gz"], tmp_path / "philips")
    ds = _dcm(path)
    with pytest.raises(ReadError, match=rf"{UID(ds.SOPClassUID).name} with {int(ds.NumberOfFrames)} frames"):
        read_volume(tmp_path / "philips")


# --- listing a real archive tree --------------------------------------------------------------------------
def _pydicom_walk(root: Path):
    """Independent listing: every file pydicom parses; image slices (position, orientation, rows) grouped
    by SeriesInstanceUID; DICOMDIRs by their Media Storage SOP Class."""
    series, dicomdirs = Counter(), set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = _dcm(path)
        except Exception:
            continue  # README files and the like
        if ds.file_meta.get("MediaStorageSOPClassUID") == "1.2.840.10008.1.3.10":
            dicomdirs.add(path)
        elif all(k in ds for k in ("ImagePositionPatient", "ImageOrientationPatient", "Rows")):
            series[ds.SeriesInstanceUID] += 1
    return series, dicomdirs


def test_listing_the_dicomdirtests_tree(tmp_path, cli):
    """The whole dicomdirtests tree (real GE/Philips/Agfa files, a pydicom-made file-set, 8 DICOMDIRs, 6 of
    them not named DICOMDIR): the series and slice counts equal pydicom's walk and the CT/MR series of the
    tree's own DICOMDIR; every DICOMDIR variant is skipped as such; the CLI lists them and says so."""
    root = tmp_path / "tree"
    shutil.copytree(_real(DIRTESTS), root)
    series, dicomdirs = _pydicom_walk(root)
    infos = list_series(root)
    assert {i.series_uid: i.num_slices for i in infos} == dict(series)
    assert {s.path for s in infos.skipped if s.kind == DICOMDIR} == dicomdirs and len(dicomdirs) >= 7
    from pydicom.fileset import FileSet
    records = Counter(inst.SeriesInstanceUID for inst in FileSet(_dcm(root / "DICOMDIR"))
                      if inst.Modality in ("CT", "MR"))
    assert {uid: n for uid, n in series.items() if uid in records} == dict(records)
    result = cli("series", root, "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{len(infos.skipped)} file(s) skipped" in lines[0]
    assert f"{len(dicomdirs)} DICOMDIR" in lines[0]


def test_damaged_dicomdir_under_another_name_is_still_a_dicomdir(tmp_path):
    """A DICOMDIR cut short (the first 1,000 bytes of pydicom's implicit-VR DICOMDIR, saved as INDEX; made
    here, not a real file) beside real GE CT slices: skipped as a DICOMDIR, so the CT still reads."""
    _copy([DIRTESTS / f for f in SERIES["ge-lightspeed-plus-ct"][0]], tmp_path / "ct")
    (tmp_path / "ct" / "INDEX").write_bytes(_real(DIRTESTS / "DICOMDIR-implicit").read_bytes()[:1000])
    assert [(s.path.name, s.kind) for s in list_series(tmp_path / "ct").skipped] == [("INDEX", DICOMDIR)]
    _assert_same_as_simpleitk(read_volume(tmp_path / "ct"), _simpleitk(tmp_path / "ct"))


def test_listing_pydicoms_test_files_folder(tmp_path):
    """pydicom's ~80 top-level test files (images in many syntaxes, SR, RT plan/dose/struct, SEG, ECG,
    minimal objects, JSON, an ICC profile, a truncated RT plan): listing does not stop at any of them, its
    series and slice counts equal pydicom's walk, and the one file called unreadable is rtplan_truncated.dcm,
    which is a prefix of rtplan.dcm."""
    folder = tmp_path / "files"
    _copy(sorted(p for p in _real(PYDICOM_DATA).iterdir() if p.is_file()), folder)
    series, _ = _pydicom_walk(folder)
    infos = list_series(folder)
    assert {i.series_uid: i.num_slices for i in infos} == dict(series)
    assert [s.path.name for s in infos.skipped if s.kind == UNREADABLE] == ["rtplan_truncated.dcm"]
    assert (folder / "rtplan.dcm").read_bytes().startswith((folder / "rtplan_truncated.dcm").read_bytes())


def test_listing_goes_on_past_damaged_files_but_reading_their_series_fails(tmp_path):
    """pydicom's rtplan_truncated.dcm (an RT plan cut inside its header) and MR_truncated.dcm (a real MR
    slice with its pixel data cut short) beside real GE CT slices: the CT lists and reads like SimpleITK;
    the RT plan is listed as unreadable with the SeriesInstanceUID read before the cut (pydicom's value), so
    it does not block the CT in the same folder; decoding the MR fails naming it and the bytes present."""
    folder = tmp_path / "mixed"
    _copy([DIRTESTS / f for f in SERIES["ge-lightspeed-plus-ct"][0]], folder)
    plan, damaged = _copy([PYDICOM_DATA / "rtplan_truncated.dcm", PYDICOM_DATA / "MR_truncated.dcm"], folder)
    infos = list_series(folder)
    assert sorted(i.num_slices for i in infos) == [1, 3]
    assert [(s.path, s.kind, s.series_uid) for s in infos.skipped] == [(plan, UNREADABLE,
                                                                         _dcm(plan).SeriesInstanceUID)]
    ct = next(i for i in infos if i.num_slices == 3)
    _assert_same_as_simpleitk(read_volume(folder, series=ct.series_uid), _simpleitk(folder, ct.series_uid))
    (header,) = [h for h in scan_folder(folder).slices if h.path == damaged]
    ds = pydicom.dcmread(damaged, stop_before_pixels=True)
    have = damaged.stat().st_size - header.pixel_offset - 12  # explicit VR OW element: 12 header bytes
    with pytest.raises(ReadError, match=rf"MR_truncated.dcm: truncated DICOM file: pixel data has {have} of "
                                        rf"{ds.Rows * ds.Columns * 2} bytes"):
        read_pixels([header])


# --- single real files in many transfer syntaxes: our 2D error, our pixel path vs pydicom ----------------
SINGLE = {  # file: what it is
    "CT_small.dcm": "GE CT, explicit VR little endian (read straight from the file)",
    "MR_small_implicit.dcm": "Toshiba MR, implicit VR little endian",
    "MR_small_bigendian.dcm": "Toshiba MR, explicit VR big endian",
    "MR_small_expb.dcm": "Toshiba MR, explicit VR big endian (dcmconv)",
    "MR_small_padded.dcm": "Toshiba MR, pixel data with 128 bytes of excess padding",
    "MR_small_RLE.dcm": "Toshiba MR, RLE lossless",
    "MR_small_jpeg_ls_lossless.dcm": "Toshiba MR, JPEG-LS lossless",
    "MR_small_jp2klossless.dcm": "Toshiba MR, JPEG 2000 lossless",
    "693_J2KI.dcm": "CT, JPEG 2000 lossy, 14 of 16 bits stored, rescale -1024",
    "J2K_pixelrep_mismatch.dcm": "CT, JPEG 2000 with unsigned codestream but PixelRepresentation 1",
    "examples_overlay.dcm": "Siemens MR, 12 of 16 bits stored",
    "JPGExtended.dcm": "secondary capture, JPEG extended 12-bit (no patient position)",
    "JPEG-lossy.dcm": "secondary capture, JPEG extended 12-bit with an invalid SOS (pydicom's README)",
    "JPEG2000.dcm": "secondary capture, JPEG 2000 (no patient position)",
    "JPEGLSNearLossless_08.dcm": "secondary capture, JPEG-LS near-lossless 8-bit (no patient position)",
    "JPEGLSNearLossless_16.dcm": "secondary capture, JPEG-LS near-lossless 16-bit (no patient position)",
    "nibabel:slicethickness_empty_string.dcm": "Siemens MR, JPEG 2000 lossless, empty SliceThickness",
    "nibabel:decimal_rescale.dcm": "Siemens MR, rescale slope 2 / intercept -4096, no SOP Class UID",
    "nibabel:siemens_dwi_0.dcm.gz": "Siemens DWI mosaic 896x896, implicit VR",
}


def _source(name: str) -> Path:
    return NIBABEL_DATA / name.split(":", 1)[1] if name.startswith("nibabel:") else PYDICOM_DATA / name


def _header_from_pydicom(path: Path, ds: pydicom.Dataset) -> SliceHeader:
    """For files without a patient position (which our scan rightly skips): the pixel fields from pydicom,
    a placeholder geometry (unused by pixel decoding)."""
    return SliceHeader(
        path=path, patient=("", "", ""), study_uid="", series_uid="", sop_uid="", frame_of_reference_uid="",
        modality="", description="", series_number="", study_date="", position=(0.0, 0.0, 0.0),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=(1.0, 1.0), slice_thickness=0.0,
        rows=ds.Rows, columns=ds.Columns, slope=float(ds.get("RescaleSlope", 1) or 1),
        intercept=float(ds.get("RescaleIntercept", 0) or 0), bits_allocated=ds.BitsAllocated,
        bits_stored=ds.BitsStored, signed=ds.PixelRepresentation == 1, samples=ds.SamplesPerPixel, frames=1,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID), pixel_offset=None, implicit_vr=False)


@pytest.mark.parametrize("name", SINGLE)
def test_single_real_file_is_2d_and_decodes_like_pydicom(tmp_path, name):
    """A one-file folder is refused (2D image, or not a slice when the file has no patient position); our
    pixel path (header walker + direct read or pydicom decoder, bit masking, rescale) gives exactly pydicom's
    pixel_array * slope + intercept."""
    (path,) = _copy([_source(name)], tmp_path / "one")
    ds = _dcm(path)
    try:
        expected = _hu(ds)
    except Exception as e:  # a decoder plugin missing here, or data pydicom itself refuses
        pytest.skip(f"{name} ({SINGLE[name]}): pydicom cannot decode it here: {str(e).splitlines()[0][:120]}")
    slices = scan_folder(tmp_path / "one").slices
    if "ImagePositionPatient" in ds:
        with pytest.raises(ReadError, match=rf"single slice \({path.name}\): this is a 2D image"):
            read_volume(tmp_path / "one")
        (header,) = slices
    else:
        with pytest.raises(ReadError, match=rf"no image slices \(e.g. {path.name}: {UID(ds.SOPClassUID).name} "
                                            "without ImagePositionPatient"):
            read_volume(tmp_path / "one")
        assert slices == []
        header = _header_from_pydicom(path, ds)
    ours = read_pixels([header])
    assert ours.shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(ours[0].astype(np.float64), expected)


NIBABEL_GEOMETRY = ["0.dcm", "1.dcm", "siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz", "decimal_rescale.dcm",
                    "slicethickness_empty_string.dcm", "csa_slice_norm.dcm"]


def test_siemens_header_geometry_equals_pydicom(tmp_path):
    """nibabel's real Siemens files (DWI mosaics, implicit and explicit VR, JPEG 2000, an empty
    SliceThickness, decimal rescale values, a header without pixel data): position, orientation, pixel
    spacing, size, rescale and slice thickness as our header walker parses them equal pydicom's values."""
    copies = _copy([NIBABEL_DATA / n for n in NIBABEL_GEOMETRY], tmp_path / "siemens")
    headers = {h.path: h for h in scan_folder(tmp_path / "siemens").slices}
    assert set(headers) == set(copies)
    for path in copies:
        ds, h = _dcm(path), headers[path]
        assert h.position == tuple(float(v) for v in ds.ImagePositionPatient), path.name
        assert h.orientation == tuple(float(v) for v in ds.ImageOrientationPatient), path.name
        assert h.pixel_spacing == tuple(float(v) for v in ds.PixelSpacing), path.name
        assert (h.rows, h.columns) == (ds.Rows, ds.Columns), path.name
        assert (h.slope, h.intercept) == (float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0)))
        assert h.slice_thickness == float(ds.get("SliceThickness") or 0.0), path.name
        assert h.series_uid == ds.get("SeriesInstanceUID", "") and h.modality == ds.Modality == "MR"
