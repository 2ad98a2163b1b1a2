"""``deepliver convert`` end to end on small hand-built datasets.

Boxes are read back from each format with independent parsers and compared with boxes computed here with
SimpleITK's DICOMOrient("LPS") (the canonical orientation) and scipy.ndimage per slice.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image
from scipy import ndimage

from deepliver.dataset.convert import ConvertOptions, convert_dataset
from deepliver.dataset.export import export_case
from deepliver.dataset.layout import dataset_json
from deepliver.dataset.slices import Window
from deepliver.errors import InputError
from testhelpers import reoriented as cv_reoriented

SHAPE = (12, 40, 48)  # z, y, x: non-square so that an x/y mix-up shows


# --- building datasets ----------------------------------------------------------------------------------
def cv_case(seed, liver=True):
    """(image, label) with identity direction: a liver block and tumor blobs on known slices."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    hu = (-120 + 4 * x + 3 * y + 20 * z + rng.integers(-30, 30, SHAPE)).astype(np.int16)
    lab = np.zeros(SHAPE, np.uint8)
    if liver:
        lab[3:9, 6:30, 8:40] = 1
        for k in range(int(rng.integers(2, 5))):
            zc, yc, xc = int(rng.integers(3, 9)), int(rng.integers(8, 27)), int(rng.integers(10, 37))
            lab[zc, yc:yc + int(rng.integers(1, 4)), xc:xc + int(rng.integers(1, 5))] = 2
        lab[5, 10:12, 12:14] = 2          # two squares touching at a corner: one box
        lab[5, 12:14, 14:16] = 2
        lab[6, 20, 30] = 2                # a single pixel
        lab[4, 0:3, 45:48] = 2            # at the image border (outside the liver: still a tumor box)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-20.0, 15.0, 100.0))
    label = sitk.GetImageFromArray(lab)
    label.CopyInformation(image)
    return image, label


def cv_write_dataset(root, cases):
    """A dataset folder made by ``export_case`` from ``{name: (image, label)}``; returns (root, {name: case id})."""
    root = Path(root)
    ids = {name: export_case(image, label, root).case_id for name, (image, label) in cases.items()}
    return root, ids


@pytest.fixture(scope="module")
def cv_cases():
    cases = {f"c{i:02d}": cv_case(i) for i in range(5)}
    cases["nolive"] = cv_case(99, liver=False)
    return cases


@pytest.fixture(scope="module")
def cv_dataset(tmp_path_factory, cv_cases):
    """(dataset folder, {case id: (image, label)})."""
    root, ids = cv_write_dataset(tmp_path_factory.mktemp("ds") / "dataset", cv_cases)
    return root, {ids[name]: cv_cases[name] for name in cv_cases}, ids["nolive"]


# --- independent readers --------------------------------------------------------------------------------
def reference_boxes(label, task="tumor"):
    """{z: sorted boxes} from DICOMOrient("LPS") + scipy.ndimage 8-connected labelling per slice."""
    canon = sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPS"))
    out = {}
    for z, plane in enumerate(canon):
        mask = plane >= 1 if task == "liver" else plane == 2
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        boxes = sorted((xs.start, ys.start, xs.stop - 1, ys.stop - 1) for ys, xs in ndimage.find_objects(labels))
        if boxes:
            out[z] = boxes
    return out


def read_yolo(path, width, height):
    boxes = []
    for line in Path(path).read_text().splitlines():
        cls, cx, cy, w, h = line.split()
        assert cls == "0"
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        boxes.append((round(cx - w / 2), round(cy - h / 2), round(cx + w / 2) - 1, round(cy + h / 2) - 1))
    return sorted(boxes)


def read_voc(path):
    root = ET.parse(path).getroot()
    size = root.find("size")
    boxes = sorted((int(b.find("xmin").text) - 1, int(b.find("ymin").text) - 1, int(b.find("xmax").text) - 1,
                    int(b.find("ymax").text) - 1) for b in root.iter("bndbox"))  # VOC is 1-based
    return int(size.find("width").text), int(size.find("height").text), boxes


