"""Case ids and the key file, label statistics, manifest reading, dataset.json form, all-or-nothing commit."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from datetime import datetime, timezone

import numpy as np
import pytest

from deepliver.dataset import caseid, transaction
from deepliver.dataset.layout import dataset_json
from deepliver.dataset.manifest import label_stats, lesion_count, read_manifest, timestamp_for_file
from deepliver.errors import InputError
from deepliver.imaging.geometry import Geometry


def test_key_file_is_created_once_private_and_reused(tmp_path):
    with pytest.raises(InputError, match="no dataset key"):
        caseid.dataset_key(tmp_path)
    key = caseid.dataset_key(tmp_path, create=True)
    path = tmp_path / ".deepliver-key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert caseid.dataset_key(tmp_path, create=True) == key == bytes.fromhex(path.read_text().strip())
    assert [p.name for p in tmp_path.iterdir()] == [".deepliver-key"]  # no temporary left
    path.write_text("abc\n")
    with pytest.raises(InputError, match="malformed dataset key"):
        caseid.dataset_key(tmp_path)


def test_series_id_is_the_keyed_hash_of_the_uid():
    key = bytes(range(32))
    uid = "1.2.840.113619.2.55.3.1"
    expected = "case_" + hmac.new(key, b"series:" + uid.encode(), hashlib.sha256).hexdigest()[:16]
    assert caseid.series_case_id(key, uid) == expected == caseid.series_case_id(key, f" {uid} ")
    assert caseid.series_case_id(bytes(32), uid) != expected  # another key, another id
    assert caseid.is_case_id(expected) and not caseid.is_case_id("liver_0")
    with pytest.raises(InputError):
        caseid.series_case_id(key, "  ")


def test_voxel_digest_depends_on_voxels_type_and_geometry_but_not_float32_noise():
    geometry = Geometry((4, 3, 2), (0.7, 0.7, 2.5), (-100.0, 20.0, 5.0))
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    digest = caseid.voxel_digest(array, geometry)
    noisy = Geometry((4, 3, 2), tuple(float(np.float32(v)) for v in geometry.spacing),
                     tuple(float(np.float32(v)) for v in geometry.origin))
    assert caseid.voxel_digest(array, noisy) == digest  # a NIfTI round trip keeps the id
    changed = array.copy()
    changed[0, 0, 0] = 99
    assert caseid.voxel_digest(changed, geometry) != digest
    assert caseid.voxel_digest(array.astype(np.int32), geometry) != digest
    moved = Geometry((4, 3, 2), (0.7, 0.7, 2.5), (-100.0, 20.0, 6.0))
    assert caseid.voxel_digest(array, moved) != digest


def test_label_stats_match_numpy_and_scipy(ds_tools):
    from scipy import ndimage
    rng = np.random.default_rng(5)
    label = rng.choice(np.array([0, 1, 2], np.uint8), size=(10, 12, 14), p=[0.6, 0.3, 0.1])
    geometry = Geometry((14, 12, 10), (0.5, 0.8, 3.0), (0.0, 0.0, 0.0))
    stats = label_stats(label, geometry)
    for value, name in enumerate(("background", "liver", "tumor")):
        count = int(np.sum(label == value))
        assert stats.voxel_counts[name] == count
        assert stats.volumes_ml[name] == pytest.approx(count * 0.5 * 0.8 * 3.0 / 1000.0)
    assert stats.lesions == ndimage.label(label == 2, structure=np.ones((3, 3, 3)))[1]
    assert lesion_count(np.zeros((3, 3, 3), bool)) == 0


def test_lesions_touching_at_a_corner_are_one_lesion():
    mask = np.zeros((5, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner contact: one 26-connected lesion
    mask[4, 4, 0] = True
    assert lesion_count(mask) == 2


def test_read_manifest_errors_name_the_file(tmp_path):
    (tmp_path / "manifests").mkdir()
    with pytest.raises(InputError, match=r"manifests/case_x\.json: no manifest"):
        read_manifest(tmp_path, "case_x")
    (tmp_path / "manifests" / "case_x.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(tmp_path, "case_x")


def test_history_timestamps_sort_and_keep_microseconds():
    a = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    b = datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone.utc)
    assert timestamp_for_file(a) == "20260102T030405.000006Z" < timestamp_for_file(b)


def test_dataset_json_is_msd_form_with_nnunet_keys():
    data = json.loads(json.dumps(dataset_json(["case_b", "case_a"])))
    assert data["labels"] == {"0": "background", "1": "liver", "2": "tumor"}
    assert data["numTraining"] == 2 and data["training"][0] == {"image": "./imagesTr/case_a.nii.gz",
                                                                "label": "./labelsTr/case_a.nii.gz"}
    assert data["channel_names"] == {"0": "CT"} and data["file_ending"] == ".nii.gz"


def test_commit_rolls_back_every_file_when_a_move_fails(tmp_path, ds_tools, monkeypatch):
    keep, new, copy = tmp_path / "a.txt", tmp_path / "sub" / "b.txt", tmp_path / "hist" / "a-old.txt"
    keep.write_text("old a")
    before = ds_tools.snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("b.txt"):
            raise OSError("simulated failure on the second file")
        return real_replace(src, dst)

    monkeypatch.setattr(transaction.os, "replace", failing_replace)
    with transaction.Transaction() as tx:
        tx.keep_copy(keep, copy)
        tx.stage(keep).write_text("new a")
        tx.stage(new).write_text("new b")
        with pytest.raises(OSError, match="simulated"):
            tx.commit()
    after = {k: v for k, v in ds_tools.snapshot(tmp_path).items() if v != b"<dir>"}
    assert after == {k: v for k, v in before.items() if v != b"<dir>"}  # a.txt old, no b, no copy, no temp
    monkeypatch.setattr(transaction.os, "replace", real_replace)
    with transaction.Transaction() as tx:
        tx.keep_copy(keep, copy)
        tx.stage(keep).write_text("new a")
        tx.commit()
    assert keep.read_text() == "new a" and copy.read_text() == "old a"
