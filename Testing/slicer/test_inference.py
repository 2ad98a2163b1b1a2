"""The AI segmentation's pure-Python pieces (SlicerDeepLiverLib.inference / process / bundles), outside
Slicer, against the real ``deepliver`` CLI: command building checked by the CLI's own parser, progress
lines as ``deepliver.progress.Reporter`` writes them, bundles written by ``save_bundle`` and trained by
``deepliver.train``, and real ``python -m deepliver segment`` subprocesses run, finished and cancelled.
"""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.cli import build_parser
from deepliver.models.bundle import BundleError, ModelConfig, save_bundle
from deepliver.progress import Reporter
from SlicerDeepLiverLib import bundles, inference, process
from SlicerDeepLiverLib.inference import Progress, SegmentRequest


# --- command ---------------------------------------------------------------------------------------------
def test_command_is_what_the_segment_verb_parses(tmp_path):
    request = SegmentRequest(tmp_path / "in put.nrrd", tmp_path / "out.nii.gz", tmp_path / "liver",
                             tmp_path / "tumor", device="cpu", threads=2, python="/opt/PythonSlicer")
    command = inference.build_command(request)
    assert command[:4] == ["/opt/PythonSlicer", "-m", "deepliver", "segment"]
    args = build_parser().parse_args(command[3:])
    assert (args.verb, args.input, args.output) == ("segment", request.input, request.output)
    assert (args.liver_model, args.tumor_model, args.runtime, args.device, args.threads, args.progress) == \
           (request.liver_model, request.tumor_model, "onnx", "cpu", 2, "json")  # the CPU needs no torch
    liver_only = build_parser().parse_args(inference.build_command(
        SegmentRequest(request.input, request.output, request.liver_model, python="py"))[3:])
    assert (liver_only.tumor_model, liver_only.runtime, liver_only.device, liver_only.threads) == \
           (None, "auto", "auto", None)
    gpu = build_parser().parse_args(inference.build_command(
        SegmentRequest(request.input, request.output, request.liver_model, device="cuda", python="py"))[3:])
    assert (gpu.runtime, gpu.device) == ("torch", "cuda")
    forced = build_parser().parse_args(inference.build_command(
        SegmentRequest(request.input, request.output, request.liver_model, device="cpu", python="py",
                       runtime="torch"))[3:])
    assert (forced.runtime, forced.device) == ("torch", "cpu")


@pytest.mark.parametrize("device, threads, runtime, message", [
    ("gpu", None, None, "device must be one of auto, cpu, cuda"),
    ("cpu", 0, None, "threads must be at least 1"),
    ("cpu", None, "tensorrt", "runtime must be one of auto, torch, onnx, got 'tensorrt'")])
def test_command_refuses_bad_options(tmp_path, device, threads, runtime, message):
    with pytest.raises(ValueError, match=message):
        inference.build_command(SegmentRequest(tmp_path / "a.nrrd", tmp_path / "b.nii.gz", tmp_path, None,
                                               device, threads, runtime=runtime))


def test_python_executable_prefers_python_slicer():
    assert inference.python_executable("/s/bin/PythonSlicer", lambda name: "/other") == "/s/bin/PythonSlicer"
    assert inference.python_executable("/s/bin/SlicerApp-real", lambda name: f"/s/bin/{name}") == "/s/bin/PythonSlicer"
    assert inference.python_executable("/usr/bin/python3", lambda name: None) == "/usr/bin/python3"


# --- progress lines --------------------------------------------------------------------------------------
def test_progress_lines_written_by_the_reporter_parse_back():
    stream = io.StringIO()
    reporter = Reporter("json", stream)
    sent = [("read", 0, 1), ("liver", 3, 80), ("tumor", 0, 0), ("write", 1, 1)]
    for stage, done, total in sent:
        reporter(stage, done, total)
    parsed = [inference.parse_progress_line(line) for line in stream.getvalue().splitlines()]
    assert parsed == [Progress(*item) for item in sent]


@pytest.mark.parametrize("line", [
    "", "   ", "liver:  40%|####      | 32/80 [00:02<00:03]", "WARNING: torch.cuda not available",
    '{"stage": "liver", "done": 1}', '{"stage": "liver", "done": 1, "tot', '{"stage": 3, "done": 1, "total": 2}',
    '{"stage": "", "done": 1, "total": 2}', '{"stage": "liver", "done": true, "total": 2}',
    '{"stage": "liver", "done": -1, "total": 2}', '{"stage": "liver", "done": 1.5, "total": 2}',
    '[{"stage": "liver", "done": 1, "total": 2}]', '{"stage": "liver", "done": "1", "total": 2}'])