def read_coco(path):
    doc = json.loads(Path(path).read_text())
    assert [c["id"] for c in doc["categories"]] == [1]
    by_image = {im["id"]: (im["file_name"], []) for im in doc["images"]}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["area"] == w * h and a["category_id"] == 1
        by_image[a["image_id"]][1].append((x, y, x + w - 1, y + h - 1))
    return {name: sorted(boxes) for name, boxes in by_image.values()}


def tree_bytes(root, skip=()):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and not any(p.relative_to(root).as_posix().startswith(s) for s in skip)}


# --- tests ----------------------------------------------------------------------------------------------
def by_case_and_z(out):
    """{(case, z): {"png": bytes, "txt": text, "voc": (w, h, boxes)}} over all splits."""
    found = {}
    for png in Path(out).glob("images/*/*.png"):
        split, (case, z) = png.parent.name, png.stem.rsplit("_", 1)
        found[(case, int(z))] = {"png": png.read_bytes(),
                                 "txt": (out / "labels" / split / f"{png.stem}.txt").read_text(),
                                 "voc": read_voc(out / "annotations" / split / f"{png.stem}.xml")}
    return found


def test_every_format_matches_scipy_boxes(cv_dataset, tmp_path):
    dataset, cases, nolive = cv_dataset
    out = tmp_path / "out"
    result = convert_dataset(dataset, out, ConvertOptions(seed=3))
    assert result.skipped == {nolive: "no liver voxels in its label"}
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits) == {"seed", "ratios", "train", "val", "test"} and splits["ratios"] == [70, 20, 10]
    members = [c for s in ("train", "val", "test") for c in splits[s]]
    assert sorted(members) == sorted(c for c in cases if c != nolive) and len(set(members)) == len(members)
    assert all(splits[s] for s in ("train", "val", "test"))
    total_boxes = 0
    for split in ("train", "val", "test"):
        coco = read_coco(out / f"coco_{split}.json")
        pngs = sorted(p.name for p in (out / "images" / split).iterdir())
        assert sorted(coco) == pngs and {n.rsplit("_", 1)[0] for n in pngs} <= set(splits[split])
        for case in splits[split]:
            image, label = cases[case]
            ref = reference_boxes(label)
            n_neg = int(np.floor(0.25 * len(ref) + 0.5))
            written = sorted(int(n[len(case) + 1:-4]) for n in pngs if n.rsplit("_", 1)[0] == case)
            negatives = [z for z in written if z not in ref]
            assert set(ref) <= set(written) and len(negatives) == n_neg
            assert all(3 <= z <= 8 for z in negatives)   # inside the liver's z-range first
            hu = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(float)
            for z in written:
                stem, expected = f"{case}_{z:04d}", ref.get(z, [])
                assert read_yolo(out / "labels" / split / f"{stem}.txt", SHAPE[2], SHAPE[1]) == expected
                assert read_voc(out / "annotations" / split / f"{stem}.xml") == (SHAPE[2], SHAPE[1], expected)
                assert coco[f"{stem}.png"] == expected
                total_boxes += len(expected)
                pixels = np.asarray(Image.open(out / "images" / split / f"{stem}.png"))
                window = np.floor((np.clip(hu[z], -100, 400) + 100) * 255 / 500 + 0.5)
                np.testing.assert_array_equal(pixels, window)
    assert total_boxes == sum(result.boxes.values()) > 10
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "tumor"} and Path(data["path"]) == out.resolve()
    assert all((Path(data["path"]) / data[k]).is_dir() for k in ("train", "val", "test"))


