"""deepliver.postprocess against straightforward scipy computations (slow but obviously right)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from deepliver.postprocess import (PostprocessOptions, binary_close_mm, binary_dilate_mm, fill_holes_2d,
                                   fill_holes_3d, largest_component, postprocess_file, postprocess_label,
                                   postprocess_tumor, remove_small_components, sidecar_path)

SPACING = (0.7, 0.9, 2.2)  # x, y, z mm (anisotropic)


def brute_ellipsoid(radius_mm, spacing_xyz):
    """Offsets (z, y, x) within radius_mm in physical space, built by looping over a generous cube."""
    sx, sy, sz = spacing_xyz
    n = 12
    offsets = [(dz, dy, dx) for dz, dy, dx in itertools.product(range(-n, n + 1), repeat=3)
               if (dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2 <= radius_mm ** 2 + 1e-6]
    half = [max(abs(o[i]) for o in offsets) for i in range(3)]
    se = np.zeros([2 * h + 1 for h in half], bool)
    for dz, dy, dx in offsets:
        se[dz + half[0], dy + half[1], dx + half[2]] = True
    return se


def noisy_mask(seed=0, shape=(24, 48, 56)):
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    blob = ((z - 12) / 8.0) ** 2 + ((y - 24) / 16.0) ** 2 + ((x - 28) / 20.0) ** 2 < 1
    return (blob & (rng.random(shape) > 0.08)) | (rng.random(shape) < 0.01)


def test_largest_component_matches_scipy_26_connected():
    mask = noisy_mask(1)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    assert n > 50 and np.sort(sizes)[-1] > np.sort(sizes)[-2]  # a unique largest among many
    np.testing.assert_array_equal(largest_component(mask), labels == sizes.argmax())


def test_largest_component_joins_corner_touching_voxels():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[3, 3, 3] = True  # touches only at a corner: 26-connected, not 6-connected
    mask[5, 0, 5] = True
    expected = mask.copy()
    expected[5, 0, 5] = False
    np.testing.assert_array_equal(largest_component(mask), expected)


@pytest.mark.parametrize("radius_mm", [1.0, 2.5, 4.4])
def test_closing_in_mm_matches_scipy_with_ellipsoid(radius_mm):
    mask = noisy_mask(2, shape=(20, 40, 44))
    se = brute_ellipsoid(radius_mm, SPACING)
    pad = max(se.shape) * 2
    expected = ndimage.binary_closing(np.pad(mask, pad, mode="edge"), se)[pad:-pad, pad:-pad, pad:-pad]
    np.testing.assert_array_equal(binary_close_mm(mask, radius_mm, SPACING), expected)
    np.testing.assert_array_equal(binary_dilate_mm(mask, radius_mm, SPACING), ndimage.binary_dilation(mask, se))


def test_closing_does_not_erode_a_structure_touching_the_border():
    mask = np.zeros((10, 30, 30), bool)
    mask[:, :, :12] = True  # a slab touching five faces of the volume
    mask[4, 10, 11] = False  # a one-voxel pit the closing must fill
    closed = binary_close_mm(mask, 3.0, SPACING)
    expected = mask.copy()
    expected[4, 10, 11] = True
    np.testing.assert_array_equal(closed, expected)
    # scipy without padding erodes the border: the test would catch a missing pad
    assert not ndimage.binary_closing(mask, brute_ellipsoid(3.0, SPACING))[0, 0, 0]


def test_hole_filling_2d_and_3d_match_scipy():
    mask = noisy_mask(3)
    mask[4:20, 10:30, 10:30] = True
    mask[8:12, 15:20, 15:20] = False  # a closed 3D cavity
    mask[:, 22:25, 22:25] = False  # a tunnel along z: a hole in each slice, open in 3D
    filled3 = fill_holes_3d(mask)
    filled2 = fill_holes_2d(mask)
    np.testing.assert_array_equal(filled3, ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(filled2, np.stack([ndimage.binary_fill_holes(s) for s in mask]))
    assert filled3[10, 17, 17] and filled2[10, 17, 17]
    assert filled2[10, 23, 23] and not filled3[10, 23, 23]


def test_tumor_outside_liver_removed_and_near_edge_kept():
    liver = np.zeros((12, 40, 40), bool)
    liver[2:10, 5:25, 5:25] = True
    tumor = np.zeros_like(liver)
    tumor[4:8, 10:14, 10:14] = True  # inside
    tumor[4:8, 25, 10:14] = True  # one voxel (0.9 mm in y) outside: within a 2 mm dilation
    tumor[4:8, 34:38, 30:36] = True  # far outside
    options = PostprocessOptions(tumor_liver_dilation_mm=2.0, tumor_min_volume_mm3=0, tumor_closing_mm=0)
    out = postprocess_tumor(tumor, liver, SPACING, options)
    expected = tumor.copy()
    expected[:, 30:, :] = False
    np.testing.assert_array_equal(out, expected)


def test_small_tumors_removed_by_volume_in_mm3():
    rng = np.random.default_rng(4)
    tumor = rng.random((16, 40, 40)) < 0.04
    tumor[3:8, 5:12, 5:12] = True
    voxel_mm3 = SPACING[0] * SPACING[1] * SPACING[2]
    labels, n = ndimage.label(tumor, structure=np.ones((3, 3, 3)))
    volumes = np.bincount(labels.ravel()) * voxel_mm3
    min_mm3 = 3 * voxel_mm3  # components of exactly 3 voxels stay (not under the minimum)
    keep = volumes >= min_mm3 - 1e-9
    keep[0] = False
    assert 0 < keep[1:].sum() < n
    np.testing.assert_array_equal(remove_small_components(tumor, min_mm3, SPACING), keep[labels])


def test_postprocess_label_records_each_step():
    label = noisy_mask(5).astype(np.uint8)
    label[8:14, 20:26, 20:26] = 2
    label[0, 0, 0] = 2  # a tumor voxel outside the liver
    record = []
    out = postprocess_label(label, SPACING, PostprocessOptions(), record)
    steps = [r["step"] for r in record]
    assert steps == ["liver_largest_component", "liver_closing", "liver_fill_holes_2d", "liver_fill_holes_3d",
                     "tumor_inside_liver", "tumor_min_volume", "tumor_closing"]
    # added/removed are true set differences (replay the liver steps with the single operations)
    masks = [label >= 1]
    masks.append(largest_component(masks[-1]))
    masks.append(binary_close_mm(masks[-1], PostprocessOptions().liver_closing_mm, SPACING))
    masks.append(fill_holes_2d(masks[-1]))
    masks.append(fill_holes_3d(masks[-1]))
    for r, before, after in zip(record, masks[:-1], masks[1:]):
        assert (r["added"], r["removed"]) == ((after & ~before).sum(), (before & ~after).sum()), r["step"]
    assert record[0]["removed"] > 0 and record[1]["added"] > 0
    assert record[-1]["voxels_after"] == int((out == 2).sum())
    assert record[3]["voxels_after"] <= int((out >= 1).sum())  # tumor may reach past the liver
    assert out[0, 0, 0] == 0 and set(np.unique(out)) <= {0, 1, 2}


def _write(array, path, spacing=SPACING, origin=(10.0, -5.0, 3.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(image, str(path))
    return image


def test_postprocess_file_writes_label_and_sidecar(tmp_path):
    label = noisy_mask(6).astype(np.uint8)
    label[8:14, 20:26, 20:26] = 2
    source = _write(label, tmp_path / "in.nrrd")
    out = tmp_path / "sub" / "out.nii.gz"
    options = PostprocessOptions(liver_closing_mm=2.0, liver_fill_holes_2d=False)
    info = postprocess_file(tmp_path / "in.nrrd", out, options)
    written = sitk.ReadImage(str(out))
    assert written.GetSpacing() == pytest.approx(source.GetSpacing())
    assert written.GetOrigin() == pytest.approx(source.GetOrigin())
    assert written.GetDirection() == pytest.approx(source.GetDirection())
    sidecar = json.loads((tmp_path / "sub" / "out.json").read_text())
    assert sidecar == json.loads(json.dumps(info))
    assert PostprocessOptions.from_dict(sidecar["options"]) == options
    assert "liver_fill_holes_2d" not in [s["step"] for s in sidecar["steps"]]
    array = sitk.GetArrayFromImage(written)
    assert sidecar["voxels"]["after"] == {"liver": int((array >= 1).sum()), "tumor": int((array == 2).sum())}
    assert sidecar["voxels"]["before"] == {"liver": int((label >= 1).sum()), "tumor": int((label == 2).sum())}
    assert sidecar_path("a/b.seg.nrrd").name == "b.json"


def test_options_refuse_negative_values():
    with pytest.raises(Exception, match="liver_closing_mm must be a finite number >= 0"):
        PostprocessOptions(liver_closing_mm=-1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", *map(str, args)], capture_output=True, text=True)


def test_cli_postprocess(tmp_path):
    label = noisy_mask(7).astype(np.uint8)
    _write(label, tmp_path / "in.nii.gz")
    run = _cli("postprocess", tmp_path / "in.nii.gz", "-o", tmp_path / "out.nrrd", "--closing-mm", "0",
               "--no-fill-holes", "--tumor-min-mm3", "5")
    assert run.returncode == 0, run.stderr
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["options"]["liver_closing_mm"] == 0 and not sidecar["options"]["liver_fill_holes_3d"]
    assert sidecar["options"]["tumor_min_volume_mm3"] == 5
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    np.testing.assert_array_equal(out.astype(bool), largest_component(label > 0))
    # help states the same defaults as PostprocessOptions
    help_text = " ".join(_cli("postprocess", "--help").stdout.split())
    d = PostprocessOptions()
    for flag, value in (("--closing-mm", d.liver_closing_mm), ("--tumor-dilation-mm", d.tumor_liver_dilation_mm),
                        ("--tumor-min-mm3", d.tumor_min_volume_mm3), ("--tumor-closing-mm", d.tumor_closing_mm)):
        section = help_text.split(f"{flag} ")[-1]
        assert f"(default {value})" in section.split(")")[0] + ")", flag
    missing = _cli("postprocess", tmp_path / "nope.nii.gz", "-o", tmp_path / "x.nii.gz")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope.nii.gz: no such file" in missing.stderr
    bad_ext = _cli("postprocess", tmp_path / "in.nii.gz", "-o", tmp_path / "out.txt")
    assert bad_ext.returncode == 2 and "out.txt: unknown output extension" in bad_ext.stderr
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("liver_at_border", [False, True])
def test_tumor_steps_equal_scipy_on_the_whole_grid(liver_at_border):
    """postprocess_tumor works in a box around the liver; scipy here works on the whole grid."""
    rng = np.random.default_rng(7)
    shape = (20, 60, 64)
    liver = np.zeros(shape, bool)
    liver[(slice(0, 12) if liver_at_border else slice(5, 14)), 15:40, 12:44] = True
    tumor = (rng.random(shape) < 0.02) | ndimage.binary_dilation(rng.random(shape) < 0.002, iterations=2)
    tumor &= ndimage.binary_dilation(liver, iterations=3)          # near and inside the liver, some gaps
    tumor[:, 50:, 50:] |= rng.random((20, 10, 14)) < 0.3            # far outside: removed
    options = PostprocessOptions(tumor_liver_dilation_mm=2.0, tumor_min_volume_mm3=6.0, tumor_closing_mm=2.0)

    allowed = ndimage.binary_dilation(liver, brute_ellipsoid(2.0, SPACING))
    inside = tumor & allowed
    labels, _ = ndimage.label(inside, structure=np.ones((3, 3, 3)))
    volumes = np.bincount(labels.ravel()) * np.prod(SPACING)
    keep = volumes >= 6.0 - 1e-9
    keep[0] = False
    kept = keep[labels]
    se = brute_ellipsoid(2.0, SPACING)
    pad = [(h, h) for h in (np.array(se.shape) // 2)]
    closed = ndimage.binary_closing(np.pad(kept, pad, mode="edge"), se)
    closed = closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, shape))] & (allowed | kept)
    out = postprocess_tumor(tumor, liver, SPACING, options)
    assert closed.sum() > kept.sum() > 0
    np.testing.assert_array_equal(out, closed)