def test_anything_but_a_well_formed_progress_object_is_not_progress(line):
    assert inference.parse_progress_line(line) is None


def test_progress_line_tolerates_surrounding_whitespace_and_crlf():
    assert inference.parse_progress_line('  {"stage": "tumor", "done": 2, "total": 4}\r\n') == Progress("tumor", 2, 4)


def test_overall_percent_follows_the_stages():
    pct = inference.overall_percent
    # read 5 %, liver 55 %, tumor 35 %, write 5 % (hand-computed, not read from the code)
    assert [pct(Progress("read", 0, 1)), pct(Progress("liver", 0, 4)), pct(Progress("liver", 4, 4)),
            pct(Progress("tumor", 2, 4)), pct(Progress("write", 1, 1))] == [0, 5, 60, 78, 100]
    # without a tumor model: liver ends at (5 + 55) / 65
    assert pct(Progress("liver", 4, 4), has_tumor=False) == 92
    assert pct(Progress("write", 1, 1), has_tumor=False) == 100
    assert pct(Progress("tumor", 1, 2), has_tumor=False) is None
    assert pct(Progress("export", 1, 2)) is None
    assert pct(Progress("liver", 9, 4)) == 60 and pct(Progress("tumor", 0, 0)) == 95
    spans = inference.stage_spans(True)
    assert sum(width for _, width in spans.values()) == pytest.approx(100)


def test_tracker_reads_interleaved_output_and_never_goes_back():
    lines = ["Loading model ...", '{"stage": "read", "done": 0, "total": 1}',
             '{"stage": "liver", "done": 2, "total": 4}', "liver:  50%|#####     | 2/4",
             '{"stage": "liver", "done": 1, "total": 4}',  # out of order: the bar must not move back
             '{"stage": "liver", "done": 4, "to', "", '{"stage": "write", "done": 1, "total": 1}']
    tracker = inference.ProgressTracker(has_tumor=False)
    seen = []
    for line in lines:
        tracker.feed(line)
        seen.append(tracker.percent)
    assert seen == sorted(seen) and seen[-1] == 100
    assert tracker.progress_lines == 4 and tracker.stage == "write"
    assert list(tracker.other_lines) == ["Loading model ...", "liver:  50%|#####     | 2/4",
                                         '{"stage": "liver", "done": 4, "to']


# --- bundles ---------------------------------------------------------------------------------------------
def _bundle(folder, task, dice, created, arch_args=None):
    import torch

    config = ModelConfig(architecture="unet", task=task, spatial_dims=2, labels={"background": 0, task: 1},
                         validation={} if dice is None else {"metric": "dice", "dice": dice}, created=created,
                         arch_args=arch_args or {"channels": [4, 8], "strides": [2]})
    return save_bundle(folder, config, {"w": torch.zeros(2)})


def test_bundles_are_listed_liver_first_best_dice_then_newest(tmp_path):
    _bundle(tmp_path / "tumor-a", "tumor", 0.61, "2026-03-01T10:00:00+00:00")
    _bundle(tmp_path / "liver-old", "liver", 0.90, "2025-12-24T08:00:00+00:00")
    _bundle(tmp_path / "liver-new", "liver", 0.90, "2026-02-02T09:00:00+00:00")
    _bundle(tmp_path / "liver-best", "liver", 0.95, "2024-01-01T00:00:00+00:00")
    _bundle(tmp_path / "liver-nodice", "liver", None, "2026-05-05T00:00:00+00:00")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    (tmp_path / "notes").mkdir()
    found = bundles.list_bundles(tmp_path)
    assert [b.name for b in found] == ["liver-best", "liver-new", "liver-old", "liver-nodice", "tumor-a"]
    assert found[0].row() == ("liver-best", "liver", "unet 2D", "0.950", "2024-01-01")
    assert found[3].row()[3] == "" and found[4].provenance()["deepliver_version"] == found[4].version
    liver, tumor = bundles.choose_bundles(found, tmp_path)
    assert (liver.name, tumor.name) == ("liver-best", "tumor-a")
    liver, tumor = bundles.choose_bundles(found, tmp_path, liver="liver-old", use_tumor=False)
    assert (liver.name, tumor) == ("liver-old", None)
    started = bundles.model_provenance(*bundles.choose_bundles(found, tmp_path), device="cpu")
    assert started["kind"] == "model" and started["bundle"] == "liver-best + tumor-a"
    assert [m["task"] for m in started["models"]] == ["liver", "tumor"]
    json.dumps(started)  # goes into the manifest as is


