"""The U-Net trainer (``--model unet2d|unet3d``): cache, samplers, epochs, validation, checkpoints, bundle.

Validation runs ``deepliver.inference.predict.predict_volume`` on each validation case's whole volume on
its original grid (tumor task: inside the true liver's bounding box + margin, as the cascade crops around
the predicted liver) and scores it two ways (``validation_scores``): ``dice``, the mean of the cases' Dice
(``deepliver.metrics.overlap_metrics``; a case without the structure scores 1 when nothing is predicted),
and ``dice_global``, one Dice of all validation voxels pooled (LiTS' "Dice global"). ``validation.metric``
names the one the schedule, early stopping and ``best.pt`` follow; the log and the bundle record both. The
tumor task follows ``dice_global``: with the mean, a model that predicts no tumor anywhere scores the share
of tumor-free validation cases and can stay "best" for good (seen on 64 phantoms: epochs 2-25 predicted
nothing at 0.19, every later epoch found tumors at 0.03-0.13).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from deepliver.dataset.splits import read_splits_file, split_cases
from deepliver.errors import ConfigError, LabelError
from deepliver.imaging.geometry import Geometry
from deepliver.inference.predict import INFERENCE_DEFAULTS, model_from_module, predict_volume
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle
from deepliver.models.unet import divisor
from deepliver.progress import ProgressCallback
from deepliver.train import ddp
from deepliver.train.cache import Preprocessing, build_cache, list_cases, task_mask
from deepliver.train.callbacks import (BestMetric, CsvLog, EarlyStopping, make_scheduler, step_schedule,
                                       tensorboard_writer, validation_due)
from deepliver.train.checkpoint import (determinism, load_checkpoint, restore_training_state, save_checkpoint,
                                       seed_everything, training_state)
from deepliver.train.config import TrainConfig
from deepliver.train.data import SampleSource, TrainingSamples, epoch_loader, load_cached, loader_workers
from deepliver.train.loop import StepOptions, make_loss, train_epoch
from deepliver.train.run import RunPaths

__all__ = ["train_unet", "split_dataset", "model_config", "validate", "validation_scores", "seed_everything"]


def split_dataset(dataset: Path, case_ids: list[str], config: TrainConfig) -> tuple[list[str], list[str]]:
    """``(train, val)`` case ids: ``DATASET/splits.json`` when present, else ``config.data.split``."""
    path = dataset / "splits.json"
    if path.is_file():
        listed, _ = read_splits_file(path, case_ids)
        train, val = listed.train, listed.val
        source = f"{path.name}"
    else:
        splits = split_cases(case_ids, config.data.split, config.data.split_seed)
        train, val = splits.train, splits.val
        source = f"split {'/'.join(f'{r:g}' for r in config.data.split)}"
    if not train or not val:
        raise ConfigError(f"the dataset has {len(case_ids)} case(s); {source} gives {len(train)} training and "
                          f"{len(val)} validation case(s), and training needs at least one of each: add cases "
                          "or change the split (--val-fraction)", dataset)
    return train, val


def model_config(config: TrainConfig, fingerprint: Optional[dict] = None) -> ModelConfig:
    """The bundle's ``ModelConfig`` for a U-Net training config."""
    u, d, dims = config.unet, config.data, config.spatial_dims
    return ModelConfig(
        architecture="unet", task=config.task, spatial_dims=dims,
        arch_args={"channels": list(u.channels), "strides": list(u.strides), "num_res_units": u.num_res_units,
                   "norm": u.norm, "dropout": u.dropout, "out_channels": 2},
        labels={"background": 0, config.task: 1}, in_channels=2 * u.context_slices + 1 if dims == 2 else 1,
        target_spacing=tuple(d.target_spacing), patch_size=tuple(d.patch_size),
        intensity=Intensity(window=tuple(d.window), normalization=d.normalization),
        crop_margin_mm=d.crop_margin_mm, fingerprint=dict(fingerprint or {}),
        training={"model": config.model, "seed": config.seed, "config": config.to_dict()},
        inference={**INFERENCE_DEFAULTS, "batch_size": config.validation.batch_size,
                   "overlap": config.validation.overlap, "blend": config.validation.blend,
                   "divisor": divisor(u.strides), "orientation": d.orientation})


def _validation_image(entry: Path):
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    grid = Geometry.from_dict(meta["original_grid"])
    return meta["case"], grid.image_from_array(np.load(entry / "original_image.npy")), \
        np.load(entry / "original_label.npy")


