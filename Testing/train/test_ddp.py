"""torchrun with 2 CPU processes (gloo): both ranks end with identical weights; only rank 0 writes RUN."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from deepliver.models.bundle import load_state_dict
from deepliver.train.ddp import HASH_DIR_ENV, state_hash


def test_two_processes_end_identical_and_rank0_writes_the_run(tiny_dataset, tiny_config, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config().to_dict()))
    run, hashes = tmp_path / "run", tmp_path / "hashes"
    env = {**os.environ, HASH_DIR_ENV: str(hashes), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "deepliver", "train", str(tiny_dataset), "--config", str(config), "--out", str(run),
                        "--progress", "none"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{i}.sha256").read_text().strip() for i in (0, 1))
    assert rank0 == rank1
    assert state_hash(load_state_dict(run / "model")) == rank0      # 1 epoch: best = last
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if "cache" not in p.parts)
    assert written == ["checkpoints", "checkpoints/best.pt", "checkpoints/last.pt", "config.json", "log.csv",
                       "model", "model/model.json", "model/model.onnx", "model/weights.safetensors"]
    assert len(open(run / "log.csv").read().splitlines()) == 2      # header + one epoch, written once
