"""export_case / export_folder: round trips, stable ids, history, atomicity, no identifier leaks, CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

import deepliver.imaging
from deepliver.dataset import (case_id_for, export_case, export_folder, find_case, load_case, read_manifest)
from deepliver.errors import GeometryError, LabelError
from deepliver.imaging.geometry import geometry_differences


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_export_gives_back_identical_label_and_geometry(tmp_path, ds_pair):
    result = export_case(ds_pair.image_path, ds_pair.label_path, tmp_path / "ds")
    label = sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / f"{result.case_id}.nii.gz"))
    image = sitk.ReadImage(str(tmp_path / "ds" / "imagesTr" / f"{result.case_id}.nii.gz"))
    assert label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), ds_pair.label)
    assert geometry_differences(label, ds_pair.image) == []
    assert geometry_differences(image, ds_pair.image) == []
    assert image.GetPixelID() == sitk.sitkInt16  # HU kept, smallest exact type
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ds_pair.image))
    assert result.created and result.history_path is None
    assert result.image_path.is_file() and result.manifest_path.is_file()


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (1, 0, 0, 0, 1, 0, 0, 0, -1), None])
def test_image_writer_round_trips_voxels_geometry_and_checksum(tmp_path, ds_tools, direction):
    import hashlib
    from deepliver.dataset.nifti import write_nifti_gz
    from deepliver.imaging.geometry import Geometry
    g = ds_tools.geometry()
    geometry = Geometry(g.size, g.spacing, g.origin, direction or g.direction)
    array = sitk.GetArrayFromImage(ds_tools.make_image(4))
    sha = write_nifti_gz(array, geometry, tmp_path / "a.nii.gz")
    assert sha == hashlib.sha256((tmp_path / "a.nii.gz").read_bytes()).hexdigest()
    assert write_nifti_gz(array, geometry, tmp_path / "b.nii.gz") == sha  # deterministic bytes
    back = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetPixelID() == sitk.sitkInt16
    assert geometry_differences(back, geometry, tol=1e-6) == []
    header = gzip.decompress((tmp_path / "a.nii.gz").read_bytes())[:352]
    assert header[148:228] == b"\0" * 80 and header[228:252] == b"\0" * 24  # empty descrip, aux_file


def test_float_image_with_integer_values_is_stored_as_int16_with_the_same_id(tmp_path, ds_tools):
    image = ds_tools.make_image(1)
    as_float = sitk.Cast(image, sitk.sitkFloat32)
    label = ds_tools.make_label(1)
    a = export_case(image, label, tmp_path / "ds")
    b = export_case(as_float, label, tmp_path / "ds")
    assert a.case_id == b.case_id and not b.created
    assert sitk.ReadImage(str(b.image_path)).GetPixelID() == sitk.sitkInt16


def test_non_integer_hu_stays_float(tmp_path, ds_tools):
    image = sitk.Cast(ds_tools.make_image(2), sitk.sitkFloat32) + 0.25
    result = export_case(image, ds_tools.make_label(2), tmp_path / "ds")
    back = sitk.ReadImage(str(result.image_path))
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_content_hash_id_is_stable_and_content_sensitive(tmp_path, ds_tools):
    first = ds_tools.write_pair(tmp_path / "a", seed=0)
    copy = ds_tools.write_pair(tmp_path / "b", seed=0)  # same voxels and geometry, other files
    other = ds_tools.write_pair(tmp_path / "c", seed=1)
    ds = tmp_path / "ds"
    id_a = export_case(first.image_path, first.label_path, ds).case_id
    id_b = export_case(copy.image_path, copy.label_path, ds).case_id
    id_c = export_case(other.image_path, other.label_path, ds).case_id
    assert id_a == id_b != id_c
    assert case_id_for(ds, image=first.image_path) == id_a
    moved = sitk.Image(first.image)
    moved.SetOrigin([v + 1.0 for v in moved.GetOrigin()])  # same voxels elsewhere: another image
    assert case_id_for(ds, image=moved) != id_a


def test_same_series_twice_updates_the_case_and_keeps_history(tmp_path, ds_dicom):
    folder, image, label, _ = ds_dicom
    ds = tmp_path / "ds"
    first = export_case(folder, label, ds, annotator="A. First")
    before = read_manifest(ds, first.case_id)
    corrected = label.copy()
    corrected[3, 20:25, 20:25] = 2
    time.sleep(0.01)
    second = export_case(folder, corrected, ds, annotator="B. Second")
    after = read_manifest(ds, first.case_id)

    assert second.case_id == first.case_id and first.created and not second.created
    assert second.history_path.parent == ds / "labelsTr" / ".history"
    assert second.history_path.name.startswith(f"{first.case_id}-")
    np.testing.assert_array_equal(_array(second.history_path), label)  # the previous label, intact
    np.testing.assert_array_equal(_array(second.label_path), corrected)
    assert after["created"] == before["created"] and after["modified"] > before["modified"]
    assert after["annotator"] == "B. Second"
    assert after["history"][-1]["path"] == f"labelsTr/.history/{second.history_path.name}"
    assert after["history"][-1]["annotator"] == "A. First"
    series_uid = deepliver.imaging.list_series(folder)[0].series_uid
    assert find_case(ds, series_uid) == first.case_id and find_case(ds, "1.2.3.4") is None
    assert case_id_for(ds, series_uid=series_uid) == first.case_id


def test_two_saves_within_a_second_keep_both_previous_labels(tmp_path, ds_pair):
    ds = tmp_path / "ds"
    for value in (1, 2, 0):  # three saves: two previous labels in history
        label = ds_pair.label.copy()
        label[0, 0, 0] = value
        result = export_case(ds_pair.image, label, ds)
    history = sorted((ds / "labelsTr" / ".history").iterdir())
    assert len(history) == 2 and len({p.name for p in history}) == 2
    assert [int(_array(p)[0, 0, 0]) for p in history] == [1, 2]
    assert len(read_manifest(ds, result.case_id)["history"]) == 2


def test_manifest_numbers_match_independent_counts(tmp_path, ds_pair):
    from scipy import ndimage
    result = export_case(ds_pair.image_path, ds_pair.label_path, tmp_path / "ds")
    manifest = read_manifest(tmp_path / "ds", result.case_id)
    voxel_ml = float(np.prod(ds_pair.image.GetSpacing())) / 1000.0
    for name, value in (("background", 0), ("liver", 1), ("tumor", 2)):
        count = int((ds_pair.label == value).sum())
        assert manifest["labels"][name]["voxels"] == count == result.voxel_counts[name]
        assert manifest["labels"][name]["volume_ml"] == pytest.approx(count * voxel_ml, rel=1e-9)
    lesions26 = ndimage.label(ds_pair.label == 2, structure=np.ones((3, 3, 3)))[1]
    lesions6 = ndimage.label(ds_pair.label == 2)[1]
    assert manifest["tumor_lesions"] == result.lesion_count == lesions26 == 2 and lesions6 == 3
    import hashlib
    for kind, path in (("image", result.image_path), ("label", result.label_path)):
        assert manifest[kind]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["geometry"]["spacing"] == pytest.approx(list(ds_pair.image.GetSpacing()), abs=1e-5)
    assert manifest["source"]["kind"] == "file" and manifest["source"]["format"] == ".nii.gz"


def test_dicom_manifest_records_pseudonymous_source(tmp_path, ds_dicom):
    folder, _, label, _ = ds_dicom
    ds = tmp_path / "ds"
    result = export_case(folder, label, ds, provenance={"model": "demo", "corrected_by": "A"})
    manifest = read_manifest(ds, result.case_id)
    key = (ds / ".deepliver-key").read_text().strip()
    info = deepliver.imaging.list_series(folder, key=bytes.fromhex(key))[0]
    src = manifest["source"]
    assert src["patient_key"] == info.patient_key and src["series_uid"] == info.series_uid
    assert src["study_uid"] == info.study_uid and src["frame_of_reference_uid"] == info.frame_of_reference_uid
    assert src["description"] == "ABDOMEN CT" and manifest["provenance"]["model"] == "demo"
    assert (ds / ".deepliver-key").stat().st_mode & 0o777 == 0o600


def test_no_identifier_in_any_exported_byte(tmp_path, ds_dicom):
    folder, _, label, identifiers = ds_dicom
    ds = tmp_path / "ds"
    export_case(folder, label, ds, annotator="reader1")
    export_case(folder, label, ds, annotator="reader1")  # history too
    secrets = [s.encode() for s in identifiers.values()] + [b"LEAKY", b"SECRET", b"1951"]
    files = [p for p in ds.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data += gzip.decompress(data)
        for secret in secrets:
            assert secret not in data, f"{secret!r} found in {path}"
        assert b"LEAKY" not in path.name.encode()


def test_failure_halfway_leaves_the_dataset_exactly_as_it_was(tmp_path, ds_tools, monkeypatch):
    ds = tmp_path / "ds"
    pair = ds_tools.write_pair(tmp_path / "src", seed=0)
    export_case(pair.image_path, pair.label_path, ds)
    before = ds_tools.snapshot(ds)

    def broken_writer(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(deepliver.imaging, "write_label", broken_writer)
    corrected = pair.label.copy()
    corrected[5, 5, 5] = 2
    with pytest.raises(OSError, match="simulated"):
        export_case(pair.image_path, corrected, ds)  # an update of the existing case
    other = ds_tools.write_pair(tmp_path / "other", seed=1)
    with pytest.raises(OSError, match="simulated"):
        export_case(other.image_path, other.label_path, ds)  # a new case
    assert ds_tools.snapshot(ds) == before  # same files, same bytes, no temporary file left


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path, ds_tools):
    image = ds_tools.make_image()
    bad = ds_tools.make_label()
    bad[0, 0, 0] = 9
    with pytest.raises(LabelError, match="outside the table"):
        export_case(image, bad, tmp_path / "ds")
    shifted = ds_tools.geometry().image_from_array(ds_tools.make_label())
    shifted.SetSpacing((1.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="spacing"):
        export_case(image, shifted, tmp_path / "ds")
    assert not (tmp_path / "ds" / "manifests").exists() or not any((tmp_path / "ds" / "manifests").iterdir())


def test_dataset_json_matches_the_files(tmp_path, ds_tools):
    ds = tmp_path / "ds"
    ids = sorted(export_case(ds_tools.make_image(s), ds_tools.make_label(s), ds).case_id for s in range(3))
    data = json.loads((ds / "dataset.json").read_text())
    assert data["labels"] == {"0": "background", "1": "liver", "2": "tumor"}
    assert data["modality"] == {"0": "CT"} and data["channel_names"] == {"0": "CT"}
    assert data["file_ending"] == ".nii.gz" and data["numTraining"] == 3 and "version" in data["deepliver"]
    assert [e["image"] for e in data["training"]] == [f"./imagesTr/{c}.nii.gz" for c in ids]
    for entry in data["training"]:
        assert (ds / entry["image"]).is_file() and (ds / entry["label"]).is_file()
    image, label, manifest = load_case(ds, ids[0])
    assert manifest["case_id"] == ids[0] and geometry_differences(image, label) == []


def test_export_folder_in_two_processes_with_progress(tmp_path, ds_tools):
    src = tmp_path / "src"
    pairs = [ds_tools.write_pair(src / f"case{i}", seed=i) for i in range(3)]
    calls = []
    results = export_folder(src, tmp_path / "ds", workers=2, progress=lambda *a: calls.append(a))
    assert [r.voxel_counts["liver"] for r in results] == [int((p.label == 1).sum()) for p in pairs]
    assert calls[0] == ("export", 0, 3) and calls[-1] == ("export", 3, 3)
    data = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert data["numTraining"] == 3
    assert {e["label"] for e in data["training"]} == {f"./labelsTr/{r.case_id}.nii.gz" for r in results}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_export_prints_volumes_and_fails_in_one_line(tmp_path, ds_pair):
    done = _cli("export", "--image", ds_pair.image_path, "--label", ds_pair.label_path,
                "--dataset", tmp_path / "ds", "--annotator", "cli")
    assert done.returncode == 0, done.stderr
    liver_ml = (ds_pair.label == 1).sum() * np.prod(ds_pair.image.GetSpacing()) / 1000
    case_id = json.loads((tmp_path / "ds" / "dataset.json").read_text())["training"][0]["image"][11:-7]
    assert done.stdout.startswith(case_id) and f"liver {liver_ml:.1f} mL" in done.stdout
    assert "2 lesion(s)" in done.stdout and "new" in done.stdout
    missing = _cli("export", "--image", tmp_path / "nope.nii.gz", "--label", ds_pair.label_path,
                   "--dataset", tmp_path / "ds")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope.nii.gz: no such file" in missing.stderr


def test_cli_export_from_a_dicom_phantom_cohort_then_check(tmp_path):
    from deepliver.dataset import check_dataset
    from deepliver.dataset.phantom import generate_cohort
    folders = generate_cohort(tmp_path / "src", cases=2, seed=3, fmt="dicom", shape=(64, 64, 24))
    args = ("export", "--from", tmp_path / "src", "--dataset", tmp_path / "ds", "--workers", "2",
            "--progress", "none")
    first, again = _cli(*args), _cli(*args)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    lines, lines_again = first.stdout.splitlines(), again.stdout.splitlines()
    assert len(lines) == 2 and all(l.endswith("new") for l in lines)
    assert [l.split()[0] for l in lines_again] == [l.split()[0] for l in lines]  # same series, same cases
    assert all(l.endswith("updated") for l in lines_again)
    for folder, line in zip(folders, lines):
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz")))
        np.testing.assert_array_equal(_array(tmp_path / "ds" / "labelsTr" / f"{line.split()[0]}.nii.gz"),
                                      expected)
    assert len(list((tmp_path / "ds" / "labelsTr" / ".history").iterdir())) == 2
    assert check_dataset(tmp_path / "ds") == []
