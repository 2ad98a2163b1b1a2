import io
import json

import pytest

from deepliver.atomic import atomic_path, write_files_atomic, write_json_atomic
from deepliver.progress import Reporter, track


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_path_keeps_double_extension(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.nii.gz").read_bytes() == b"1"


def test_json_progress_lines():
    out = io.StringIO()
    reporter = Reporter("json", stream=out)
    assert list(track("abc", "liver", 3, reporter)) == ["a", "b", "c"]
    lines = [json.loads(l) for l in out.getvalue().splitlines()]
    assert lines[0] == {"stage": "liver", "done": 0, "total": 3}
    assert lines[-1] == {"stage": "liver", "done": 3, "total": 3}
    assert len(lines) == 4


def test_atomic_files_get_the_umask_mode(tmp_path):
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    write_json_atomic(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_files_atomic_writes_each_file_and_cleans_up_on_failure(tmp_path):
    import os
    mask = os.umask(0o022)
    os.umask(mask)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_bytes(b"old")
    write_files_atomic([(tmp_path / "a" / "deep" / "x.png", b"png"), (tmp_path / "b" / "old.txt", b"new")])
    assert (tmp_path / "a" / "deep" / "x.png").read_bytes() == b"png"
    assert (tmp_path / "b" / "old.txt").read_bytes() == b"new"
    assert (tmp_path / "a" / "deep" / "x.png").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(TypeError):  # the second item cannot be written: the first stays, the target keeps its bytes
        write_files_atomic([(tmp_path / "b" / "c.txt", b"c"), (tmp_path / "b" / "old.txt", "not bytes")])
    assert (tmp_path / "b" / "c.txt").read_bytes() == b"c" and (tmp_path / "b" / "old.txt").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["c.txt", "old.txt"]
