"""The module's pure-Python helpers (SlicerDeepLiverLib), outside Slicer, against deepliver itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver import labels
from deepliver.dataset import export_case, find_case, load_case
from deepliver.imaging import list_series, read_volume
from deepliver.imaging.dicom_write import write_dicom_series
from SlicerDeepLiverLib import deps, series, structures, summary
from SlicerDeepLiverLib.selftest import SPACING, label_differences, phantom_image, physical_grid, sphere_masks

MODULE_DIR = Path(__file__).resolve().parents[2] / "SlicerDeepLiver"


# --- structures ------------------------------------------------------------------------------------------
def test_standard_structures_are_the_label_table():
    rows = structures.standard_structures()
    table = [l for l in labels.LABELS if l.value != labels.BACKGROUND.value]
    assert [s.value for s in rows] == [l.value for l in table]
    for s, l in zip(rows, table):
        assert s.name.lower() == l.name and s.color255 == l.color and not s.custom
        assert s.terminology == labels.slicer_terminology_entry(l)


def test_custom_structures_never_reuse_a_standard_or_deleted_value():
    standard = structures.standard_structures()
    reserved = structures.reserved_values()
    vessel = structures.custom_structure("  portal   vein ", standard, reserved)
    assert vessel.name == "portal vein" and vessel.custom and vessel.value == max(labels.label_values()) + 1
    # the tumor is deleted from the working segmentation: its value stays reserved
    without_tumor = [s for s in standard if s.value != labels.TUMOR.value] + [vessel]
    cyst = structures.custom_structure("Cyst", without_tumor, reserved)
    assert cyst.value == vessel.value + 1 and cyst.color != vessel.color


@pytest.mark.parametrize("name, message", [("  ", "type a name"), ("LIVER", "'Liver' already exists")])
def test_custom_structure_names_are_checked(name, message):
    with pytest.raises(ValueError, match=message):
        structures.custom_structure(name, structures.standard_structures(), structures.reserved_values())


def test_custom_structure_values_stop_at_255():
    top = structures.Structure(255, "Last", (1.0, 0.0, 0.0), "", True)
    with pytest.raises(ValueError, match="8-bit"):
        structures.custom_structure("One more", [top], ())


def _slicer_merge(masks_in_order):
    """What ExportSegmentsToLabelmapNode writes: 1 + i for the i-th segment, later segments overwriting."""
    merged = np.zeros(masks_in_order[0].shape, np.uint8)
    for i, mask in enumerate(masks_in_order):
        merged[mask] = i + 1
    return merged


def test_export_gives_table_values_whatever_the_segment_order(phantom):
    truth = sitk.GetArrayFromImage(phantom.label)
    liver_mask = truth > 0  # the liver segment painted under the tumor too (overlap)
    tumor_mask = truth == labels.TUMOR.value
    by_value = {labels.LIVER.value: liver_mask, labels.TUMOR.value: tumor_mask}
    standard = structures.standard_structures()
    for order in (standard, standard[::-1]):
        ordered = structures.export_order(order)
        merged = _slicer_merge([by_value[s.value] for s in ordered])
        np.testing.assert_array_equal(structures.remap_exported(merged, [s.value for s in ordered]), truth)


def test_export_order_rejects_two_structures_with_one_value():
    a = structures.Structure(3, "A", (0, 0, 0))
    with pytest.raises(ValueError, match="both have label value 3"):
        structures.export_order([a, structures.Structure(3, "B", (0, 0, 0))])


def test_remap_rejects_values_without_a_segment():
    with pytest.raises(ValueError, match="value 3 but only 2 segment"):
        structures.remap_exported(np.array([[0, 3]]), [1, 2])


def test_structures_for_values_of_a_saved_label():
    existing = [s for s in structures.standard_structures() if s.value == labels.LIVER.value]
    added = structures.structures_for_values({0, 1, 2, 7}, existing)
    assert [s.value for s in added] == [labels.TUMOR.value, 7]
    assert added[0].name.lower() == labels.TUMOR.name and added[1].name == "Label 7" and added[1].custom


@pytest.mark.parametrize("text, value", [("2", 2), (" 17 ", 17), ("0", None), ("256", None), ("x", None),
                                         (None, None)])
def test_parse_label_value(text, value):
    assert structures.parse_label_value(text) == value


# --- series table ----------------------------------------------------------------------------------------
def test_series_rows_describe_each_series_of_a_dicom_folder(tmp_path, phantom):
    write_dicom_series(phantom.image, tmp_path / "a", description="Abdomen portal venous", uid_seed=1)
    write_dicom_series(phantom.image[:, :, :6], tmp_path / "b", description="", uid_seed=2)
    found = list_series(tmp_path)
    rows = series.series_rows(found, tr=lambda s: f"<{s}>")
    assert len(rows) == 2 and all(len(r) == len(series.COLUMNS) for r in rows)
    by_slices = {int(r[4]): r for r in rows}
    assert set(by_slices) == {12, 6}
    assert by_slices[12][2] == "Abdomen portal venous" and by_slices[6][2] == "<(no description)>"
    for info, row in zip(found, rows):
        assert row[0] == info.patient_key and row[3] == info.modality
        assert row[5] == " x ".join(str(n) for n in info.size)
        assert row[1] == f"{info.study_date[:4]}-{info.study_date[4:6]}-{info.study_date[6:]}"


@pytest.mark.parametrize("value, text", [("20240131", "2024-01-31"), ("2024", "2024"), (None, "")])
def test_format_date(value, text):
    assert series.format_date(value) == text


@pytest.mark.parametrize("path, is_set", [(None, False), (Path(), False), ("", False), (Path("/data"), True)])
def test_folder_is_set(path, is_set):
    assert series.folder_is_set(path) is is_set


# --- the save path the module takes, without Slicer ------------------------------------------------------
def test_saving_a_dicom_series_the_module_way_round_trips(tmp_path, phantom):
    """Logic.saveCase re-reads the DICOM folder and passes the label (on the volume's geometry) to
    export_case; loading the series again finds the case and its label comes back identical."""
    folder, dataset = tmp_path / "dicom", tmp_path / "dataset"
    write_dicom_series(phantom.image, folder, uid_seed=3)
    (info,) = list_series(folder)
    shown = read_volume(folder, series=info.series_id)  # what the module pushes into the scene
    label = sitk.GetImageFromArray(sitk.GetArrayFromImage(phantom.label))
    label.CopyInformation(shown)
    provenance = summary.annotation_provenance("5.8.1", structures=["Liver", "Tumor"])
    result = export_case(str(folder), label, dataset, series=info.series_id, annotator="dr. test",
                         provenance=provenance)
    assert find_case(dataset, info.series_uid) == result.case_id
    image, saved, manifest = load_case(dataset, result.case_id)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), sitk.GetArrayFromImage(phantom.label))
    np.testing.assert_allclose(saved.GetOrigin(), shown.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(saved.GetDirection(), shown.GetDirection(), atol=1e-6)
    assert manifest["provenance"] == provenance and manifest["annotator"] == "dr. test"

    text = summary.case_summary(result)
    truth = sitk.GetArrayFromImage(phantom.label)
    voxel_ml = float(np.prod(shown.GetSpacing())) / 1000.0
    liver_ml = np.count_nonzero(truth == labels.LIVER.value) * voxel_ml
    assert text.startswith(f"Case {result.case_id}: liver {liver_ml:.1f} mL")
    assert text.endswith(f"{result.lesion_count} lesion(s)")
    assert json.loads(json.dumps(provenance)) == provenance


def test_annotation_provenance_records_a_corrected_model_result():
    p = summary.annotation_provenance("5.8.1", started_from={"kind": "model", "bundle": "liver-2d", "version": "3"})
    assert p["method"] == "corrected" and p["started_from"]["bundle"] == "liver-2d"
    assert summary.annotation_provenance("5.8.1")["method"] == "manual"


# --- deepliver missing -----------------------------------------------------------------------------------
def test_require_deepliver_returns_the_package():
    import deepliver
    assert deps.require_deepliver() is deepliver


def test_missing_deepliver_gives_the_install_command():
    code = ("import sys; sys.modules['deepliver'] = None\n"
            "from SlicerDeepLiverLib.deps import require_deepliver, DeepLiverMissing\n"
            "try:\n    require_deepliver('/opt/Slicer/bin/PythonSlicer')\n"
            "except DeepLiverMissing as e:\n    print(e)\n    raise SystemExit(3)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(MODULE_DIR)})
    assert run.returncode == 3, run.stderr
    assert "'deepliver' cannot be imported" in run.stdout
    assert '"/opt/Slicer/bin/PythonSlicer" -m pip install -e' in run.stdout and "PyTorch" in run.stdout


# --- self-test data --------------------------------------------------------------------------------------
def test_self_test_spheres_match_their_analytic_volumes():
    image = phantom_image()
    liver, tumor = sphere_masks(image)
    voxel = float(np.prod(SPACING))
    assert liver.sum() * voxel == pytest.approx(4 / 3 * np.pi * 14 ** 3, rel=0.03)
    assert tumor.sum() * voxel == pytest.approx(4 / 3 * np.pi * 5 ** 3, rel=0.05)
    assert not (tumor & ~liver).any()
    grid = physical_grid(image)
    for index in [(0, 0, 0), (63, 0, 5), (10, 55, 23), (31, 27, 12)]:  # x, y, z
        np.testing.assert_allclose(grid[index[2], index[1], index[0]],
                                   image.TransformIndexToPhysicalPoint(index), atol=1e-9)


def test_label_differences_names_each_mismatch():
    image = phantom_image()
    liver, tumor = sphere_masks(image)
    array = np.where(tumor, 2, np.where(liver, 1, 0)).astype(np.uint8)
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    expected = {"liver": int((liver & ~tumor).sum()), "tumor": int(tumor.sum())}
    assert label_differences(label, image, expected) == []
    shifted = sitk.Image(label)
    shifted.SetOrigin(tuple(np.add(image.GetOrigin(), (0.0, 0.0, 2.5))))
    problems = label_differences(shifted, image, {**expected, "tumor": expected["tumor"] + 1})
    assert len(problems) == 2 and problems[0].startswith("tumor:") and problems[1].startswith("origin")
