"""``deepliver segment --runtime onnx`` where torch cannot be imported gives the torch runtime's label.

The bundles are small random-init U-Nets (2D and 3D) exported with ``deepliver.models.onnx_export``:
random weights give a non-constant label, which is what a runtime comparison needs. The torch-free runs
use a ``sitecustomize`` whose meta-path finder raises ImportError for torch, torchvision and monai.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.dataset.phantom import make_phantom
from deepliver.imaging import write_volume
from deepliver.inference.runtime import choose_runtime
from deepliver.inference.segment import SegmentOptions, segment
from deepliver.models.bundle import MODEL_JSON, ONNX_FILE, Intensity, ModelConfig, read_bundle_config, save_bundle

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

BLOCKER = """
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked by the test: " + name)
        return None

sys.meta_path.insert(0, _Blocked())
"""


def random_unet_bundle(folder, task, spatial_dims, seed, export=True, in_channels=None):
    """A random-init U-Net bundle (2D: 3 context channels; 3D: patch 32x32x16), exported to ONNX."""
    from deepliver.models.onnx_export import export_onnx
    from deepliver.models.registry import build_model

    config = ModelConfig(architecture="unet", task=task, spatial_dims=spatial_dims,
                         arch_args={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1,
                                    "out_channels": 2},
                         labels={"background": 0, task: 1},
                         in_channels=in_channels or (3 if spatial_dims == 2 else 1),
                         target_spacing=(1.5, 1.5, None) if spatial_dims == 2 else (2.0, 2.0, 2.0),
                         patch_size=(64, 64) if spatial_dims == 2 else (32, 32, 16), intensity=Intensity((-100, 400)),
                         crop_margin_mm=5.0, inference={"batch_size": 8, "overlap": 0.25, "blend": "gaussian",
                                                        "divisor": 4})
    torch.manual_seed(seed)
    save_bundle(folder, config, build_model(config).state_dict())
    if export:
        export_onnx(folder)
    return folder


def blocked_env(tmp_path, blocked=("torch", "torchvision", "monai")):
    site = tmp_path / f"site_{'_'.join(blocked)}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=tuple(blocked))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_segment(image, out, liver, tumor, runtime, env=None):
    return subprocess.run([sys.executable, "-m", "deepliver", "segment", str(image), "-o", str(out),
                           "--liver-model", str(liver), "--tumor-model", str(tumor), "--runtime", runtime,
                           "--device", "cpu", "--threads", "1", "--progress", "none"],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def onnx_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    phantom = make_phantom(seed=5, shape=(64, 64, 32), spacing=(0.9, 0.85, 2.0),
                           direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    bundles = {dims: (random_unet_bundle(root / f"liver{dims}d", "liver", dims, seed=10 + dims),
                      random_unet_bundle(root / f"tumor{dims}d", "tumor", dims, seed=20 + dims))
               for dims in (2, 3)}
    return {"root": root, "ct": write_volume(phantom.image, root / "ct.nii.gz"), "bundles": bundles}


def test_the_import_blocker_works(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True,
                            env=blocked_env(tmp_path), timeout=60)
    assert result.returncode != 0 and "blocked by the test: torch" in result.stderr


@pytest.mark.parametrize("dims", [2, 3])
def test_onnx_without_torch_gives_the_torch_label(onnx_case, tmp_path, dims):
    liver, tumor = onnx_case["bundles"][dims]
    torch_options = SegmentOptions(device="cpu", runtime="torch")                   # in-process: torch is here
    [ref] = segment(onnx_case["ct"], tmp_path / "torch.nii.gz", liver, tumor, torch_options)
    assert ref.info["runtime"] == "torch"
    got = run_segment(onnx_case["ct"], tmp_path / "onnx.nii.gz", liver, tumor, "onnx", env=blocked_env(tmp_path))
    assert got.returncode == 0, got.stderr
    assert "runtime: onnx on cpu (asked for)" in got.stderr
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "torch.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "onnx.nii.gz")))
    assert set(np.unique(a)) == {0, 1, 2}, "the comparison needs liver and tumor in the label"
    assert np.count_nonzero(a != b) <= 1e-4 * a.size
    sidecar = json.loads((tmp_path / "onnx.json").read_text())
    assert sidecar["runtime"] == "onnx" and sidecar["runtime_reason"] == "asked for"


def test_auto_picks_onnx_on_cpu_when_the_bundles_have_it(onnx_case, tmp_path):
    liver, tumor = onnx_case["bundles"][2]
    got = run_segment(onnx_case["ct"], tmp_path / "auto.nii.gz", liver, tumor, "auto", env=blocked_env(tmp_path))
    assert got.returncode == 0, got.stderr
    sidecar = json.loads((tmp_path / "auto.json").read_text())
    assert (sidecar["runtime"], sidecar["device"]) == ("onnx", "cpu")
    assert "every bundle has model.onnx" in sidecar["runtime_reason"]


def test_bundle_without_onnx_says_how_to_export(onnx_case, tmp_path):
    liver = random_unet_bundle(tmp_path / "old_liver", "liver", 2, seed=1, export=False)
    _, tumor = onnx_case["bundles"][2]
    got = run_segment(onnx_case["ct"], tmp_path / "x.nii.gz", liver, tumor, "onnx", env=blocked_env(tmp_path))
    assert got.returncode == 2, got.stderr
    assert f"model.onnx is missing: export it with `deepliver bundle export-onnx {liver}`" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1 and "Traceback" not in got.stderr
    bundles = [(b, read_bundle_config(b)) for b in (liver, tumor)]
    choice = choose_runtime("auto", "cpu", bundles)                                  # auto falls back to torch
    assert (choice.runtime, choice.device, choice.reason) == ("torch", "cpu", f"no model.onnx in {liver}")


def test_onnx_file_of_another_shape_is_refused(onnx_case, tmp_path):
    import shutil

    liver2d, tumor = onnx_case["bundles"][2]
    liver = tmp_path / "mixed"
    shutil.copytree(liver2d, liver)
    shutil.copy(onnx_case["bundles"][3][0] / ONNX_FILE, liver / ONNX_FILE)     # a 3D file in a 2D bundle
    got = run_segment(onnx_case["ct"], tmp_path / "x.nii.gz", liver, tumor, "onnx", env=blocked_env(tmp_path))
    assert got.returncode == 2, got.stderr
    assert "model.onnx does not match model.json: 3D input" in got.stderr
    assert f"re-export it: deepliver bundle export-onnx {liver}" in got.stderr
    # same rank, other channel count: the file of a 1-channel network under in_channels 3
    assert json.loads((liver2d / MODEL_JSON).read_text())["in_channels"] == 3
    other = random_unet_bundle(tmp_path / "one_channel", "liver", 2, seed=2, in_channels=1)
    shutil.copy(other / ONNX_FILE, liver / ONNX_FILE)
    got = run_segment(onnx_case["ct"], tmp_path / "x.nii.gz", liver, tumor, "onnx", env=blocked_env(tmp_path))
    assert got.returncode == 2, got.stderr
    assert "model.onnx does not match model.json: 1 input channel(s) but model.json says in_channels 3" in got.stderr


def test_missing_onnxruntime_gives_the_install_command(onnx_case, tmp_path):
    liver, tumor = onnx_case["bundles"][2]
    env = blocked_env(tmp_path, blocked=("torch", "torchvision", "monai", "onnxruntime"))
    got = run_segment(onnx_case["ct"], tmp_path / "x.nii.gz", liver, tumor, "onnx", env=env)
    assert got.returncode == 2, got.stderr
    assert got.stderr.strip().splitlines()[-1] == ("deepliver segment: error: onnxruntime is not installed: "
                                                    "pip install onnxruntime")
    auto = run_segment(onnx_case["ct"], tmp_path / "y.nii.gz", liver, tumor, "auto", env=env)
    assert auto.returncode == 2, auto.stderr
    assert "onnxruntime is not installed, and torch is not installed (pip install onnxruntime" in auto.stderr
