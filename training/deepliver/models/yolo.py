"""YOLO through ultralytics (the optional extra ``yolo``, AGPL-3.0): build from a model yaml, train
offline, export to a safetensors state dict, rebuild from yaml + state dict for inference.

Training runs ultralytics in a child process (``python -m deepliver.models.yolo SPEC.json``) whose
environment alone gets ``YOLO_CONFIG_DIR=RUN/yolo/settings`` and ``YOLO_OFFLINE=1``; the settings dir holds a
copy of matplotlib's DejaVuSans.ttf as ``Ultralytics/Arial.ttf``, because ultralytics' dataset check
otherwise fetches Arial.ttf from GitHub even when offline. Together with a model built from a yaml
(``yolov8n.yaml``, ``yolo11n.yaml``...: no weights) and ``plots=False``, training makes no network attempt.
The optimizer is explicit (``optimizer="auto"`` would ignore the learning rate). Every batch is an
optimizer step (``nbs = batch``): ultralytics' nominal batch of 64 accumulates 64 / batch batches, which on a
small dataset leaves a few steps an epoch. Its warmup lasts ``max(warmup_epochs * batches, 100)``
iterations (all of a short run on small data); ``warmup_epochs = 0`` turns it off. Ultralytics' own loop
does early stopping (``patience``) and keeps the best epoch by its fitness (0.1 mAP50 + 0.9 mAP50-95);
its pickled ``best.pt`` stays inside RUN and is converted by the child to ``export/weights.safetensors``
+ ``export/model_yaml.json``; the parent process and inference never unpickle anything.

Inference imports ultralytics (with ``YOLO_OFFLINE=1`` set only during that import: ultralytics otherwise
does a DNS lookup when imported; its log goes to stderr) to rebuild ``DetectionModel`` from the yaml dict
kept in ``model.json``. That import creates ultralytics' settings file in the user's config folder (its
usual place, ``~/.config/Ultralytics``) if there is none.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from deepliver.atomic import write_json_atomic
from deepliver.errors import ConfigError, DeepLiverError
from deepliver.progress import ProgressCallback

__all__ = ["INSTALL_HINT", "YoloTrainOptions", "YoloTrainResult", "require_ultralytics", "offline_settings_dir",
           "offline_env", "train_yolo", "build_yolo", "yolo_detect"]

INSTALL_HINT = "pip install 'slicer-deepliver[yolo]'  (or: pip install 'ultralytics>=8.3')"
OPTIMIZERS = ("SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp")


def require_ultralytics() -> None:
    """Raise a one-line ``ConfigError`` with the install command when ultralytics is not installed."""
    try:
        found = importlib.util.find_spec("ultralytics") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        found = False
    if not found:
        raise ConfigError(f"YOLO needs the optional package ultralytics (AGPL-3.0); install it with: {INSTALL_HINT}")


@dataclass(frozen=True)
class YoloTrainOptions:
    """Ultralytics training settings. ``model_yaml``: an ultralytics model name (``yolov8n.yaml``) or a path;
    ``image_size``: ``imgsz`` (a multiple of 32; the convert slice size); ``lr``: ``lr0``; ``patience``:
    epochs without improvement before early stopping; ``resume``: continue ``RUN/yolo/train/weights/last.pt``;
    ``warmup_epochs``: ultralytics' (0: none); ``scale``: its random zoom gain (``1 +- scale``)."""

    model_yaml: str = "yolov8n.yaml"
    epochs: int = 50
    batch: int = 16
    image_size: int = 512
    lr: float = 0.01
    optimizer: str = "SGD"
    device: str = "cpu"
    seed: int = 0
    deterministic: bool = True
    workers: int = 0
    patience: int = 20
    amp: bool = False
    resume: bool = False
    warmup_epochs: float = 3.0
    scale: float = 0.5

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"YOLO optimizer must be one of {', '.join(OPTIMIZERS)} (not 'auto': it ignores "
                              f"the learning rate), got {self.optimizer!r}")
        if self.image_size % 32:
            raise ConfigError(f"YOLO image size must be a multiple of 32 (the network's stride), got "
                              f"{self.image_size}; convert with --size 256 or 512")
        if self.epochs < 1 or self.batch < 1:
            raise ConfigError(f"epochs and batch must be >= 1, got {self.epochs} and {self.batch}")


