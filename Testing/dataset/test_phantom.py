"""The phantom CT generator: geometry, labels, determinism, realism checks, cohorts on disk and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from deepliver.dataset.phantom import (DEFAULT_SHAPE, DIRECTION_KINDS, case_name, case_seed, generate_cohort,
                                       make_phantom, right_handed)
from deepliver.dataset.phantom_anatomy import draw_anatomy
from deepliver.dataset.phantom_canvas import Canvas
from deepliver.dataset.phantom_liver import Tumor, paint_liver
from deepliver.dataset.phantom_shapes import Frame, WaveField
from deepliver.errors import ConfigError
from deepliver.imaging import read_label, read_volume
from deepliver.imaging.geometry import Geometry, geometry_differences

SMALL = (64, 64, 24)
IDENTITY = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


def _arrays(phantom):
    return sitk.GetArrayFromImage(phantom.image), sitk.GetArrayFromImage(phantom.label)


@pytest.fixture(scope="module")
def phantom_small():
    """Three small phantoms with drawn geometry."""
    return [make_phantom(seed, SMALL) for seed in (3, 4, 5)]


def test_default_shape_is_small_and_x_y_z():
    assert DEFAULT_SHAPE == (160, 160, 64)


def test_image_and_label_share_exact_geometry_and_types(phantom_small):
    for p in phantom_small:
        assert p.image.GetSize() == SMALL  # (x, y, z)
        assert p.image.GetPixelID() == sitk.sitkInt16 and p.label.GetPixelID() == sitk.sitkUInt8
        assert geometry_differences(p.image, p.label, tol=0.0) == []
        image, label = _arrays(p)
        assert set(np.unique(label)) <= {0, 1, 2}
        assert np.count_nonzero(label == 1) > 0, "every case has a liver"
        assert image.min() >= -1024 and image.max() <= 3071


def test_drawn_spacing_and_direction_are_in_range():
    kinds = set()
    for seed in range(10):
        p = make_phantom(seed, (16, 16, 4))
        sx, sy, sz = p.image.GetSpacing()
        assert 0.6 <= sx <= 0.9 and sx == sy, (seed, p.image.GetSpacing())
        assert 1.0 <= sz <= 5.0
        d = np.asarray(p.image.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)
        tilt = np.degrees(np.arccos(min(1.0, abs(d[2, 2]))))
        assert tilt < 10.0, f"seed {seed}: slice axis tilted {tilt:.1f} deg"
        assert p.info["direction_kind"] in DIRECTION_KINDS
        kinds.add(p.info["direction_kind"])
    assert len(kinds) >= 3, kinds


def test_same_seed_same_voxels_other_seed_other_voxels():
    a, b, c = make_phantom(7, SMALL), make_phantom(7, SMALL), make_phantom(8, SMALL)
    (ia, la), (ib, lb), (ic, lc) = _arrays(a), _arrays(b), _arrays(c)
    assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    assert a.info == b.info
    assert not np.array_equal(ia, ic)


def test_anatomy_does_not_depend_on_spacing_liver_scales_with_field_of_view():
    """Same seed and direction, spacing doubled: the field of view doubles, the body is scaled twice as
    large (below real size), so the liver volume grows 8x, within voxelisation error."""
    small = make_phantom(11, (48, 48, 48), spacing=(0.5, 0.5, 0.5), direction=IDENTITY, n_tumors=0)
    large = make_phantom(11, (48, 48, 48), spacing=(1.0, 1.0, 1.0), direction=IDENTITY, n_tumors=0)
    v_small = np.count_nonzero(_arrays(small)[1]) * 0.5 ** 3
    v_large = np.count_nonzero(_arrays(large)[1]) * 1.0
    assert v_large / v_small == pytest.approx(8.0, rel=0.12)


def test_liver_volume_at_real_scale_is_adult():
    """A 384 mm field of view holds a real-size abdomen: liver (with tumors) 1.2-2 L, minus what other
    organs carve out of it, give or take 4 mm voxels."""
    for seed in (1, 2):
        p = make_phantom(seed, (96, 96, 100), spacing=(4.0, 4.0, 4.0), direction=IDENTITY)
        label = _arrays(p)[1]
        assert not label[[0, -1]].any(), "the whole liver is in view"
        volume_ml = np.count_nonzero(label) * 64 / 1000
        assert 1000 <= volume_ml <= 2100, volume_ml
        assert volume_ml == pytest.approx(p.info["liver_volume_ml"])


def test_liver_hu_realistic_and_a_threshold_cannot_segment_it(phantom_small):
    for p in phantom_small:
        image, label = _arrays(p)
        liver = label > 0
        in_plane = np.zeros((3, 3, 3), dtype=bool)
        in_plane[1] = ndimage.generate_binary_structure(2, 1)
        core = ndimage.binary_erosion(label == 1, in_plane, iterations=2)  # away from partial-volume edges
        assert np.count_nonzero(core) > 100
        assert 50 <= image[core].mean() <= 80
        band = (image >= 40) & (image <= 90)
        dice = 2 * np.count_nonzero(band & liver) / (np.count_nonzero(band) + np.count_nonzero(liver))
        assert dice < 0.8, f"a 40-90 HU threshold reaches Dice {dice:.2f}"
        outside = band & ~liver
        assert np.count_nonzero(outside) > 0.3 * np.count_nonzero(liver), "liver-like HU outside the liver"


def test_tumors_are_labelled_counted_and_some_cases_have_none():
    p = make_phantom(21, (96, 96, 40), spacing=(0.7, 0.7, 1.0), direction=IDENTITY, n_tumors=6)
    image, label = _arrays(p)
    assert p.info["n_tumors"] >= 1 and np.count_nonzero(label == 2) > 0
    assert len(p.info["tumor_diameters_mm"]) == p.info["n_tumors"]
    none = make_phantom(21, (32, 32, 8), n_tumors=0)
    assert not (_arrays(none)[1] == 2).any() and none.info["n_tumors"] == 0
    counts = [make_phantom(s, (16, 16, 4)).info["n_tumors_drawn"] for s in range(12)]
    assert 0 in counts and max(counts) >= 3, counts


def test_tumor_label_only_inside_the_liver_field():
    """A tumor centred on the liver surface is cut to the liver: every label-2 voxel has a negative liver
    field (computed independently at the voxel centres), and part of the ball stays background."""
    anatomy = draw_anatomy(np.random.default_rng(5))
    shape = anatomy.liver.shape
    lo, hi = shape.bounds()
    geometry = Geometry((80, 80, 60), (3.0, 3.0, 3.0), tuple(lo), IDENTITY)
    frame = Frame.from_geometry(geometry, (0, 0, 0), 1.0)
    X, Y, Z = frame.coords(frame.full())
    field = np.broadcast_to(shape.field(X, Y, Z), geometry.shape)
    inside = field < 0
    surface = np.argwhere(inside & ~ndimage.binary_erosion(inside))[len(np.argwhere(inside)) // 50]
    center = frame.q0 + frame.steps @ surface[::-1].astype(float)
    tumor = Tumor(center, 15.0, 0.05, WaveField(np.random.default_rng(0), 6, (20, 50)), "hypo", 30.0)
    canvas = Canvas(frame)
    paint_liver(canvas, anatomy.liver, [tumor])
    label = canvas.label()
    assert np.count_nonzero(label == 2) > 10
    assert np.all(field[label == 2] < 0)
    dist = np.sqrt(sum((c - center[i]) ** 2 for i, c in enumerate(np.broadcast_arrays(X, Y, Z))))
    assert np.count_nonzero((dist < 12) & (label == 0)) > 0, "the tumor ball is cut at the liver surface"
    assert np.all(label[(dist < 12) & inside] == 2)


def test_right_handed_keeps_voxels_in_place():
    flip_z = (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)
    p = make_phantom(2, (24, 20, 10), spacing=(0.8, 0.8, 2.0), direction=flip_z)
    r = right_handed(p.image)
    assert np.linalg.det(np.reshape(r.GetDirection(), (3, 3))) > 0
    a, b = sitk.GetArrayFromImage(p.image), sitk.GetArrayFromImage(r)
    for x, y, z in [(0, 0, 0), (5, 7, 3), (23, 19, 9)]:
        moved = r.TransformPhysicalPointToIndex(p.image.TransformIndexToPhysicalPoint((x, y, z)))
        assert b[moved[2], moved[1], moved[0]] == a[z, y, x]


def test_cohort_nifti_reads_back_exactly(tmp_path):
    folders = generate_cohort(tmp_path, cases=2, seed=9, fmt="nifti", shape=(40, 40, 12))
    assert [f.name for f in folders] == [case_name(0), case_name(1)] == ["phantom_000", "phantom_001"]
    for k, folder in enumerate(folders):
        image = read_volume(folder / "image.nii.gz")
        label = read_label(folder / "label.nii.gz", reference=image)
        expected = make_phantom(case_seed(9, k), (40, 40, 12))
        assert geometry_differences(image, expected.image, tol=1e-4) == []  # NIfTI stores float32
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected.image))
        assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(expected.label))
    one = generate_cohort(tmp_path / "one", cases=1, seed=9, fmt="nifti", shape=(40, 40, 12))
    assert np.array_equal(sitk.GetArrayFromImage(read_volume(one[0] / "image.nii.gz")),
                          sitk.GetArrayFromImage(read_volume(folders[0] / "image.nii.gz")))


def test_cohort_dicom_matches_label_geometry_and_phantom_voxels(tmp_path):
    folders = generate_cohort(tmp_path, cases=3, seed=0, fmt="dicom", shape=(32, 32, 10))
    for k, folder in enumerate(folders):
        image = read_volume(folder / "image")
        label = read_label(folder / "label.nii.gz")
        assert geometry_differences(image, label, tol=1e-4) == []
        expected = right_handed(make_phantom(case_seed(0, k), (32, 32, 10)).image)
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
        files = sorted((folder / "image").glob("*.dcm"))
        assert len(files) == 10
        first = pydicom.dcmread(files[0])
        assert first.Modality == "CT" and str(first.PatientName).startswith("PHANTOM^")
        position = np.asarray(first.ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, label.GetOrigin(), atol=1e-4)
    before = {p.name: p.read_bytes() for p in (folders[0] / "image").iterdir()}
    again = generate_cohort(tmp_path, cases=1, seed=0, fmt="dicom", shape=(32, 32, 10))
    assert {p.name: p.read_bytes() for p in (again[0] / "image").iterdir()} == before, "same seed, same bytes"


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "non-negative integer"),
    ({"shape": (4, 64, 16)}, "at least 8 x 8 x 2"),
    ({"spacing": (0.7, 0.0, 2.0)}, "3 positive numbers"),
    ({"n_tumors": 17}, "between 0 and 16"),
])
def test_bad_arguments_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_phantom(**kwargs)


def test_cli_writes_cases_and_rejects_zero_cases(tmp_path):
    out = tmp_path / "cohort"
    ok = subprocess.run([sys.executable, "-m", "deepliver", "phantom", str(out), "--cases", "2", "--format",
                         "nifti", "--shape", "48", "48", "16", "--progress", "none"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    for k in range(2):
        image = read_volume(out / case_name(k) / "image.nii.gz")
        assert image.GetSize() == (48, 48, 16)
        read_label(out / case_name(k) / "label.nii.gz", reference=image)
    bad = subprocess.run([sys.executable, "-m", "deepliver", "phantom", str(tmp_path / "none"), "--cases", "0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cases must be at least 1, got 0" in lines[0]
    assert not (tmp_path / "none").exists()


def test_noise_after_blur_has_the_drawn_standard_deviation():
    from deepliver.dataset.phantom import _acquire
    flat = np.full((24, 96, 96), 40.0, dtype=np.float32)
    for spacing in ((0.6, 0.6, 1.0), (0.9, 0.9, 5.0)):
        image, noise_sd, blur_mm = _acquire(flat.copy(), spacing, np.random.default_rng(3))
        assert image.dtype == np.int16
        inner = image[2:-2, 8:-8, 8:-8].astype(float)
        assert inner.mean() == pytest.approx(40.0, abs=1.0)
        assert inner.std() == pytest.approx(noise_sd, rel=0.1), (spacing, noise_sd)
        assert 10 <= noise_sd <= 20 and 0.5 <= blur_mm <= 0.9
