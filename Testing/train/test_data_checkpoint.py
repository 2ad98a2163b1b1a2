"""Samplers, augmentation and checkpoints: determinism, channel order, positive sampling, corruption."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepliver.train.augment import Augmenter, AugmentParams
from deepliver.train.checkpoint import (CheckpointError, determinism, load_checkpoint, rng_state, save_checkpoint,
                                       set_rng_state)
from deepliver.train.config import AugmentSection
from deepliver.train.data import (COMPONENT_POINTS, CachedCase, SampleSource, TrainingSamples, crop_patch,
                                  epoch_loader, loader_workers)


def _case():
    z, y, x = np.meshgrid(np.arange(10), np.arange(30), np.arange(40), indexing="ij")
    image = (z * 1000 + y * 50 + x).astype(np.float32)              # every voxel tells where it came from
    label = np.zeros(image.shape, np.uint8)
    label[4:6, 10:20, 20:30] = 1
    label[5, 12:14, 22:24] = 2
    fg = {t: {"voxels": int(m.sum()), "slices": np.flatnonzero(m.any(axis=(1, 2))).tolist(),
              "samples": np.argwhere(m).tolist()} for t, m in (("liver", label >= 1), ("tumor", label == 2))}
    return CachedCase("c", image, label, {"pad_value": -1.0, "foreground": fg})


def test_crop_patch_inside_and_padded():
    a = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    np.testing.assert_array_equal(crop_patch(a, (0, 5), (3, 3), -1), a[0:3, 3:6])      # clamped inside
    out = crop_patch(a, (2, 2), (7, 4), -1)                                              # taller than a
    np.testing.assert_array_equal(out[1:6], a[:, 0:4])
    assert (out[0] == -1).all() and (out[6] == -1).all()


def test_2d_samples_stack_neighbours_in_order_and_hit_the_label():
    source = SampleSource([_case()], "tumor", (8, 8), context=1, positive_fraction=1.0)
    for i in range(20):
        image, target = source.draw(np.random.default_rng(i))
        z = int(image[1, 0, 0] // 1000)
        assert [int(image[c, 0, 0] // 1000) for c in range(3)] == [max(z - 1, 0), z, min(z + 1, 9)]
        assert target.sum() > 0 and z == 5


def _two_lesions():
    """One slice: a 30 x 30 lesion (900 voxels) and a 2 x 2 one (4 voxels), far apart."""
    y, x = np.meshgrid(np.arange(60), np.arange(80), indexing="ij")
    image = (y * 100 + x).astype(np.float32)[None]                       # a voxel's value tells where it is
    label = np.zeros(image.shape, np.uint8)
    label[0, 5:35, 5:35] = 2
    label[0, 50:52, 70:72] = 2
    m = label == 2
    fg = {"tumor": {"voxels": int(m.sum()), "slices": [0], "samples": np.argwhere(m).tolist()}}
    return CachedCase("c", image, label, {"pad_value": -1.0, "foreground": fg})


@pytest.mark.parametrize("sampling, small_share", [("voxel", 4 / 904), ("component", 0.5)])
def test_component_sampling_draws_each_lesion_alike(sampling, small_share):
    source = SampleSource([_two_lesions()], "tumor", (8, 8), positive_fraction=1.0, positive_sampling=sampling)
    n, small = 600, 0
    for i in range(n):
        image, target = source.draw(np.random.default_rng(i))
        centre_y = int(image[0, 4, 4] // 100)
        assert target.sum() > 0                                           # every draw shows a lesion
        small += centre_y >= 40                                           # the small lesion's side
    assert abs(small / n - small_share) < 4 * np.sqrt(small_share * (1 - small_share) / n) + 1 / n
    points = source.cases[0].component_points("tumor")
    assert sorted(len(p) for p in points) == [4, 900]                     # both kept whole (<= 1000 each)
    assert {tuple(p) for p in points[1].tolist()} == {(0, y, x) for y in (50, 51) for x in (70, 71)}


def test_component_points_are_bounded_and_spread_through_a_large_component():
    case = _two_lesions()
    case.label[0, 5:45, 5:45] = 2                                         # 1,600 voxels > COMPONENT_POINTS
    big = max(case.component_points("tumor"), key=len)
    assert len(big) == COMPONENT_POINTS and len({tuple(p) for p in big.tolist()}) == COMPONENT_POINTS
    assert (big[:, 1].min(), big[:, 1].max()) == (5, 44)                  # first and last rows included
    assert (case.label[tuple(big.T)] == 2).all()
    with pytest.raises(ValueError, match="positive_sampling must be one of voxel, component"):
        SampleSource([case], "tumor", (8, 8), positive_sampling="lesions")


def test_samples_depend_only_on_seed_epoch_index():
    aug = Augmenter(AugmentSection(prob=1.0), 2)
    data = TrainingSamples(SampleSource([_case()], "liver", (8, 8), context=1), 6, seed=3, augmenter=aug)
    data.set_epoch(2)
    first = [data[i] for i in range(6)]
    again = [data[i] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    data.set_epoch(3)
    assert not torch.equal(data[0][0], first[0][0])
    assert set(torch.unique(first[0][1]).tolist()) <= {0.0, 1.0}                 # label stays binary


class _WithPid(TrainingSamples):
    """Each item also says which process made it."""

    def __getitem__(self, index):
        return (*super().__getitem__(index), os.getpid())


def test_epoch_loader_batches_do_not_depend_on_workers_which_live_through_epochs():
    aug = Augmenter(AugmentSection(prob=1.0), 2)
    data = _WithPid(SampleSource([_case()], "liver", (8, 8), context=1), 8, seed=3, augmenter=aug)
    epochs = {}
    for workers in (0, 2):
        loader, seen = epoch_loader(data, 2, workers, seed=5), []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            batches = list(loader)
            seen.append({int(p) for b in batches for p in b[2]})
            epochs[workers, epoch] = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
        assert seen[0] == seen[1] and (os.getpid() in seen[0]) == (workers == 0)      # the same processes
    for epoch in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(epochs[0, epoch], epochs[2, epoch]))
    assert not torch.equal(epochs[0, 0][0], epochs[0, 1][0])
    # the same samples as the dataset's own epoch (set_epoch) at the indices the shuffled sampler drew
    loader.sampler.set_epoch(1)
    order = [i for _, i in loader.sampler]
    data.set_epoch(1)
    assert torch.equal(epochs[2, 1][0], torch.stack([data[i][0] for i in order]))


def test_checkpoint_round_trip_and_rng_restore(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = save_checkpoint(tmp_path / "last.pt", state)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.arange(4.0))
    set_rng_state(back["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_corrupted_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: cannot read checkpoint (")


def _torch_settings():
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.mkldnn.deterministic)


def test_determinism_applies_inside_and_restores_on_exit_even_after_an_error():
    before = _torch_settings()
    with determinism(True):
        assert _torch_settings() == (True, False, True)
        # indexing backward with repeated indices sums in a fixed order in this mode (without it, with more
        # than one thread, parallel atomic adds give other last bits from run to run)
        y = torch.rand(20_000, 4, requires_grad=True)
        index = torch.randint(0, 20_000, (100_000,), generator=torch.Generator().manual_seed(0))
        upstream = torch.rand(100_000, 4, generator=torch.Generator().manual_seed(1))
        grads = []
        for _ in range(4):
            y.grad = None
            y[index].backward(upstream)
            grads.append(y.grad.clone())
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert _torch_settings() == before
    with pytest.raises(RuntimeError):
        with determinism(False):
            assert _torch_settings() == (False, True, False)
            raise RuntimeError("training failed")
    assert _torch_settings() == before


MKL_PROBE = """
import ctypes, os, sys
import deepliver, torch
torch.rand(8, 8) @ torch.rand(8, 8)
try:
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    get = lib.mkl_serv_cbwr_get
except (OSError, AttributeError):
    sys.exit(3)