def test_no_bundle_says_where_it_looked_and_how_to_get_one(tmp_path):
    with pytest.raises(bundles.NoBundleError) as e:
        bundles.choose_bundles(bundles.list_bundles(tmp_path), tmp_path)
    assert str(tmp_path) in str(e.value) and "deepliver train" in str(e.value)
    _bundle(tmp_path / "only-tumor", "tumor", 0.5, "2026-01-01T00:00:00+00:00")
    with pytest.raises(bundles.NoBundleError, match=r"holds no liver model, only: only-tumor \(tumor\)"):
        bundles.choose_bundles(bundles.list_bundles(tmp_path), tmp_path)
    _bundle(tmp_path / "liver-1", "liver", 0.5, "2026-01-01T00:00:00+00:00")
    with pytest.raises(bundles.NoBundleError, match="'only-tumor' is a tumor model; pick one of: liver-1"):
        bundles.choose_bundles(bundles.list_bundles(tmp_path), tmp_path, liver="only-tumor")


def test_bundles_of_the_wrong_task_are_refused(tmp_path):
    liver = _bundle(tmp_path / "l", "liver", 0.5, "2026-01-01T00:00:00+00:00")
    tumor = _bundle(tmp_path / "t", "tumor", 0.5, "2026-01-01T00:00:00+00:00")
    bundles.check_bundle_tasks(liver, tumor)
    with pytest.raises(BundleError, match="this is a tumor model, but a liver model is needed"):
        bundles.check_bundle_tasks(tumor, liver)


def test_default_models_folder_is_beside_the_settings_file(tmp_path):
    settings = tmp_path / "slicer.org" / "Slicer.ini"
    assert bundles.default_models_folder(settings) == tmp_path / "slicer.org" / "DeepLiverModels"


# --- sidecar summary, intensity check, device probe ------------------------------------------------------
def test_summary_reads_a_sidecar_and_names_a_bad_one(tmp_path):
    sidecar = tmp_path / "out.json"
    sidecar.write_text(json.dumps({"liver_found": True, "liver_ml": 1510.25, "tumor_ml": 12.5, "lesion_count": 3,
                                   "device": "cpu", "timings": {"liver_model_s": 1.5, "tumor_model_s": 0.5}}))
    summary = inference.read_summary(sidecar)
    assert (summary.liver_ml, summary.tumor_ml, summary.lesion_count, summary.seconds) == (1510.25, 12.5, 3, 2.0)
    assert "liver 1510.2 mL, tumor 12.5 mL, 3 lesion(s) (cpu)" in inference.summary_text(summary)  # no runtime
    for runtime, device, shown in (("onnx", "cpu", "(ONNX Runtime on cpu)"), ("torch", "cuda", "(PyTorch on cuda)")):
        sidecar.write_text(json.dumps({"liver_found": True, "liver_ml": 1, "tumor_ml": 0, "lesion_count": 0,
                                       "device": device, "runtime": runtime}))
        summary = inference.read_summary(sidecar)
        assert summary.runtime == runtime and shown in inference.summary_text(summary)
    sidecar.write_text(json.dumps({"liver_found": False, "liver_ml": 0, "tumor_ml": 0, "lesion_count": 0}))
    assert "found no liver" in inference.summary_text(inference.read_summary(sidecar))
    sidecar.write_text(json.dumps({"liver_found": True}))
    with pytest.raises(ValueError, match=f"{sidecar}: not a readable segmentation summary.*liver_ml"):
        inference.read_summary(sidecar)


def test_ct_warning_flags_volumes_that_are_not_hounsfield_ct(phantom):
    ct = sitk.GetArrayFromImage(phantom.image).astype(np.int16)
    assert inference.ct_warning(ct) is None
    padded = ct.copy()
    padded[:, :5, :5] = -3024  # scanner padding outside the field of view is not a problem
    assert inference.ct_warning(padded) is None
    unrescaled = ct.astype(np.int32) + 1024  # stored values without the rescale intercept
    message = inference.ct_warning(unrescaled)
    assert "nothing below -50 HU" in message and f"from {int(unrescaled.min())} to {int(unrescaled.max())}" in message
    mr = np.random.default_rng(0).uniform(0, 1500, size=(8, 16, 16))
    assert "nothing below -50 HU" in inference.ct_warning(mr)
    assert "values outside -1100 to 4000 HU" in inference.ct_warning(ct.astype(np.float32) * 10)
    assert "padding only" in inference.ct_warning(np.full((2, 3, 4), -3024))