@dataclass
class YoloTrainResult:
    """The trained network: its ultralytics yaml dict, state dict (tensors) and ultralytics' final metrics."""

    model_yaml: dict[str, Any]
    state_dict: dict[str, Any]
    metrics: dict[str, float]
    log: Path


def offline_settings_dir(folder: str | os.PathLike, install_font: bool = True) -> Path:
    """Create an ultralytics settings dir in ``folder`` (use as ``YOLO_CONFIG_DIR``) holding a local font
    as ``Ultralytics/Arial.ttf`` so ultralytics never downloads one. Returns ``folder``."""
    folder = Path(folder)
    (folder / "Ultralytics").mkdir(parents=True, exist_ok=True)
    if install_font:
        import matplotlib

        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            target = folder / "Ultralytics" / name
            if not target.is_file():
                shutil.copyfile(source, target)
    return folder


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def offline_env(settings_dir: str | os.PathLike, base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment for an offline ultralytics child process: ``base`` (default ``os.environ``) plus
    ``YOLO_CONFIG_DIR`` and ``YOLO_OFFLINE=1``, without torchrun's variables (ultralytics reads ``RANK`` and
    ``LOCAL_RANK`` to decide whether it is one of its own DDP workers; it launches those itself)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in TORCHRUN_VARIABLES and not k.startswith("TORCHELASTIC_")}
    env.update(YOLO_CONFIG_DIR=str(Path(settings_dir).resolve()), YOLO_OFFLINE="1")
    return env


def train_yolo(data_yaml: str | os.PathLike, folder: str | os.PathLike, options: YoloTrainOptions,
               progress: Optional[ProgressCallback] = None, install_font: bool = True) -> YoloTrainResult:
    """Train a YOLO model on ``data_yaml`` (``deepliver convert``'s) inside ``folder`` (``RUN/yolo``).

    Writes ``folder/settings`` (ultralytics settings + font), ``folder/train`` (ultralytics' run),
    ``folder/train.log`` (its output), ``folder/export`` (safetensors + yaml + metrics). ``install_font``
    False leaves the font out (only to show that ultralytics then goes online). Raises ``DeepLiverError``
    naming the log when ultralytics fails.
    """
    require_ultralytics()
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "train" / "weights" / "last.pt"
    if options.resume and not last.is_file():
        raise ConfigError(f"nothing to resume: {last} does not exist; start without --resume", folder)
    spec = {"data": str(Path(data_yaml).resolve()), "folder": str(folder), "options": asdict(options)}
    write_json_atomic(folder / "spec.json", spec)
    export = folder / "export"
    shutil.rmtree(export, ignore_errors=True)
    env = offline_env(offline_settings_dir(folder / "settings", install_font))
    log = folder / "train.log"
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen([sys.executable, "-m", "deepliver.models.yolo", str(folder / "spec.json")],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(folder))
        _follow(child, folder / "progress.json", options.epochs, progress)
    if child.returncode != 0 or not (export / "weights.safetensors").is_file():
        tail = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        raise DeepLiverError(f"ultralytics training failed (exit {child.returncode}): "
                             f"{tail[-1][:300] if tail else 'no output'}; see the log", log)
    from safetensors.torch import load_file

    return YoloTrainResult(json.loads((export / "model_yaml.json").read_text(encoding="utf-8")),
                           load_file(str(export / "weights.safetensors")),
                           json.loads((export / "metrics.json").read_text(encoding="utf-8")), log)


def _follow(child: subprocess.Popen, progress_file: Path, epochs: int, progress: Optional[ProgressCallback]) -> None:
    """Wait for ``child``, reporting the epochs it writes to ``progress_file``."""
    done = -1
    while child.poll() is None:
        time.sleep(0.3)
        if progress is not None and progress_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                epoch = int(json.loads(progress_file.read_text(encoding="utf-8"))["epoch"])
                if epoch != done:
                    done = epoch
                    progress("yolo", min(epoch, epochs), epochs)