def validate(module, mc: ModelConfig, entries: list[Path], device: str,
             progress: Optional[ProgressCallback] = None) -> dict[str, tuple[int, int, int]]:
    """Per validation case (cache entries kept with ``keep_original``), with ``predict_volume``: the counts
    ``(true positives, predicted, reference)`` voxels of the task's structure (``validation_scores``)."""
    loaded = model_from_module(module, mc, device)
    counts = {}
    for i, entry in enumerate(entries):
        case, image, label = _validation_image(entry)
        roi = label >= 1 if mc.task == "tumor" else None
        pred = predict_volume(image, loaded, roi_mask=roi, stage="validate").astype(bool)
        ref = task_mask(label, mc.task)
        counts[case] = (int(np.count_nonzero(pred & ref)), int(np.count_nonzero(pred)), int(np.count_nonzero(ref)))
        if progress:
            progress("validate", i + 1, len(entries))
    return counts


def validation_scores(counts: dict[str, tuple[int, int, int]]) -> dict[str, float]:
    """``dice`` (mean of the cases' Dice, 1 for a case where both masks are empty, as ``overlap_metrics``
    scores it) and ``dice_global`` (2 x all true positives / (all predicted + all reference voxels); 1 when
    both are empty everywhere) from ``validate``'s counts; NaN for no case."""
    if not counts:
        return {"dice": float("nan"), "dice_global": float("nan")}
    per_case = [1.0 if p + r == 0 else 2 * tp / (p + r) for tp, p, r in counts.values()]
    tp, p, r = (sum(c[k] for c in counts.values()) for k in range(3))
    return {"dice": float(np.mean(per_case)), "dice_global": 1.0 if p + r == 0 else 2 * tp / (p + r)}


def _prepare_data(dataset: Path, run: RunPaths, config: TrainConfig, ctx, progress):
    cases = list_cases(dataset)
    train_ids, val_ids = split_dataset(dataset, [c.case for c in cases], config)
    prep = Preprocessing(tuple(config.data.target_spacing), Intensity(tuple(config.data.window),
                         config.data.normalization), config.task, config.data.crop_margin_mm,
                         config.data.orientation)
    wanted = [c for c in cases if c.case in set(train_ids) | set(val_ids)]
    entries = None
    if ctx.is_main:
        cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else run.cache
        entries = {k: str(v) for k, v in build_cache(wanted, prep, cache_dir, set(val_ids), config.data.workers,
                                                      progress).items()}
    entries = {k: Path(v) for k, v in ddp.broadcast(entries, ctx).items()}
    train_cases = [load_cached(entries[c]) for c in train_ids]
    if not any(c.meta["foreground"][config.task]["voxels"] for c in train_cases):
        what = "liver (label >= 1)" if config.task == "liver" else "tumor (label 2)"
        raise LabelError(f"no training case has any {what} voxel, so a {config.task} model cannot learn; "
                         f"check the labels (deepliver check) or train the other task", dataset)
    if config.task == "tumor":
        train_cases = [c for c in train_cases if c.meta["has_roi"]]
    fingerprint = {"dataset": dataset.name, "train_cases": train_ids, "val_cases": val_ids,
                   "preprocessing": prep.digest()[:16]}
    return train_cases, [entries[c] for c in val_ids], fingerprint


def _numpy_patch(config: TrainConfig) -> tuple[int, ...]:
    return tuple(int(p) for p in config.data.patch_size)[::-1]      # (x, y[, z]) -> numpy order