def _probe(prefix=""):
    command = inference.device_probe_command(sys.executable)
    command[-1] = prefix + command[-1]
    probe = process.BackgroundProcess(command)
    lines = []
    while not probe.finished:
        lines += probe.read()
        probe.process.wait(timeout=120)
    lines += probe.read()
    stdout = "\n".join(line for stream, line in lines if stream == "stdout")
    return inference.parse_device_probe(probe.returncode, stdout, "")


def test_device_probe_reports_what_torch_sees():
    import torch

    report = _probe()
    nvidia = os.path.exists("/proc/driver/nvidia/version")  # Linux: where the driver announces itself
    assert report.torch == torch.__version__ and report.cuda == torch.cuda.is_available()
    assert report.nvidia == nvidia and not report.gpu_needs_torch
    assert report.devices == (("cuda", "cpu") if report.cuda else ("cpu",))
    missing = inference.parse_device_probe(1, "", "Traceback ...\nModuleNotFoundError: No module named 'torch'\n")
    assert (missing.torch, missing.devices, missing.error) == (None, ("cpu",),
                                                               "ModuleNotFoundError: No module named 'torch'")


def test_device_probe_without_torch_never_imports_it_and_offers_the_gpu_only_with_a_driver():
    # sys.modules["torch"] = None: find_spec says "not installed", and any import of torch would fail
    report = _probe("import sys; sys.modules['torch'] = None\n")
    assert (report.torch, report.cuda, report.error) == (None, False, "")
    assert report.nvidia == os.path.exists("/proc/driver/nvidia/version")
    with_driver = inference.parse_device_probe(0, json.dumps({"torch": None, "cuda": False, "gpus": [],
                                                              "nvidia": True}), "")
    assert with_driver.gpu_needs_torch and with_driver.devices == ("cpu", "cuda")  # the CPU stays the default
    without = inference.parse_device_probe(0, json.dumps({"torch": None, "cuda": False, "gpus": [],
                                                          "nvidia": False}), "")
    assert not without.gpu_needs_torch and without.devices == ("cpu",)


# --- real runs -------------------------------------------------------------------------------------------
@pytest.fixture
def ct_file(tmp_path, phantom):
    path = tmp_path / "work" / "input.nrrd"
    path.parent.mkdir()
    sitk.WriteImage(phantom.image, str(path))
    return path


def _request(ct_file, tiny_bundles, tumor=True):
    return SegmentRequest(ct_file, ct_file.parent / "result.nii.gz", tiny_bundles["liver"],
                          tiny_bundles["tumor"] if tumor else None, device="cpu", threads=1, python=sys.executable)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


TORCH_BLOCKER = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "monai"):
            raise ImportError(f"{name} is blocked in this test (Slicer's Python without PyTorch)")
