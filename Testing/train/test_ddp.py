"""torchrun with 2 CPU processes (gloo): both ranks end with identical weights; only rank 0 writes RUN.
The U-Net and Faster R-CNN train with DDP; YOLO is trained by rank 0 through ultralytics' own launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from torch.utils.data import DistributedSampler

from deepliver.models.bundle import load_state_dict, read_bundle_config
from deepliver.models.yolo import offline_env
from deepliver.train.ddp import HASH_DIR_ENV, state_hash
from deepliver.train.detection_frcnn import shard


def _torchrun(dataset, config, run, hashes, timeout=300):
    """``torchrun --nproc_per_node=2 -m deepliver train`` with ``config`` (a ``TrainConfig``)."""
    path = run.parent / f"{run.name}.json"
    path.write_text(json.dumps(config.to_dict()))
    env = {**os.environ, HASH_DIR_ENV: str(hashes), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "deepliver", "train", str(dataset), "--config", str(path), "--out", str(run),
                           "--progress", "none"], capture_output=True, text=True, env=env, timeout=timeout)


def test_two_processes_end_identical_and_rank0_writes_the_run(tiny_dataset, tiny_config, tmp_path):
    run, hashes = tmp_path / "run", tmp_path / "hashes"
    r = _torchrun(tiny_dataset, tiny_config(), run, hashes)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{i}.sha256").read_text().strip() for i in (0, 1))
    assert rank0 == rank1
    assert state_hash(load_state_dict(run / "model")) == rank0      # 1 epoch: best = last
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if "cache" not in p.parts)
    assert written == ["checkpoints", "checkpoints/best.pt", "checkpoints/last.pt", "config.json", "log.csv",
                       "model", "model/model.json", "model/model.onnx", "model/weights.safetensors"]
    assert len(open(run / "log.csv").read().splitlines()) == 2      # header + one epoch, written once


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_detector_shards_are_torch_distributed_samplers_shares(n, world):
    order = [(7 * i + 3) % n for i in range(n)]          # a permutation, as an epoch's shuffle gives
    for rank in range(world):
        sampler = DistributedSampler(list(range(n)), num_replicas=world, rank=rank, shuffle=False)
        assert shard(order, rank, world) == [order[i] for i in sampler]
    assert shard(order, 0, 1) == order


def test_faster_rcnn_under_torchrun_ends_identical_on_both_ranks(tiny_dataset, tiny_config, tmp_path):
    """Rank 0 converts the dataset into RUN/detection_data; both ranks train one epoch with DDP."""
    config = tiny_config("fasterrcnn", "tumor", {
        "optim.batch_size": 2, "detector.backbone": "mobilenet_v3_large_fpn", "detector.min_size": 64,
        "detector.max_size": 64, "detector.box_batch_size_per_image": 32, "optim.early_stop_patience": 0})
    run, hashes = tmp_path / "run", tmp_path / "hashes"
    r = _torchrun(tiny_dataset, config, run, hashes)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{i}.sha256").read_text().strip() for i in (0, 1))
    assert rank0 == rank1
    assert state_hash(load_state_dict(run / "model")) == rank0      # 1 epoch: best = last
    assert read_bundle_config(run / "model").architecture == "fasterrcnn"
    assert len(open(run / "log.csv").read().splitlines()) == 2      # header + one epoch, written once


def test_yolo_child_environment_drops_torchrun_variables(tmp_path):
    base = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "x",
            "MASTER_PORT": "1", "TORCHELASTIC_RUN_ID": "r", "PATH": "/bin"}
    env = offline_env(tmp_path, base)
    assert env == {"PATH": "/bin", "YOLO_CONFIG_DIR": str(tmp_path.resolve()), "YOLO_OFFLINE": "1"}


def test_yolo_under_torchrun_is_trained_once_by_rank0(tiny_dataset, tiny_config, tmp_path, network_guard):
    pytest.importorskip("ultralytics", reason="ultralytics (extra 'yolo') is not installed")
    config = tiny_config("yolo", "tumor", {"optim.batch_size": 4, "detector.image_size": 64})
    run, hashes = tmp_path / "run", tmp_path / "hashes"
    r = _torchrun(tiny_dataset, config, run, hashes, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not network_guard.exists(), network_guard.read_text()
    assert read_bundle_config(run / "model").architecture == "yolo"
    assert [p.name for p in (run / "yolo").glob("train*") if p.is_dir()] == ["train"]   # one run, not one per rank