def train_unet(dataset: Path, out: Path, config: TrainConfig, *, resume: bool = False,
               progress: Optional[ProgressCallback] = None) -> Path:
    """Train a 2D or 3D U-Net into the RUN folder ``out`` (see ``deepliver.train.run.train``, which checks the
    folder and writes ``config.json`` first); returns ``out/model``."""
    import torch

    from deepliver.models.registry import build_model
    from deepliver.train.augment import Augmenter

    run = RunPaths(Path(out))
    ctx = ddp.setup(config.device)
    with determinism(config.deterministic):
        try:
            seed_everything(config.seed)
            state = load_checkpoint(run.last, ctx.device) if resume else None     # fail fast on a bad checkpoint
            train_cases, val_entries, fingerprint = _prepare_data(dataset, run, config, ctx,
                                                                  progress if ctx.is_main else None)
            mc = model_config(config, fingerprint)
            source = SampleSource(train_cases, config.task, _numpy_patch(config), config.unet.context_slices
                                  if config.spatial_dims == 2 else 0, config.data.positive_fraction,
                                  config.data.positive_sampling,
                                  config.augment.lesion_paste if config.augment.enabled else 0.0)
            o = config.optim
            samples = TrainingSamples(source, o.steps_per_epoch * o.batch_size * ctx.world_size, config.seed,
                                      Augmenter(config.augment, config.spatial_dims))
            model = build_model(mc).to(ctx.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
            scheduler = make_scheduler(optimizer, o)
            use_scaler = config.amp and ctx.device.startswith("cuda")
            scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
            best, early, start = BestMetric(), EarlyStopping(o.early_stop_patience), 0
            if state is not None:
                start = restore_training_state(state, model=model, optimizer=optimizer, scheduler=scheduler,
                                               scaler=scaler, callbacks={"best": best, "early": early})
            net = ddp.wrap(model, ctx)
            workers = loader_workers(config.data.workers, ctx.device)
            mc.training["loader_workers"] = workers
            loss_fn = make_loss()
            options = StepOptions(ctx.device, config.amp, o.grad_clip,
                                  f"batch {o.batch_size}, patch {'x'.join(str(p) for p in config.data.patch_size)}")
            log = CsvLog(run.log, keep_until_epoch=start) if ctx.is_main else None
            board = tensorboard_writer(run.tensorboard) if ctx.is_main else None
            loader = epoch_loader(samples, o.batch_size, workers, world_size=ctx.world_size, rank=ctx.rank,
                                  seed=config.seed, pin_memory=ctx.device.startswith("cuda"))
            for epoch in range(start, o.epochs):
                t0 = time.perf_counter()
                loader.sampler.set_epoch(epoch)
                loss = ddp.all_mean(train_epoch(net, loader, optimizer, loss_fn, scaler, options,
                                                stage=f"epoch {epoch + 1}/{o.epochs}",
                                                progress=progress if ctx.is_main else None), ctx)
                ddp.average_buffers(model, ctx)     # batch-norm statistics (unet.norm "batch"), if any
                scores: Optional[dict] = None
                metric: Optional[float] = None
                improved = stop = False
                if validation_due(epoch, config.validation.every, o.epochs):
                    counts = validate(model, mc, val_entries, ctx.device, progress) if ctx.is_main else {}
                    model.train()
                    scores = ddp.broadcast(validation_scores(counts), ctx)
                    metric = scores[config.validation.metric]
                    improved = best.update(metric, epoch)
                    stop = early.step(improved)
                step_schedule(scheduler, o.schedule, metric)
                if ctx.is_main:
                    _save(run, model, optimizer, scheduler, scaler, best, early, epoch, improved, scores)
                    row = {"epoch": epoch + 1, "train_loss": round(loss, 6),
                           "val_dice": round(scores["dice"], 6) if scores else "",
                           "val_dice_global": round(scores["dice_global"], 6) if scores else "",
                           "lr": optimizer.param_groups[0]["lr"], "best_epoch": best.epoch + 1,
                           "seconds": round(time.perf_counter() - t0, 2)}
                    log.append(row)
                    if board is not None:
                        for key in ("train_loss", "val_dice", "val_dice_global", "lr"):
                            if row[key] != "":
                                board.add_scalar(key, row[key], epoch + 1)
                if stop:
                    break
            ddp.write_debug_hash(model, ctx)
            if ctx.is_main:
                _write_bundle(run, mc, config.validation.metric, val_entries)
            ddp.barrier(ctx)
            return run.bundle
        finally:
            ddp.teardown(ctx)


def _save(run, model, optimizer, scheduler, scaler, best, early, epoch, improved, scores: Optional[dict]) -> None:
    """``last.pt`` every epoch; ``best.pt`` when a validation improved (or is the run's first; ``scores`` None:
    the epoch did not validate)."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if scores is not None and (improved or not run.best.is_file()):
        save_checkpoint(run.best, {"epoch": epoch + 1, "model": weights, **scores})
    save_checkpoint(run.last, training_state(epoch + 1, weights=weights, optimizer=optimizer, scheduler=scheduler,
                                             scaler=scaler, callbacks={"best": best, "early": early}))


def _write_bundle(run: RunPaths, mc: ModelConfig, metric: str, val_entries: list[Path]) -> None:
    state = load_checkpoint(run.best)
    dice = state["dice"] if "dice" in state else state["metric"]     # best.pt of a run from before dice_global
    mc.validation = {"metric": metric, "dice": dice, "dice_global": state.get("dice_global"),
                     "epoch": int(state["epoch"]), "cases": len(val_entries),
                     "on": "original grid, whole volumes (predict_volume)"}
    mc.training["epochs_run"] = int(load_checkpoint(run.last)["epoch"])
    save_bundle(run.bundle, mc, state["model"])
    from deepliver.models.onnx_export import try_export_onnx  # issue 8: model.onnx; a failure only warns
    try_export_onnx(run.bundle)