def test_liver_task_and_resize(cv_dataset, tmp_path):
    dataset, cases, nolive = cv_dataset
    out = tmp_path / "out"
    convert_dataset(dataset, out, ConvertOptions(task="liver", size=24, formats=("yolo",), split=(100, 0, 0)))
    assert not (out / "coco_train.json").exists() and not (out / "annotations").exists()
    for case in sorted(cases)[:2]:
        ref = reference_boxes(cases[case][1], task="liver")
        assert ref or case == nolive
        for z, boxes in ref.items():
            assert Image.open(out / "images" / "train" / f"{case}_{z:04d}.png").size == (24, 24)
            got = read_yolo(out / "labels" / "train" / f"{case}_{z:04d}.txt", 24, 24)
            assert len(got) == len(boxes)
            for (a0, b0, a1, b1), (x0, y0, x1, y1) in zip(got, boxes):  # covers the scaled pixel area, tightly
                assert a0 / 24 <= x0 / SHAPE[2] < (a0 + 1) / 24 and b0 / 24 <= y0 / SHAPE[1] < (b0 + 1) / 24
                assert a1 / 24 < (x1 + 1) / SHAPE[2] <= (a1 + 1) / 24
                assert b1 / 24 < (y1 + 1) / SHAPE[1] <= (b1 + 1) / 24


def test_flipped_and_permuted_directions_give_identical_slices_and_boxes(cv_cases, tmp_path):
    cases = {c: cv_cases[c] for c in ("c00", "c01", "c02")}
    directions = ([-1, 0, 0, 0, -1, 0, 0, 0, 1], [0, 1, 0, 0, 0, -1, -1, 0, 0], [0, -1, 0, 1, 0, 0, 0, 0, -1])
    moved = {c: (cv_reoriented(im, d), cv_reoriented(lab, d)) for (c, (im, lab)), d in zip(cases.items(), directions)}
    assert all(m[0].GetDirection() != cases[c][0].GetDirection() for c, m in moved.items())
    found = []
    for name, data in (("identity", cases), ("moved", moved)):
        dataset, ids = cv_write_dataset(tmp_path / name, data)
        convert_dataset(dataset, tmp_path / f"out_{name}", ConvertOptions(split=(100, 0, 0)))
        names = {v: k for k, v in ids.items()}  # case ids differ between datasets: compare by name
        found.append({(names[c], z): v for (c, z), v in by_case_and_z(tmp_path / f"out_{name}").items()})
    # slices with boxes must agree byte for byte; slices without are drawn by a seed mixed with the case id
    positives = [{k: v for k, v in f.items() if v["txt"]} for f in found]
    assert positives[0].keys() == positives[1].keys() and len(positives[0]) > 10
    assert positives[0] == positives[1]
    assert len(found[0]) == len(found[1])


def test_same_seed_gives_byte_identical_trees_with_any_workers(cv_dataset, tmp_path):
    dataset = cv_dataset[0]
    out = tmp_path / "out"
    convert_dataset(dataset, out, ConvertOptions(seed=7))
    first = tree_bytes(out)
    shutil.rmtree(out)
    convert_dataset(dataset, out, ConvertOptions(seed=7, workers=2))
    assert tree_bytes(out) == first
    convert_dataset(dataset, out, ConvertOptions(seed=8, overwrite=True))
    assert tree_bytes(out) != first


