"""``deepliver segment``: exact output geometry, formats, sidecar, shards, progress and bad input.

The bundles here are real U-Net bundles whose weights are set so the network's answer is known
(constant logits: "everything is liver", "nothing is liver"), so the plumbing around the network —
resampling, cropping, post-processing, writing — is checked against exact expectations.
"""

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from deepliver.dataset.phantom import make_phantom
from deepliver.imaging import list_series, read_label, read_volume, same_geometry, write_dicom_series, write_volume
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle

torch = pytest.importorskip("torch")


def _constant_bundle(folder, task, foreground: bool, spatial_dims=2):
    """A U-Net bundle whose logits are constant: foreground everywhere (True) or nowhere (False)."""
    from deepliver.models.registry import build_model

    config = ModelConfig(architecture="unet", task=task, spatial_dims=spatial_dims,
                         arch_args={"channels": (4, 8), "strides": (2,), "num_res_units": 0},
                         labels={"background": 0, task: 1}, target_spacing=(1.5, 1.5, None if spatial_dims == 2 else 2.0),
                         patch_size=(32, 32) if spatial_dims == 2 else (32, 32, 16), intensity=Intensity((-100, 400)))
    net = build_model(config)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        last = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d,
                                                               torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))][-1]
        last.bias.copy_(torch.tensor([-5.0, 5.0] if foreground else [5.0, -5.0]))
        out = net(torch.zeros((1, 1) + (32,) * spatial_dims))
        assert bool((out[:, 1] > out[:, 0]).all()) == foreground  # the premise of these tests
    return save_bundle(folder, config, net.state_dict())


@pytest.fixture(scope="module")
def seg_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    phantom = make_phantom(seed=3, shape=(40, 36, 10), spacing=(0.8, 0.75, 2.5),
                           direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    nifti = write_volume(phantom.image, root / "ct.nii.gz")
    dicom = root / "dicom"
    write_dicom_series(phantom.image, dicom, uid_seed=7)
    return {"root": root, "image": phantom.image, "nifti": nifti, "dicom": dicom,
            "liver_all": _constant_bundle(root / "liver_all", "liver", True),
            "liver_none": _constant_bundle(root / "liver_none", "liver", False),
            "tumor_all": _constant_bundle(root / "tumor_all", "tumor", True),
            "tumor_none": _constant_bundle(root / "tumor_none", "tumor", False)}


def _run(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", "segment", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_output_has_the_input_geometry_and_sidecar(seg_case, tmp_path):
    out = tmp_path / "out.nrrd"
    result = _run(seg_case["nifti"], "-o", out, "--liver-model", seg_case["liver_all"],
                  "--tumor-model", seg_case["tumor_none"], "--device", "cpu")
    assert result.returncode == 0, result.stderr
    label = read_label(out)
    image = read_volume(seg_case["nifti"])
    assert same_geometry(label, image, tol=1e-6)
    array = sitk.GetArrayFromImage(label)
    assert (array == 1).all()  # liver everywhere, no tumor
    sidecar = json.loads((tmp_path / "out.json").read_text())
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    assert sidecar["liver_ml"] == pytest.approx(array.size * voxel_ml, rel=1e-4)
    assert sidecar["tumor_ml"] == 0 and sidecar["lesion_count"] == 0
    assert [s["step"] for s in sidecar["postprocess_steps"]][:2] == ["liver_largest_component_model_grid",
                                                                     "liver_largest_component"]


def test_tumor_stays_inside_the_liver_roi(seg_case, tmp_path):
    out = tmp_path / "out.nii.gz"
    result = _run(seg_case["nifti"], "-o", out, "--liver-model", seg_case["liver_all"],
                  "--tumor-model", seg_case["tumor_all"], "--device", "cpu", "--progress", "json")
    assert result.returncode == 0, result.stderr
    array = sitk.GetArrayFromImage(read_label(out))
    assert (array == 2).all()
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    stages = [l["stage"] for l in lines]
    assert "liver" in stages and "tumor" in stages
    assert all(set(l) == {"stage", "done", "total"} and 0 <= l["done"] <= l["total"] for l in lines)


def test_no_liver_writes_zeros_and_says_so(seg_case, tmp_path):
    out = tmp_path / "none.nii.gz"
    result = _run(seg_case["dicom"], "-o", out, "--liver-model", seg_case["liver_none"], "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "no liver found" in result.stderr
    label = read_label(out)
    assert not sitk.GetArrayFromImage(label).any()
    assert same_geometry(label, read_volume(seg_case["dicom"]))  # NIfTI stores geometry in float32


def test_dicom_seg_references_the_source_series(seg_case, tmp_path):
    out = tmp_path / "seg"
    result = _run(seg_case["dicom"], "-o", out, "--format", "dicom-seg", "--liver-model", seg_case["liver_all"],
                  "--device", "cpu")
    assert result.returncode == 0, result.stderr
    ds = pydicom.dcmread(out / "segmentation.dcm")
    source = list_series(seg_case["dicom"])[0]
    assert ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_uid
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "tumor"]
    liver_code = ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (liver_code.CodeValue, liver_code.CodingSchemeDesignator) == ("10200004", "SCT")
    # every source slice is fully liver: one frame per slice for segment 1, all ones
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    assert frames.shape[0] == source.num_slices and frames.all()


def test_folder_input_with_shards(seg_case, tmp_path):
    inputs = tmp_path / "in"
    for name in ("a", "b", "c"):
        write_volume(seg_case["image"], inputs / f"{name}.nii.gz")
    out = tmp_path / "out"
    result = _run(inputs, "-o", out, "--liver-model", seg_case["liver_all"], "--shard", "1/2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "b.nii.gz"]


@pytest.mark.parametrize("args, message", [
    (["--liver-model", "{tumor_all}"], "this is a tumor model, but a liver model is needed"),
    (["--liver-model", "{liver_all}", "--tumor-model", "{liver_none}"], "this is a liver model, but a tumor"),
    (["--liver-model", "{liver_all}", "--shard", "2/2"], "--shard must be i/n"),
    (["--liver-model", "{root}/missing"], "no such model bundle folder"),
])
def test_bad_input_is_one_line_and_exit_2(seg_case, tmp_path, args, message):
    args = [a.format(**{k: str(v) for k, v in seg_case.items()}) for a in args]
    out = tmp_path / "x.nii.gz"
    result = _run(seg_case["nifti"], "-o", out, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_unknown_output_extension(seg_case, tmp_path):
    result = _run(seg_case["nifti"], "-o", tmp_path / "x.png", "--liver-model", seg_case["liver_all"])
    assert result.returncode == 2
    assert "unknown output extension" in result.stderr


@pytest.mark.parametrize("margin", [-5.0, "ten"])
def test_a_bundle_with_a_bad_crop_margin_is_one_line_naming_its_model_json(seg_case, tmp_path, margin):
    """A hand-edited tumor bundle whose crop margin is negative or not a number: the cascade would cut the liver
    box smaller than the liver, so the bundle is refused when read, naming its model.json."""
    import json
    import shutil

    bundle = shutil.copytree(seg_case["tumor_all"], tmp_path / "tumor_edited")
    config = json.loads((bundle / "model.json").read_text())
    config["crop_margin_mm"] = margin
    (bundle / "model.json").write_text(json.dumps(config))
    out = tmp_path / "x.nii.gz"
    result = _run(seg_case["nifti"], "-o", out, "--liver-model", seg_case["liver_all"], "--tumor-model", bundle)
    assert result.returncode == 2, result.stderr
    assert f"{bundle / 'model.json'}: crop_margin_mm must be a finite number >= 0 (mm), got {margin!r}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