sys.meta_path.insert(0, _Blocker())
"""


def _env_without_torch(folder):
    """An environment whose Python cannot import torch, torchvision or monai (a ``sitecustomize``)."""
    site = folder / "no-torch-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(TORCH_BLOCKER)
    return {**_env(), "PYTHONPATH": os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


def test_a_real_run_is_followed_to_the_end(ct_file, tiny_bundles, phantom, tmp_path):
    # the module's CPU run (--runtime onnx) in a Python without torch, as after the one-click install
    run = process.SegmentationRun(_request(ct_file, tiny_bundles), env=_env_without_torch(tmp_path)).start()
    stages, percents = [], []

    def record(r):
        percents.append(r.percent)
        if r.stage and (not stages or stages[-1] != r.stage):
            stages.append(r.stage)

    assert run.wait(interval_s=0.05, timeout_s=300, on_poll=record) == process.DONE, run.error
    record(run)
    assert stages[-1] == "write" and set(stages) <= {"read", "liver", "tumor", "write"}
    assert percents == sorted(percents) and run.percent == 100 and run.tracker.progress_lines >= 4
    label = sitk.ReadImage(str(run.request.output))
    assert label.GetSize() == phantom.image.GetSize()
    assert np.allclose(label.GetSpacing(), phantom.image.GetSpacing()) and np.allclose(label.GetOrigin(),
                                                                                       phantom.image.GetOrigin())
    array = sitk.GetArrayFromImage(label)
    voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
    assert run.summary.liver_ml == pytest.approx(np.count_nonzero(array >= 1) * voxel_ml, abs=1e-3)
    assert run.summary.tumor_ml == pytest.approx(np.count_nonzero(array == 2) * voxel_ml, abs=1e-3)
    assert (run.summary.device, run.summary.runtime) == ("cpu", "onnx")
    assert "(ONNX Runtime on cpu)" in inference.summary_text(run.summary)


def test_cancel_after_the_first_progress_line_leaves_nothing(ct_file, tiny_bundles):
    run = process.SegmentationRun(_request(ct_file, tiny_bundles), env=_env()).start()

    def cancel_on_progress(r):
        if r.tracker.progress_lines >= 1:
            r.cancel()

    assert run.wait(interval_s=0.01, timeout_s=300, on_poll=cancel_on_progress) == process.CANCELLED
    assert run.process.returncode != 0
    with pytest.raises(ProcessLookupError):  # no process of its group is left (children included)
        os.killpg(run.process.pid, 0)
    assert sorted(p.name for p in ct_file.parent.iterdir()) == ["input.nrrd"]


def test_a_failing_run_shows_the_error_line_and_leaves_nothing(ct_file, tiny_bundles):
    swapped = SegmentRequest(ct_file, ct_file.parent / "result.nii.gz", tiny_bundles["tumor"], None,
                             device="cpu", python=sys.executable)
    run = process.SegmentationRun(swapped, env=_env()).start()
    assert run.wait(interval_s=0.05, timeout_s=300) == process.FAILED
    assert "exit code 2" in run.error and "this is a tumor model, but a liver model is needed" in run.error
    assert sorted(p.name for p in ct_file.parent.iterdir()) == ["input.nrrd"]


CHILD_THEN_PROGRESS = """
import json, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(json.dumps({"child": child.pid}), flush=True)
print(json.dumps({"stage": "liver", "done": 0, "total": 4}), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups (Windows uses taskkill /T)")
def test_kill_tree_ends_the_grandchildren_too():
    bg = process.BackgroundProcess([sys.executable, "-c", CHILD_THEN_PROGRESS])
    lines = []
    while not any(inference.parse_progress_line(line) for _, line in lines):
        lines += bg.read()
        assert bg.returncode is None, lines
        time.sleep(0.01)
    child = json.loads(lines[0][1])["child"]
    assert os.getpgid(child) == bg.pid != os.getpgid(0)  # its own group, not ours
    bg.kill_tree(grace_s=2.0)
    with pytest.raises(ProcessLookupError):
        os.killpg(bg.pid, 0)
    assert bg.finished


# --- first use and provenance ----------------------------------------------------------------------------
def test_install_arguments_point_at_this_checkout_or_the_distribution(tmp_path):
    from packaging.requirements import Requirement
    from SlicerDeepLiverLib import deps

    module_dir = Path(__file__).resolve().parents[2] / "SlicerDeepLiver"
    assert deps.pip_arguments(module_dir) == ["-e", f"{module_dir.parent}[onnx]"]  # core + onnxruntime
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    wheel = deps.pip_arguments(tmp_path / "SlicerDeepLiver")
    assert [(Requirement(a).name, Requirement(a).extras) for a in wheel] == [("slicer-deepliver", {"onnx"})]
    check = "import sys; from SlicerDeepLiverLib import deps; print(deps.torch_installed(), 'torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", check], cwd=module_dir, capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["True", "False"], run.stderr  # found without being imported


def _pyproject():
    import tomllib

    return tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]


def _names(requirements):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return sorted(canonicalize_name(Requirement(r).name) for r in requirements)