def test_rerun_skips_unchanged_cases_and_redoes_changed_ones(cv_cases, tmp_path):
    dataset, ids = cv_write_dataset(tmp_path / "ds", {c: cv_cases[c] for c in ("c00", "c01", "c02", "c03")})
    out = tmp_path / "out"
    first = convert_dataset(dataset, out, ConvertOptions())
    assert sorted(first.converted) == sorted(ids.values()) and first.reused == []
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    again = convert_dataset(dataset, out, ConvertOptions())
    assert again.converted == [] and sorted(again.reused) == sorted(ids.values())
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps
    image, label = cv_cases["c01"]
    lab = sitk.GetArrayFromImage(label)
    lab[7, 25:28, 30:33] = 2
    assert export_case(image, lab, dataset).case_id == ids["c01"]
    third = convert_dataset(dataset, out, ConvertOptions())
    assert third.converted == [ids["c01"]] and len(third.reused) == 3
    split = json.loads((out / ".convert" / f"{ids['c01']}.json").read_text())["split"]
    assert (out / "images" / split / f"{ids['c01']}_0007.png").is_file()
    fourth = convert_dataset(dataset, out, ConvertOptions(window=Window(-50, 300)))
    assert sorted(fourth.converted) == sorted(ids.values())


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "deepliver", "convert", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("extra, message", [
    (["--window=400,-100"], "window low must be below high"),
    (["--split", "70,20"], "three percentages"),
    (["--split", "70,20,20"], "sum to 100"),
])
def test_cli_bad_options_exit_2_and_write_nothing(cv_dataset, tmp_path, extra, message):
    run = _cli(cv_dataset[0], tmp_path / "out", *extra)
    assert run.returncode == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_cli_missing_dataset_and_foreign_output(cv_dataset, cv_cases, tmp_path):
    bad = tmp_path / "bad"
    (bad / "labelsTr").mkdir(parents=True)
    (bad / "dataset.json").write_text(json.dumps(dataset_json(["a1", "b2"])))
    run = _cli(bad, tmp_path / "out")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "a1.nii.gz" in run.stderr and "b2.nii.gz" in run.stderr and not (tmp_path / "out").exists()

    other, _ = cv_write_dataset(tmp_path / "other", {"c00": cv_cases["c00"]})
    out = tmp_path / "out2"
    assert _cli(other, out, "--formats", "coco").returncode == 0
    before = tree_bytes(out)
    run = _cli(cv_dataset[0], out)
    assert run.returncode == 2 and "another dataset" in run.stderr and "--overwrite" in run.stderr
    assert tree_bytes(out) == before
    run = _cli(cv_dataset[0], out, "--overwrite", "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert f"skipped {cv_dataset[2]}" in run.stdout and "1 skipped" in run.stdout
    assert json.loads((out / ".convert" / "source.json").read_text())["dataset"] == str(cv_dataset[0].resolve())


def test_output_inside_the_dataset_or_a_non_empty_folder_is_refused(cv_dataset, tmp_path):
    dataset = cv_dataset[0]
    with pytest.raises(InputError, match="overlaps the dataset"):
        convert_dataset(dataset, dataset / "slices")
    assert not (dataset / "slices").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        convert_dataset(dataset, tmp_path / "mine")
    convert_dataset(dataset, tmp_path / "mine", ConvertOptions(formats=("coco",), overwrite=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "mine" / "coco_val.json").is_file()


def test_phantom_flipped_on_every_axis_gives_the_same_boxes_and_image(tmp_path):
    from deepliver.dataset.phantom import make_phantom
    grids = {}
    for name, direction in (("identity", (1, 0, 0, 0, 1, 0, 0, 0, 1)), ("flipped", (-1, 0, 0, 0, -1, 0, 0, 0, -1))):
        phantom = make_phantom(3, shape=(80, 80, 24), spacing=(2.4, 2.4, 6.0), direction=direction, n_tumors=6)
        dataset, ids = cv_write_dataset(tmp_path / name, {"p": (phantom.image, phantom.label)})
        convert_dataset(dataset, tmp_path / f"out_{name}", ConvertOptions(split=(100, 0, 0), background_ratio=0,
                                                                          window=Window(-200, 300)))
        grids[name] = {z: v for (_, z), v in by_case_and_z(tmp_path / f"out_{name}").items()}
    a, b = grids["identity"], grids["flipped"]
    assert a.keys() == b.keys() and len(a) >= 3
    assert {z: v["txt"] for z, v in a.items()} == {z: v["txt"] for z, v in b.items()}
    for z in a:  # the images differ only by noise (drawn in array order): far closer than a raw flip would be
        pa, pb = (np.asarray(Image.open(io.BytesIO(v[z]["png"])), dtype=float) for v in (a, b))
        assert np.abs(pa - pb).mean() < 0.3 * np.abs(pa - pb[::-1, ::-1]).mean()


def test_dataset_problems_are_those_of_deepliver_check_and_nothing_is_written(cv_cases, tmp_path):
    from deepliver.dataset.check import check_dataset
    from deepliver.errors import ProblemsError
    dataset, ids = cv_write_dataset(tmp_path / "ds", {c: cv_cases[c] for c in ("c00", "c01", "nolive")})
    label_path = dataset / "labelsTr" / f"{ids['c01']}.nii.gz"
    lab = sitk.ReadImage(str(label_path))
    lab[1, 1, 1] = 2
    sitk.WriteImage(lab, str(label_path), True)          # the file no longer matches its manifest's sha256
    (dataset / "imagesTr" / "notes.txt").write_text("x")  # a stray file
    expected = check_dataset(dataset)
    assert any("empty liver" in p for p in expected)      # the case without liver is skipped, not a problem
    expected = [p for p in expected if "empty liver" not in p]
    assert len(expected) == 2 and "checksum mismatch" in expected[1] and "notes.txt" in expected[0]
    for workers in (1, 2):
        with pytest.raises(ProblemsError) as caught:
            convert_dataset(dataset, tmp_path / "out", ConvertOptions(workers=workers))
        assert caught.value.problems == expected and not (tmp_path / "out").exists()


def test_float_image_takes_the_full_read_and_gives_the_window_formula(cv_cases, tmp_path):
    image, label = cv_cases["c02"]
    image = sitk.Cast(image, sitk.sitkFloat32) + 0.25
    dataset, ids = cv_write_dataset(tmp_path / "ds", {"f": (image, label)})
    assert sitk.ReadImage(str(dataset / "imagesTr" / f"{ids['f']}.nii.gz")).GetPixelID() == sitk.sitkFloat32
    convert_dataset(dataset, tmp_path / "out", ConvertOptions(split=(100, 0, 0)))
    hu = sitk.GetArrayFromImage(image).astype(float)
    pngs = sorted((tmp_path / "out" / "images" / "train").glob("*.png"))
    assert len(pngs) >= len(reference_boxes(label))
    for png in pngs:
        z = int(png.stem.rsplit("_", 1)[1])
        window = np.floor((np.clip(hu[z], -100, 400) + 100) * 255 / 500 + 0.5)
        np.testing.assert_array_equal(np.asarray(Image.open(png)), window)


def test_a_datasets_own_splits_json_decides_the_splits(cv_cases, tmp_path):
    """The lists of DATASET/splits.json (what train and compare read) win over --split; unlisted cases
    are skipped and reported; a case in two lists is refused."""
    dataset, ids = cv_write_dataset(tmp_path / "ds", {c: cv_cases[c] for c in ("c00", "c01", "c02", "c03")})
    lists = {"train": [ids["c00"], ids["c01"]], "val": [ids["c02"]], "test": ["not-a-case"]}
    (dataset / "splits.json").write_text(json.dumps(lists))
    result = convert_dataset(dataset, tmp_path / "out", ConvertOptions(split=(0, 0, 100)))
    written = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert {k: written[k] for k in ("train", "val", "test")} == {"train": sorted(lists["train"]),
                                                                "val": lists["val"], "test": []}
    assert set(result.skipped) == {ids["c03"]} and "splits.json" in result.skipped[ids["c03"]]
    for split, members in (("train", lists["train"]), ("val", lists["val"]), ("test", [])):
        cases = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "out" / "images" / split).glob("*.png")}
        assert cases == set(members)
    (dataset / "splits.json").write_text(json.dumps({**lists, "test": [ids["c01"]]}))
    with pytest.raises(InputError, match=f"case {ids['c01']} is in both 'train' and 'test'"):
        convert_dataset(dataset, tmp_path / "out2", ConvertOptions())
    assert not (tmp_path / "out2").exists()