@contextlib.contextmanager
def _offline_import():
    """``YOLO_OFFLINE=1`` for the duration of the first ultralytics import (its DNS check), then restored;
    stdout redirected to stderr meanwhile, so ultralytics' logger (bound to ``sys.stdout`` when imported)
    never writes into stdout, where ``--progress json`` lines go."""
    previous = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if previous is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = previous


def build_yolo(model_yaml: Any):
    """An ultralytics ``DetectionModel`` rebuilt from its yaml dict (random weights; load a state dict).

    ``model_yaml``: the dict, or a ``ModelConfig`` whose ``arch_args["yaml"]`` holds it (the registry's call).
    """
    require_ultralytics()
    if hasattr(model_yaml, "arch_args"):
        model_yaml = model_yaml.arch_args["yaml"]
    with _offline_import():
        from ultralytics.nn.tasks import DetectionModel
    return DetectionModel(cfg=dict(model_yaml), ch=int(model_yaml.get("channels", 3)),
                          nc=int(model_yaml["nc"]), verbose=False)


def yolo_detect(model, batch, score_threshold: float, iou_threshold: float = 0.7, max_det: int = 100):
    """Detections of an eval-mode ``DetectionModel`` on ``batch`` (``(B, 3, H, W)`` float in [0, 1], H and W
    multiples of 32): a list of ``(boxes (n, 4) [x1, y1, x2, y2] pixel edges, scores (n,))`` tensors per
    image, class-agnostic NMS at ``iou_threshold``, scores >= ``score_threshold``, highest first."""
    import torch
    from torchvision.ops import nms

    with torch.no_grad():
        out = model(batch)
    preds = out[0] if isinstance(out, (tuple, list)) else out
    end2end = bool(getattr(model.model[-1], "end2end", False))   # NMS-free heads (yolov10, yolo26)
    results = []
    for pred in preds:
        if end2end:  # (max_det, 6): x1, y1, x2, y2, score, class
            boxes, scores = pred[:, :4], pred[:, 4]
        else:  # (4 + nc, anchors): centre x, centre y, width, height, class scores
            xywh, scores = pred[:4].T, pred[4:].max(dim=0).values
            boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], dim=1)
        keep = scores >= score_threshold
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, iou_threshold)[:max_det]
        results.append((boxes[keep], scores[keep]))
    return results


# --- child process ------------------------------------------------------------------------------------
def _child(spec_path: str) -> int:
    """Run ultralytics training as ``spec.json`` says and export the best weights (child process only)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    folder, opts = Path(spec["folder"]), spec["options"]
    from safetensors.torch import save_file
    from ultralytics import YOLO

    if opts["resume"]:
        model = YOLO(str(folder / "train" / "weights" / "last.pt"))
        kwargs: dict[str, Any] = {"resume": True}
    else:
        model = YOLO(opts["model_yaml"])
        kwargs = dict(data=spec["data"], epochs=opts["epochs"], batch=opts["batch"], imgsz=opts["image_size"],
                      lr0=opts["lr"], optimizer=opts["optimizer"], device=opts["device"], seed=opts["seed"],
                      deterministic=opts.get("deterministic", True), workers=opts["workers"],
                      patience=opts["patience"], amp=opts["amp"],
                      plots=False, pretrained=False, project=str(folder), name="train", exist_ok=True,
                      verbose=False, nbs=opts["batch"], warmup_epochs=opts.get("warmup_epochs", 3.0),
                      scale=opts.get("scale", 0.5))
    model.add_callback("on_fit_epoch_end", lambda trainer: write_json_atomic(
        folder / "progress.json", {"epoch": int(trainer.epoch) + 1}))
    model.train(**kwargs)
    net = model.model.float().eval()
    export = folder / "export"
    export.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
              str(export / "weights.safetensors"))
    metrics = {k: float(v) for k, v in (getattr(model.trainer, "metrics", None) or {}).items()
               if isinstance(v, (int, float))}
    write_json_atomic(export / "metrics.json", metrics)
    write_json_atomic(export / "model_yaml.json", dict(net.yaml))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
