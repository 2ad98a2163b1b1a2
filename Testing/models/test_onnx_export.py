"""ONNX export of U-Net bundles: the verb on an old bundle, the agreement check, failures that keep the bundle."""

import json
import subprocess
import sys

import numpy as np
import pytest

from deepliver.models.bundle import (MODEL_JSON, ONNX_FILE, WEIGHTS_FILE, BundleError, Intensity, ModelConfig,
                                     save_bundle)

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def _old_bundle(folder, spatial_dims=2, seed=0):
    """A random-init U-Net bundle as deepliver wrote them before ONNX export (no model.onnx, no runtimes)."""
    from deepliver.models.registry import build_model

    config = ModelConfig(architecture="unet", task="liver", spatial_dims=spatial_dims,
                         arch_args={"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1, "out_channels": 2},
                         labels={"background": 0, "liver": 1}, in_channels=3 if spatial_dims == 2 else 1,
                         patch_size=(32, 32) if spatial_dims == 2 else (16, 16, 8), intensity=Intensity((-100, 400)),
                         inference={"divisor": 4})
    torch.manual_seed(seed)
    module = build_model(config).eval()
    save_bundle(folder, config, module.state_dict())
    return folder, module


@pytest.mark.parametrize("dims", [2, 3])
def test_export_verb_on_an_old_bundle_records_the_opset_and_runs_other_sizes(tmp_path, dims):
    bundle, module = _old_bundle(tmp_path / "b", dims)
    before = json.loads((bundle / MODEL_JSON).read_text())
    assert before["runtimes"] == {} and not (bundle / ONNX_FILE).exists()
    if dims == 2:   # the verb (a subprocess: importing torch and monai takes seconds), 3D by the function
        result = subprocess.run([sys.executable, "-m", "deepliver", "bundle", "export-onnx", str(bundle)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"wrote {bundle / ONNX_FILE} (opset 17" in result.stderr
    else:
        from deepliver.models.onnx_export import export_onnx
        export_onnx(bundle)
    after = json.loads((bundle / MODEL_JSON).read_text())
    record = after["runtimes"]["onnx"]
    spatial = ["y", "x"] if dims == 2 else ["z", "y", "x"]
    assert record["file"] == ONNX_FILE and record["opset"] == 17
    assert record["input_shape"] == ["batch", 3 if dims == 2 else 1, *spatial]
    assert record["dynamic_axes"] == ["batch", *spatial]
    assert 0 <= record["max_abs_diff"] <= 1e-4
    assert {k: v for k, v in after.items() if k != "runtimes"} == {k: v for k, v in before.items() if k != "runtimes"}
    # the file is what its record says (read by the onnx package, independently of onnxruntime) ...
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(bundle / ONNX_FILE))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims_proto = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims_proto] == record["input_shape"]
    # ... and it runs batch and spatial sizes other than the export's, as torch does
    session = ort.InferenceSession(str(bundle / ONNX_FILE), providers=["CPUExecutionProvider"])
    shape = (3, 3, 44, 60) if dims == 2 else (2, 1, 24, 20, 12)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (shape[0], 2, *shape[2:])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_export_is_refused_when_the_runtimes_disagree(tmp_path):
    from deepliver.models.onnx_export import export_onnx

    bundle, _ = _old_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match=r"ONNX export refused: onnxruntime and torch outputs differ by .* on a "
                                          r"sample input \(accepted: <= 1e-12\); model.onnx not written"):
        export_onnx(bundle, atol=1e-12)     # float32 arithmetic differs a little: the check must see it
    assert not (bundle / ONNX_FILE).exists()
    assert sorted(p.name for p in bundle.iterdir()) == [MODEL_JSON, WEIGHTS_FILE]   # no temporary left behind
    assert json.loads((bundle / MODEL_JSON).read_text())["runtimes"] == {}


def test_a_failed_export_after_training_keeps_the_bundle_and_records_why(tmp_path):
    from deepliver.models.onnx_export import try_export_onnx

    bundle, _ = _old_bundle(tmp_path / "b")
    weights = (bundle / WEIGHTS_FILE).read_bytes()
    data = json.loads((bundle / MODEL_JSON).read_text())
    data["arch_args"]["channels"] = [4, 8, 32]           # model.json no longer fits the weights
    (bundle / MODEL_JSON).write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"ONNX export failed, the bundle runs with --runtime torch only"):
        record = try_export_onnx(bundle)
    assert record["file"] is None and "weights do not fit the network" in record["error"]
    assert json.loads((bundle / MODEL_JSON).read_text())["runtimes"]["onnx"] == record
    assert (bundle / WEIGHTS_FILE).read_bytes() == weights and not (bundle / ONNX_FILE).exists()


def test_detector_bundles_record_that_they_have_no_onnx(tmp_path):
    from deepliver.inference.predict import load_model
    from deepliver.models.onnx_export import export_onnx, onnx_unsupported

    config = ModelConfig(architecture="fasterrcnn", task="tumor", spatial_dims=2)
    onnx_unsupported(config, "torchvision detection post-processing is not exported")
    save_bundle(tmp_path / "det", config, {})
    assert json.loads((tmp_path / "det" / MODEL_JSON).read_text())["runtimes"]["onnx"] == {
        "file": None, "supported": False, "reason": "torchvision detection post-processing is not exported"}
    with pytest.raises(BundleError, match=r"this fasterrcnn bundle has no ONNX export \(torchvision detection "
                                          r"post-processing is not exported\); run it with --runtime torch"):
        load_model(tmp_path / "det", runtime="onnx")
    with pytest.raises(BundleError, match=r"cannot export a 'fasterrcnn' bundle to ONNX"):
        export_onnx(tmp_path / "det")