print(get(-1))
"""


def test_import_deepliver_makes_mkl_independent_of_memory_alignment():
    """MKL_CBWR=AUTO,STRICT must reach MKL (read once, at its first call): without it, identical Faster
    R-CNN steps differed in the last bit on a busy machine and exact resume failed."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    r = subprocess.run([sys.executable, "-c", MKL_PROBE], env=env, capture_output=True, text=True)
    if r.returncode == 3:
        pytest.skip("this torch build has no MKL with a CBWR query (not x86 Linux)")
    assert r.returncode == 0, r.stderr
    mode = int(r.stdout)
    assert mode & 0x10000, f"MKL CBWR mode {mode:#x} lacks STRICT"     # MKL_CBWR_STRICT


@pytest.mark.parametrize("shape,params", [
    ((2, 40, 56), AugmentParams(True, 0.3, (1.1, 0.9), 1.0, ())),
    ((1, 12, 30, 26), AugmentParams(True, -0.25, (0.9, 1.1, 1.05), 1.0, ())),
])
def test_affine_augmentation_equals_scipy_affine_transform(shape, params):
    """Rotation + zoom about the patch centre, checked against scipy.ndimage.affine_transform with the same
    matrix: image and label bilinear with border padding (scipy order 1, mode nearest), the label then
    thresholded at 0.5 (pixels within 1e-4 of the threshold, float32 against float64, left out)."""
    from scipy import ndimage

    from deepliver.train.augment import affine_matrix

    rng = np.random.default_rng(0)
    dims = len(shape) - 1
    image = ndimage.gaussian_filter(rng.standard_normal(shape), (0,) + (3,) * dims).astype(np.float32)
    label = (image[:1] > 0.01).astype(np.float32)
    out = Augmenter(AugmentSection(), dims).apply({"image": image, "label": label}, params)
    m = affine_matrix(params, shape[1:])
    a, offset = m[:dims, :dims], m[:dims, dims]
    expected = np.stack([ndimage.affine_transform(c, a, offset, order=1, mode="nearest") for c in image])
    np.testing.assert_allclose(out["image"], expected, atol=1e-5)
    assert not np.allclose(out["image"], image, atol=1e-2)                       # it did move
    soft = ndimage.affine_transform(label[0].astype(np.float64), a, offset, order=1, mode="nearest")
    clear = np.abs(soft - 0.5) > 1e-4
    assert clear.mean() > 0.95 and set(np.unique(out["label"])) == {0.0, 1.0}
    np.testing.assert_array_equal(out["label"][0][clear], (soft >= 0.5)[clear])