def test_first_use_installs_the_core_and_onnxruntime_but_never_simpleitk_or_torch():
    from SlicerDeepLiverLib import deps

    project = _pyproject()
    # Requires-Dist as pip records them after `pip install --no-deps -e .` (extras become markers)
    requires = project["dependencies"] + [f'{r}; extra == "{extra}"'
                                          for extra, rs in project["optional-dependencies"].items() for r in rs]
    # an empty Python (nothing installed) that still imports Slicer's own SimpleITK
    install, kept = deps.dependencies_to_install(requires, version=lambda name: None, found=lambda name: True)
    expected = [r for r in project["dependencies"] + project["optional-dependencies"]["onnx"]
                if not r.lower().startswith("simpleitk")]
    assert _names(install) == _names(expected)
    assert not {"torch", "torchvision", "monai", "ultralytics"} & set(_names(install))
    assert len(kept) == 1 and kept[0].startswith("SimpleITK") and kept[0].endswith("(installed: unknown version)")
    # what this venv has: onnxruntime and SimpleITK are there and fit, so pip gets neither
    assert not {"onnxruntime", "simpleitk"} & set(_names(deps.dependencies_to_install(requires)[0]))
    # Slicer's SimpleITK too old for the requirement: kept, never handed to pip
    old = {"simpleitk": "2.2.1", "numpy": "1.26.4"}
    install, kept = deps.dependencies_to_install(requires, version=lambda name: old.get(name.lower()),
                                                 found=lambda name: True)
    assert "simpleitk" not in _names(install) and "numpy" not in _names(install)
    assert len(kept) == 1 and kept[0].endswith("(installed: 2.2.1)")
    # no SimpleITK at all (not Slicer): pip gets it like any other dependency
    install, kept = deps.dependencies_to_install(requires, version=lambda name: None, found=lambda name: False)
    assert "simpleitk" in _names(install) and kept == []


def test_gpu_requirements_mirror_the_train_extra():
    from SlicerDeepLiverLib import deps

    assert set(deps.GPU_REQUIREMENTS) <= set(_pyproject()["optional-dependencies"]["train"])


def test_constraints_pin_the_installed_simpleitk_and_pip_accepts_them(tmp_path):
    from SlicerDeepLiverLib import deps

    versions = {"SimpleITK": "2.4.0", "torch": None}
    assert deps.constraints(version=versions.get) == "SimpleITK==2.4.0\n"
    assert deps.constraints(version=lambda name: None) == ""
    pins = deps.constraints()
    assert pins.startswith(f"SimpleITK=={sitk.__version__}\n")
    path = tmp_path / "constraints.txt"
    path.write_text(pins)
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-c", str(path),
                          "SimpleITK>=2.3"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "already satisfied" in run.stdout, run.stdout + run.stderr


def test_a_cpu_run_of_a_bundle_without_onnx_says_how_to_export_it(tmp_path, tiny_bundles):
    old = _bundle(tmp_path / "liver-old", "liver", 0.9, "2025-01-01T00:00:00+00:00")
    bundles.check_onnx([tiny_bundles["liver"], tiny_bundles["tumor"]])  # trained now: both carry model.onnx
    assert bundles.bundles_without_onnx([tiny_bundles["liver"], old]) == [old]
    with pytest.raises(bundles.NoBundleError) as caught:
        bundles.check_onnx([old, tiny_bundles["tumor"]])
    message = str(caught.value)
    assert f'deepliver bundle export-onnx "{old}"' in message and "needs PyTorch" in message
    assert "liver-old has no model.onnx" in message and str(tiny_bundles["tumor"]) not in message


def test_a_corrected_model_result_is_recorded_in_the_manifest(tmp_path, phantom):
    from deepliver.dataset import export_case, load_case
    from SlicerDeepLiverLib import summary

    liver = _bundle(tmp_path / "models" / "liver-a", "liver", 0.9, "2026-01-02T03:04:05+00:00")
    tumor = _bundle(tmp_path / "models" / "tumor-b", "tumor", 0.6, "2026-01-02T03:04:05+00:00")
    started = bundles.model_provenance(*bundles.choose_bundles(bundles.list_bundles(liver.parent), liver.parent),
                                       device="cpu")
    provenance = summary.annotation_provenance("5.8.1", started_from=started, structures=["Liver", "Tumor"],
                                               annotator="dr. b")
    result = export_case(phantom.image, phantom.label, tmp_path / "dataset", annotator="dr. b", provenance=provenance)
    manifest = load_case(tmp_path / "dataset", result.case_id)[2]
    recorded = manifest["provenance"]
    assert (recorded["method"], recorded["corrected_by"], manifest["annotator"]) == ("corrected", "dr. b", "dr. b")
    assert recorded["started_from"]["bundle"] == "liver-a + tumor-b"
    assert [(m["bundle"], m["validation_dice"]) for m in recorded["started_from"]["models"]] == \
           [("liver-a", 0.9), ("tumor-b", 0.6)]
