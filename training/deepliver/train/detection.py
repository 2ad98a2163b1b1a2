"""Training the detectors (Faster R-CNN, YOLO) on ``deepliver convert``'s 2D slices and boxes.

Data: ``train`` takes either a dataset folder (``dataset.json``: it runs ``convert`` itself into
``RUN/detection_data`` with formats coco + yolo, the task, ``data.window``, slices of ``image_size``
pixels and the config's seed) or a ``convert`` output folder (``splits.json`` + ``coco_train.json`` /
``data.yaml``, as the DATASET argument or ``detector.convert_dir``). Negatives matter: the seeds' YOLOv3
trained on tumor slices only and fired everywhere, so the conversion keeps
``background_ratio = (1 - data.positive_fraction) / data.positive_fraction`` slices without a box per
slice with one (one to one at the default 0.5), drawn inside the liver's z-range first; both trainers
learn from them (an image without boxes is a pure negative for torchvision and ultralytics alike).

Validation runs the code ``deepliver segment`` runs for a detector tumor stage
(``deepliver.inference.detect.detect_volume``) on the validation cases' whole volumes, with the
ground-truth liver as the ROI, and logs the tumor Dice pooled over those cases (2 |A and B| / (|A| + |B|),
voxels summed over cases; 1.0 when both are empty) at each score threshold of ``THRESHOLDS`` from one
detector pass. The best epoch is the one with the highest Dice over thresholds, and the bundle's
``inference.score_threshold`` is the threshold that gave it (``detector.score_threshold`` when every Dice
is 0); that validation Dice is optimistic, the test split gives the unbiased one. Validation needs the
source dataset: the one given, or the one recorded in the convert folder's ``.convert/source.json``.

Slice size: ``detector.image_size`` (YOLO, a multiple of 32) or ``detector.min_size`` (Faster R-CNN, which
is also its transform's ``max_size``: slices are square, so ``detector.max_size`` is not used).

Liver crop (``detector.crop = "liver"``, tumor task): the slices are cut to the true liver's square
(``deepliver.train.detection_crop``) into ``RUN/detection_crop`` before training, and the bundle's
``inference["crop"]`` tells ``detect_volume`` to cut the same square around the ROI; tumors are then about
1.5-2 times larger in pixels (phantoms at 256 px: median box 11 -> 17 px). ``none``: convert's whole slices.

Faster R-CNN (``fasterrcnn``): ``detector.optimizer`` (SGD with momentum 0.9, or AdamW) on batches of
slices (random x/y flips when ``augment.enabled``), ReduceLROnPlateau and early stopping on the validation
Dice, the best epoch kept, ``RUN/checkpoints/last.pt`` after every epoch for ``--resume``. YOLO (``yolo``):
ultralytics' own loop in a child process (``deepliver.models.yolo``), offline, resumable from its
``last.pt``. Both write the bundle ``RUN/model`` (``model.json`` + ``weights.safetensors``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from deepliver.errors import ConfigError, InputError
from deepliver.progress import ProgressCallback

__all__ = ["DETECTOR_MODELS", "DetectionData", "prepare_detection_data", "CocoSlices", "collate",
           "detection_dice", "THRESHOLDS", "validate_detector", "choose_threshold",
           "detector_config", "crop_mode", "train_detector"]

DETECTOR_MODELS = ("fasterrcnn", "yolo")
ONNX_NOTE = {"supported": False, "reason": "ONNX export of detector bundles is not implemented yet; "
             "run them with the torch runtime"}


@dataclass(frozen=True)
class DetectionData:
    """A convert output ready for training: its folder, slice ``size`` (square, pixels), the HU ``window``,
    the task, and the source dataset folder (for validation volumes; None when unknown). For a convert
    output made elsewhere, ``window`` is the config's ``data.window``: it must be the ``--window`` that
    ``convert`` used (the folder does not record it), since inference windows slices with it."""

    root: Path
    size: int
    window: tuple[float, float]
    task: str
    dataset: Optional[Path]


def _slice_size(root: Path) -> int:
    sizes = set()
    for record in sorted((root / ".convert").glob("*.json")):
        if record.name != "source.json":
            data = json.loads(record.read_text(encoding="utf-8"))
            sizes.add((int(data["width"]), int(data["height"])))
    if len(sizes) != 1 or len({*next(iter(sizes))}) != 1:
        found = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)) or "none"
        raise InputError(f"detectors need square slices of one size, found {found}; convert again with "
                         "--size 256 (or 512)", root)
    return next(iter(sizes))[0]


def _check_task(root: Path, task: str) -> None:
    """``InputError`` when the convert output holds boxes of another task (its COCO category name)."""
    coco = root / "coco_train.json"
    if coco.is_file():
        names = {c.get("name") for c in json.loads(coco.read_text(encoding="utf-8")).get("categories", [])}
        if names and task not in names:
            raise InputError(f"this convert output holds {', '.join(sorted(map(str, names)))} boxes, but --task is "
                             f"{task}; convert again with --task {task}", root)


def prepare_detection_data(dataset: str | os.PathLike, run: str | os.PathLike, config,
                           progress: Optional[ProgressCallback] = None) -> DetectionData:
    """The convert output to train on (see the module docstring); converts into ``RUN/detection_data``
    when given a dataset folder. ``config`` is a ``TrainConfig``."""
    from deepliver.dataset.convert import ConvertOptions, convert_dataset
    from deepliver.dataset.slices import Window

    dataset, run = Path(dataset), Path(run)
    det = config.detector
    size = int(det.image_size if config.model == "yolo" else det.min_size)
    window = (float(config.data.window[0]), float(config.data.window[1]))
    if det.convert_dir:
        root, source = Path(det.convert_dir), dataset if (dataset / "dataset.json").is_file() else None
    elif (dataset / "dataset.json").is_file():
        pf = float(config.data.positive_fraction)
        if not 0 < pf <= 1:
            raise ConfigError(f"data.positive_fraction must be in (0, 1], got {pf}")
        options = ConvertOptions(formats=("yolo", "coco"), task=config.task, window=Window(*window), size=size,
                                 split=tuple(config.data.split), seed=int(config.data.split_seed),
                                 background_ratio=(1.0 - pf) / pf)      # the U-Nets' split (data.split*)
        root, source = run / "detection_data", dataset
        convert_dataset(dataset, root, options, progress)
    else:
        root, source = dataset, None
    if not (root / "splits.json").is_file():
        raise InputError("neither a dataset folder (dataset.json) nor a 'deepliver convert' output "
                         "(splits.json); give one of them", root)
    _check_task(root, config.task)
    if source is None:
        recorded = root / ".convert" / "source.json"
        if recorded.is_file():
            candidate = Path(json.loads(recorded.read_text(encoding="utf-8")).get("dataset", ""))
            source = candidate if (candidate / "dataset.json").is_file() else None
    return DetectionData(root, _slice_size(root), window, config.task, source)


class CocoSlices:
    """A torch map-style dataset over ``coco_<split>.json``: ``(image (3, H, W) float in [0, 1], target)``
    with ``target = {"boxes": (n, 4) float [x1, y1, x2, y2] pixel edges, "labels": (n,) int64 ones,
    "image_id": int}``; COCO ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``. Slices without a box give
    ``(0, 4)`` boxes (negatives). ``flip_prob``: chance of each of an x and a y flip (training only)."""

    def __init__(self, root: str | os.PathLike, split: str, flip_prob: float = 0.0, seed: int = 0):
        root = Path(root)
        path = root / f"coco_{split}.json"
        if not path.is_file():
            raise InputError(f"coco_{split}.json is missing; convert with --formats coco", root)
        doc = json.loads(path.read_text(encoding="utf-8"))
        boxes: dict[int, list] = {}
        for ann in doc["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
        self.items = [(root / "images" / split / img["file_name"], int(img["id"]),
                       np.asarray(boxes.get(int(img["id"]), []), dtype=np.float32).reshape(-1, 4))
                      for img in doc["images"]]
        self.flip_prob = float(flip_prob)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Flips are drawn from ``(seed, epoch, index)``: set the epoch before iterating."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def negatives(self) -> int:
        """Number of slices without any box."""
        return sum(1 for _, _, b in self.items if not len(b))

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        from deepliver.models.fasterrcnn import slice_tensor

        path, image_id, boxes = self.items[index]
        pixels = np.array(Image.open(path).convert("L"))
        boxes = boxes.copy()
        height, width = pixels.shape
        draws = np.random.default_rng([self.seed, self.epoch, index]).random(2)
        if draws[0] < self.flip_prob:
            pixels, boxes[:, [0, 2]] = pixels[:, ::-1], width - boxes[:, [2, 0]]
        if draws[1] < self.flip_prob:
            pixels, boxes[:, [1, 3]] = pixels[::-1, :], height - boxes[:, [3, 1]]
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(boxes), dtype=torch.int64),
                  "image_id": image_id}
        return slice_tensor(np.ascontiguousarray(pixels)), target


def collate(batch):
    """Detection batches are lists: ``(images, targets)``."""
    return tuple(zip(*batch))


def detection_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """``(2 * |pred and truth|, |pred| + |truth|)`` of two masks (to pool over cases)."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    return 2 * int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))


THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Score thresholds tried on the validation cases at the end of training (``choose_threshold``)."""


def validate_detector(model, data: DetectionData, split: str = "val", thresholds: Optional[list[float]] = None,
                      progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """The pooled Dice of ``model`` (a ``LoadedModel``) on the ``split`` cases' whole volumes through
    ``detect_volume`` (ROI: the ground-truth liver; the liver task uses no ROI), at the bundle's score
    threshold: ``{"dice", "cases"}``; with ``thresholds``, also ``"dice_by_threshold"`` (one detector pass).
    ``{"dice": None, "cases": 0}`` without a source dataset or cases."""
    import SimpleITK as sitk

    from deepliver.dataset.convert import dataset_cases
    from deepliver.imaging.volumes import read_label, read_volume
    from deepliver.inference.detect import DETECT_DEFAULTS, detect_volume_thresholds
    from deepliver.labels import LIVER, TUMOR

    if data.dataset is None:
        return {"dice": None, "cases": 0}
    wanted = set(json.loads((data.root / "splits.json").read_text(encoding="utf-8")).get(split, []))
    cases = [c for c in dataset_cases(data.dataset) if c[0] in wanted]
    if not cases:
        return {"dice": None, "cases": 0}
    own = float({**DETECT_DEFAULTS, **model.config.inference}["score_threshold"])
    tried = sorted({own, *(thresholds or ())})
    num, den = np.zeros(len(tried)), np.zeros(len(tried))
    for i, (_, image_path, label_path) in enumerate(cases):
        label = sitk.GetArrayFromImage(read_label(label_path))
        liver = (label >= LIVER.value).astype(np.uint8)
        truth = label == TUMOR.value if data.task == "tumor" else liver > 0
        masks = detect_volume_thresholds(read_volume(image_path), model, tried,
                                         roi_mask=liver if data.task == "tumor" else None, stage="validate")
        for k, pred in enumerate(masks):
            n, d = detection_dice(pred, truth)
            num[k], den[k] = num[k] + n, den[k] + d
        if progress:
            progress("validate", i + 1, len(cases))
    dice = [1.0 if d == 0 else float(n / d) for n, d in zip(num, den)]
    result: dict[str, Any] = {"dice": dice[tried.index(own)], "cases": len(cases)}
    if thresholds:
        result["dice_by_threshold"] = {f"{t:g}": round(v, 6) for t, v in zip(tried, dice)}
    return result


def choose_threshold(model, data: DetectionData) -> dict[str, Any]:
    """Validation at each of ``THRESHOLDS`` plus the bundle's; sets ``model.config.inference["score_threshold"]``
    to the one with the best pooled Dice (ties: the one closest to 0.5; all zero: unchanged) and returns the
    validation dict with ``"dice"`` at the chosen threshold. The Dice is then optimistic for the validation
    cases (the threshold was fit on them): the test split gives the unbiased figure."""
    result = validate_detector(model, data, thresholds=list(THRESHOLDS))
    by = result.get("dice_by_threshold")
    if by and max(by.values()) > 0:
        best = max(by, key=lambda t: (by[t], -abs(float(t) - 0.5)))
        model.config.inference["score_threshold"] = float(best)
        result["dice"] = by[best]
        result["score_threshold"] = float(best)
    return result


def detector_config(architecture: str, config, data: DetectionData, arch_args: dict[str, Any],
                    score_threshold: float):
    """The ``ModelConfig`` of a detector bundle (2D, the task's class as label 1, slice size as patch
    size, convert's window, detection defaults for inference, ONNX marked unsupported)."""
    from deepliver.inference.detect import DETECT_DEFAULTS
    from deepliver.models.bundle import Intensity, ModelConfig

    return ModelConfig(
        architecture=architecture, task=config.task, spatial_dims=2, arch_args=arch_args,
        labels={"background": 0, config.task: 1}, in_channels=1, target_spacing=(None, None, None),
        patch_size=(data.size, data.size), intensity=Intensity(window=data.window, normalization="window"),
        crop_margin_mm=float(config.data.crop_margin_mm),
        fingerprint={"convert_dir": str(data.root.resolve()), "dataset": str(data.dataset) if data.dataset else None},
        training={"model": config.model, "seed": config.seed, "config": config.to_dict()},
        runtimes={"torch": {"supported": True}, "onnx": dict(ONNX_NOTE)},
        inference={**DETECT_DEFAULTS, "score_threshold": float(score_threshold), "crop": crop_mode(config)})


def crop_mode(config) -> str:
    """``detector.crop`` for the tumor task (checked), ``none`` for the liver task (no ROI to crop to)."""
    from deepliver.inference.detect import CROP_MODES

    if config.detector.crop not in CROP_MODES:
        raise ConfigError(f"detector.crop must be one of {', '.join(CROP_MODES)}, got {config.detector.crop!r}")
    return config.detector.crop if config.task == "tumor" else "none"


def train_detector(dataset: str | os.PathLike, out: str | os.PathLike, config, resume: bool = False,
                   progress: Optional[ProgressCallback] = None) -> Path:
    """Train ``config.model`` (``fasterrcnn`` or ``yolo``) on ``dataset`` into ``out``; returns the bundle
    folder ``out/model``. ``config`` is a ``TrainConfig``.

    Under torchrun: Faster R-CNN trains with DDP on every rank (``deepliver.train.detection_frcnn``); rank 0
    prepares the slices first. YOLO keeps ultralytics' own multi-GPU launcher: rank 0 trains it on all of
    the node's GPUs (ultralytics ``device="0,...,K-1"``, its own DDP processes) or on the CPU, and the other
    ranks return at once."""
    from deepliver.train import ddp

    if config.model not in DETECTOR_MODELS:
        raise ConfigError(f"train_detector trains {', '.join(DETECTOR_MODELS)}, not {config.model!r}")
    out = Path(out)
    if config.model == "yolo":
        from deepliver.models.yolo import require_ultralytics
        require_ultralytics()
        if int(os.environ.get("RANK", "0")) != 0:
            return out / "model"            # rank 0 runs ultralytics' own DDP (see above)
        return _train_yolo_bundle(_prepared(dataset, out, config, progress), out, config, resume, progress)
    from deepliver.train.detection_frcnn import train_fasterrcnn_bundle

    ctx = ddp.setup(config.device)
    try:
        data = ddp.broadcast(_prepared(dataset, out, config, progress) if ctx.is_main else None, ctx)
        return train_fasterrcnn_bundle(data, out, config, resume, progress, ctx)
    finally:
        ddp.teardown(ctx)


def _prepared(dataset, out: Path, config, progress: Optional[ProgressCallback]) -> DetectionData:
    """The training slices: convert output (``prepare_detection_data``), cut to the liver when asked."""
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_detection_data(dataset, out, config, progress)
    if crop_mode(config) == "liver":
        from deepliver.train.detection_crop import crop_to_liver
        data = crop_to_liver(data, out / "detection_crop", float(config.data.crop_margin_mm), progress)
    return data


def _train_yolo_bundle(data: DetectionData, out: Path, config, resume: bool,
                       progress: Optional[ProgressCallback]) -> Path:
    """Ultralytics training in ``out/yolo`` (``deepliver.models.yolo``), then the bundle and its Dice."""
    from deepliver.inference.predict import model_from_module
    from deepliver.inference.predictor import resolve_device
    from deepliver.models.bundle import save_bundle
    from deepliver.models.yolo import YoloTrainOptions, build_yolo, train_yolo

    if not (data.root / "data.yaml").is_file():
        raise InputError("data.yaml is missing; convert with --formats yolo", data.root)
    device = resolve_device(config.device)
    optimizer = {"sgd": "SGD", "adamw": "AdamW"}.get(config.detector.optimizer)
    if optimizer is None:
        raise ConfigError(f"detector.optimizer must be sgd or adamw, got {config.detector.optimizer!r}")
    gpus = 1 if device == "cpu" else max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))   # torchrun's K
    options = YoloTrainOptions(model_yaml=config.detector.yolo_model, epochs=int(config.optim.epochs),
                               batch=int(config.optim.batch_size) * gpus, image_size=data.size,
                               lr=float(config.optim.lr), seed=int(config.seed),
                               device="cpu" if device == "cpu" else ",".join(map(str, range(gpus))),
                               deterministic=bool(config.deterministic), workers=int(config.data.workers),
                               patience=int(config.optim.early_stop_patience) or 100, amp=bool(config.amp),
                               resume=resume, optimizer=optimizer,
                               warmup_epochs=float(config.detector.yolo_warmup_epochs),
                               scale=float(config.detector.yolo_scale))
    trained = train_yolo(data.root / "data.yaml", out / "yolo", options, progress)
    arch_args = {"yaml": trained.model_yaml}
    bundle_config = detector_config("yolo", config, data, arch_args, config.detector.score_threshold)
    model = build_yolo(trained.model_yaml)
    model.load_state_dict(trained.state_dict, strict=True)
    validation = choose_threshold(model_from_module(model.to(device).eval(), bundle_config, device), data)
    bundle_config.validation = {"metric": f"{data.task}_dice_pooled", **validation,
                                "ultralytics": trained.metrics}
    return save_bundle(out / "model", bundle_config, trained.state_dict)