def test_contrast_keeps_the_mean_and_flips_mirror():
    rng = np.random.default_rng(1)
    image = rng.random((3, 16, 20)).astype(np.float32)
    label = (rng.random((1, 16, 20)) < 0.3).astype(np.float32)
    aug = Augmenter(AugmentSection(flip_axes=("x",)), 2)
    out = aug.apply({"image": image, "label": label}, AugmentParams(False, 0.0, (1.0, 1.0), 1.08, (1,)))
    mean = image.mean(dtype=np.float64)
    np.testing.assert_allclose(out["image"], ((image - mean) * 1.08 + mean)[:, :, ::-1], atol=1e-6)
    np.testing.assert_array_equal(out["label"], label[:, :, ::-1])
    draws = [aug.draw(s) for s in range(400)]                                    # prob 0.5, ranges respected
    assert 0.4 < np.mean([d.affine for d in draws]) < 0.6 and 0.4 < np.mean([d.flips == (1,) for d in draws]) < 0.6
    assert max(abs(d.angle) for d in draws) <= np.radians(20) and all(0.85 <= z <= 1.15 for d in draws for z in d.zoom)
    assert all(0.9 <= d.contrast <= 1.1 for d in draws) and aug.draw(7) == aug.draw(7)


@pytest.mark.parametrize("configured, device, threads, cores, expected", [
    (2, "cpu", 2, 2, 0),        # torch's threads use every core: batches made between steps
    (4, "cpu", 8, 8, 0),
    (2, "cpu", 4, 8, 2),        # spare cores: worker processes
    (2, "cuda", 2, 2, 2),       # a GPU steps while the CPU makes batches
    (2, "cuda:1", 16, 16, 2),
    (0, "cuda", 2, 8, 0),
])
def test_loader_workers_run_in_process_only_on_a_cpu_without_spare_cores(configured, device, threads, cores,
                                                                        expected):
    assert loader_workers(configured, device, threads, cores) == expected


def test_loader_workers_default_to_torchs_threads_and_this_process_cores():
    """Without explicit numbers, torch's current thread count against the cores this process may use: as many
    threads as cores -> in the training process; one thread on a machine with more cores -> the workers."""
    cores, before = len(os.sched_getaffinity(0)), torch.get_num_threads()
    try:
        torch.set_num_threads(cores)
        assert loader_workers(3, "cpu") == 0
        if cores > 1:
            torch.set_num_threads(1)
            assert loader_workers(3, "cpu") == 3
    finally:
        torch.set_num_threads(before)
