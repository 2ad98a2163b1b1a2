"""check_dataset: each planted problem is reported alone, all of them together, and the CLI exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.dataset import check_dataset, check_dataset_or_raise, export_case
from deepliver.errors import InputError, ProblemsError


@pytest.fixture
def ds_dataset(tmp_path, ds_tools):
    """A clean dataset of two cases (content-hash ids); returns (folder, [case ids])."""
    ds = tmp_path / "ds"
    ids = [export_case(ds_tools.make_image(s), ds_tools.make_label(s), ds).case_id for s in (0, 1)]
    return ds, sorted(ids)


def _rewrite(ds, case_id, kind, image):
    """Replace a case's image or label file and fix its manifest checksum, so that only the content
    problem remains."""
    path = ds / ("imagesTr" if kind == "image" else "labelsTr") / f"{case_id}.nii.gz"
    sitk.WriteImage(image, str(path), True)
    manifest_path = ds / "manifests" / f"{case_id}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[kind]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return path


def _label(ds, case_id):
    return sitk.ReadImage(str(ds / "labelsTr" / f"{case_id}.nii.gz"))


def _plant_geometry(ds, c):
    label = _label(ds, c)
    label.SetOrigin([v + 3.0 for v in label.GetOrigin()])
    return [(_rewrite(ds, c, "label", label), "label geometry differs from its image: origin")]


def _plant_values(ds, c):
    array = sitk.GetArrayFromImage(_label(ds, c))
    array[1, 1, 1] = 7
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(_label(ds, c))
    return [(_rewrite(ds, c, "label", image), "label values outside the table")]


def _plant_nan(ds, c):
    image = sitk.Cast(sitk.ReadImage(str(ds / "imagesTr" / f"{c}.nii.gz")), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[2, 3, 4] = np.nan
    nan = sitk.GetImageFromArray(array)
    nan.CopyInformation(image)
    return [(_rewrite(ds, c, "image", nan), "1 voxel(s) are NaN")]


def _plant_empty_liver(ds, c):
    array = sitk.GetArrayFromImage(_label(ds, c))
    array[array == 1] = 0
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(_label(ds, c))
    return [(_rewrite(ds, c, "label", image), "empty liver")]


def _plant_missing(ds, c):
    path = ds / "labelsTr" / f"{c}.nii.gz"
    path.unlink()
    return [(path, "missing (case"), (ds / "dataset.json", f"lists ./imagesTr/{c}.nii.gz"),
            (ds / "dataset.json", "numTraining is 2 but the folder holds 1")]


def _plant_stray(ds, c):
    stray = ds / "imagesTr" / "notes.txt"
    stray.write_text("x")
    temp = ds / "labelsTr" / f".{c}.nii.gz.abc.tmp.nii.gz"
    temp.write_bytes(b"partial")
    return [(stray, "stray file"), (temp, "leftover temporary file")]


def _plant_checksum(ds, c):
    path = ds / "manifests" / f"{c}.json"
    manifest = json.loads(path.read_text())
    manifest["label"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    return [(ds / "labelsTr" / f"{c}.nii.gz", "checksum mismatch")]


def _plant_duplicate_series(ds, c):
    """Two manifests claim the same series UID (e.g. one exported under another key)."""
    for case_id in sorted(p.stem for p in (ds / "manifests").glob("*.json")):
        path = ds / "manifests" / f"{case_id}.json"
        manifest = json.loads(path.read_text())
        manifest["source"]["series_uid"] = "1.2.840.99.1"
        path.write_text(json.dumps(manifest))
    return [(ds / "manifests", "come from the same series 1.2.840.99.1")]


def _plant_index(ds, c):
    path = ds / "dataset.json"
    data = json.loads(path.read_text())
    data["numTraining"] = 5
    data["training"] = data["training"][:1]
    path.write_text(json.dumps(data))
    return [(path, "numTraining is 5"), (path, "does not list")]


PLANTS = {"geometry": _plant_geometry, "values": _plant_values, "nan": _plant_nan,
          "empty_liver": _plant_empty_liver, "missing": _plant_missing, "stray": _plant_stray,
          "checksum": _plant_checksum, "duplicate_series": _plant_duplicate_series, "index": _plant_index}


def _assert_reported(problems, expected):
    for path, text in expected:
        hits = [p for p in problems if str(path.name) in p and text in p]
        assert hits, f"{text!r} about {path.name} not in {problems}"


def test_clean_dataset_has_no_problem(ds_dataset):
    ds, ids = ds_dataset
    assert check_dataset(ds) == []
    assert check_dataset_or_raise(ds) == ids


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_each_planted_problem_is_reported_alone(ds_dataset, name):
    ds, ids = ds_dataset
    expected = PLANTS[name](ds, ids[0])
    problems = check_dataset(ds)
    _assert_reported(problems, expected)
    assert len(problems) == len(expected), problems  # nothing else is blamed


def test_all_problems_at_once_are_all_listed(ds_dataset, ds_tools):
    ds, ids = ds_dataset
    more = [export_case(ds_tools.make_image(s), ds_tools.make_label(s), ds).case_id for s in (2, 3, 4, 5)]
    cases = ids + more
    expected = []
    for name, case_id in zip(["geometry", "values", "nan", "empty_liver", "checksum", "stray"], cases):
        expected += PLANTS[name](ds, case_id)
    expected += _plant_duplicate_series(ds, None)
    with pytest.raises(ProblemsError) as info:
        check_dataset_or_raise(ds)
    _assert_reported(info.value.problems, expected)


def test_missing_key_and_missing_index_are_problems(ds_dataset):
    ds, _ = ds_dataset
    (ds / ".deepliver-key").unlink()
    (ds / "dataset.json").unlink()
    problems = check_dataset(ds)
    assert len(problems) == 2
    assert ".deepliver-key: missing" in problems[0] and "dataset.json: missing" in problems[1]


def test_not_a_folder_raises(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder"):
        check_dataset(tmp_path / "nope")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", "check", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_check_exit_codes(ds_dataset):
    ds, ids = ds_dataset
    ok = _cli(ds)
    assert ok.returncode == 0 and ok.stdout.strip() == "2 cases OK"
    _plant_checksum(ds, ids[0])
    shutil.copy(ds / "dataset.json", ds / "imagesTr" / "extra.json")
    bad = _cli(ds)
    assert bad.returncode == 2
    lines = bad.stdout.strip().splitlines()
    assert len(lines) == 2 and any("checksum mismatch" in l for l in lines) and any("stray" in l for l in lines)
    assert bad.stderr.strip() == f"deepliver check: error: {ds}: dataset check failed (2 problem(s))"
    as_json = _cli(ds, "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 2 and report["cases"] == 2 and report["problems"] == lines
