"""The Faster R-CNN training loop (see ``deepliver.train.detection`` for the data and validation).

One epoch = one pass over the ``train`` slices of the convert output (shuffled by ``(seed, epoch)``),
``detector.optimizer`` (SGD with momentum 0.9, or AdamW) with ``optim.weight_decay``, gradient norm clipped
to ``optim.grad_clip``; the learning rate rises linearly over the first ``detector.warmup_steps`` steps of
the first epoch (torchvision's reference recipe; a function of the step, so resuming is unaffected). After each
epoch: validation Dice (``validate_detector``) at the best of ``THRESHOLDS`` (the threshold the bundle
will get is chosen the same way at the end; without a source dataset the metric is minus the mean
training loss), ReduceLROnPlateau and early stopping on it (``deepliver.train.callbacks``), ``best.pt``
when it improves, ``last.pt`` always (``deepliver.train.checkpoint``: model, optimizer, scheduler, scaler,
callbacks, RNG). A run resumed from ``last.pt`` ends with the same weights as an uninterrupted one (the
shuffle and flips are functions of seed, epoch and index, not of generator state).

Under torchrun (``deepliver.train.ddp``): the model runs in ``DistributedDataParallel``; each epoch's
shuffled order is padded to a multiple of the number of processes and rank ``r`` takes every K-th slice
from position ``r`` (as torch's ``DistributedSampler`` does), so every rank makes the same number of steps on
``optim.batch_size`` slices of its own. After each epoch the batch-norm running statistics are averaged over
ranks (``ddp.average_buffers``). Rank 0 validates, writes the checkpoints, the log and the bundle; the
metric is broadcast so that the scheduler and early stopping agree on every rank.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from deepliver.errors import DeepLiverError
from deepliver.progress import ProgressCallback
from deepliver.train.loop import TrainingError

__all__ = ["NonFiniteLossError", "shard", "train_fasterrcnn_bundle"]


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""


def shard(order: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s share of ``order``: padded with its own first items to a multiple of ``world_size``,
    then every ``world_size``-th item from position ``rank`` (torch's ``DistributedSampler`` rule)."""
    if world_size <= 1:
        return list(order)
    total = math.ceil(len(order) / world_size) * world_size
    padded = list(order) + list(order[:total - len(order)])
    return padded[rank:total:world_size]


def _epoch(model, dataset, optimizer, scaler, epoch: int, config, ctx,
           progress: Optional[ProgressCallback]) -> float:
    """Train one epoch on this rank's share of the slices; returns its mean loss. ``NonFiniteLossError`` on a
    NaN/inf loss."""
    import torch

    from deepliver.train.detection import collate

    batch_size, device = int(config.optim.batch_size), ctx.device
    seed = torch.Generator().manual_seed(int(config.seed) * 100003 + epoch)
    order = shard(torch.randperm(len(dataset), generator=seed).tolist(), ctx.rank, ctx.world_size)
    model.train()
    dataset.set_epoch(epoch)
    total, steps = 0.0, math.ceil(len(order) / batch_size)
    use_amp = bool(config.amp) and device.startswith("cuda")
    warmup = int(config.detector.warmup_steps) if epoch == 0 else 0
    base_lr = [group["lr"] for group in optimizer.param_groups]
    for step in range(steps):
        if warmup:
            for group, lr in zip(optimizer.param_groups, base_lr):
                group["lr"] = lr * min(1.0, (step + 1) / warmup)
        images, targets = collate([dataset[int(i)] for i in order[step * batch_size:(step + 1) * batch_size]])
        images = [im.to(device) for im in images]
        targets = [{k: (v.to(device) if hasattr(v, "to") else v) for k, v in t.items()} for t in targets]
        with torch.autocast("cuda", enabled=use_amp):
            loss = sum(model(images, targets).values())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the Faster R-CNN loss became {float(loss.detach())} at epoch {epoch + 1}, "
                                     f"step {step + 1}; lower the learning rate (--lr, now {config.optim.lr:g})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(config.optim.grad_clip))
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach())
        if progress:
            progress(f"epoch {epoch + 1}/{config.optim.epochs}", step + 1, steps)
    for group, lr in zip(optimizer.param_groups, base_lr):
        group["lr"] = lr
    return total / max(steps, 1)


def make_optimizer(model, config):
    """``detector.optimizer``: SGD (momentum 0.9) or AdamW, at ``optim.lr`` with ``optim.weight_decay``."""
    import torch

    from deepliver.errors import ConfigError

    params = [p for p in model.parameters() if p.requires_grad]
    lr, decay = float(config.optim.lr), float(config.optim.weight_decay)
    if config.detector.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)
    if config.detector.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    raise ConfigError(f"detector.optimizer must be sgd or adamw, got {config.detector.optimizer!r}")


def train_fasterrcnn_bundle(data, out: Path, config, resume: bool = False,
                            progress: Optional[ProgressCallback] = None, ctx=None) -> Path:
    """Train Faster R-CNN on ``data`` (``DetectionData``) into ``out``; returns the bundle ``out/model``.
    ``ctx``: the ``deepliver.train.ddp.DistContext`` (default: one process on ``config.device``)."""
    from deepliver.inference.predictor import resolve_device
    from deepliver.train.checkpoint import determinism
    from deepliver.train.ddp import DistContext

    ctx = ctx or DistContext(device=resolve_device(config.device))
    with determinism(config.deterministic):
        return _train(data, out, config, resume, progress if ctx.is_main else None, ctx)


def _train(data, out: Path, config, resume: bool, progress: Optional[ProgressCallback], ctx) -> Path:
    import torch

    from deepliver.inference.predict import model_from_module
    from deepliver.models.bundle import save_bundle
    from deepliver.models.fasterrcnn import FasterRCNNArgs, build_fasterrcnn
    from deepliver.train.callbacks import (BestMetric, CsvLog, EarlyStopping, make_scheduler, step_schedule,
                                           validation_due)
    from deepliver.train.checkpoint import load_checkpoint, restore_training_state, seed_everything
    from deepliver.train import ddp
    from deepliver.train.detection import (THRESHOLDS, CocoSlices, choose_threshold, detector_config,
                                          validate_detector)

    device = ctx.device
    seed_everything(int(config.seed))
    args = FasterRCNNArgs(variant=config.detector.backbone, image_size=data.size,
                          box_batch_size_per_image=int(config.detector.box_batch_size_per_image),
                          rpn_post_nms_top_n_test=int(config.detector.test_proposals))
    model = build_fasterrcnn(args, pretrained=bool(config.detector.pretrained)).to(device)
    net = ddp.wrap(model, ctx)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config.optim)
    scaler = torch.amp.GradScaler("cuda", enabled=bool(config.amp) and device.startswith("cuda"))
    best, stopper = BestMetric(), EarlyStopping(config.optim.early_stop_patience)
    checkpoints = out / "checkpoints"
    start = 0
    if resume:
        start = restore_training_state(load_checkpoint(checkpoints / "last.pt", device), model=model,
                                       optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                       callbacks={"best": best, "early_stopping": stopper})
    flip = float(config.augment.flip_prob) if config.augment.enabled else 0.0
    train_set = CocoSlices(data.root, "train", flip_prob=flip, seed=int(config.seed))
    if not len(train_set):
        raise DeepLiverError("no training slices in coco_train.json: the task's label is absent from every "
                             "training case", data.root)
    log = CsvLog(out / "log.csv", keep_until_epoch=start if resume else None) if ctx.is_main else None
    bundle_config = detector_config("fasterrcnn", config, data, args.to_dict(), config.detector.score_threshold)
    validation: dict = {}
    for epoch in range(start, int(config.optim.epochs)):
        loss = ddp.all_mean(_epoch(net, train_set, optimizer, scaler, epoch, config, ctx, progress), ctx)
        ddp.average_buffers(model, ctx)         # batch-norm statistics: the same on every rank
        validation, by_threshold, metric, improved, stop = {}, {}, None, False, False
        if validation_due(epoch, config.validation.every, int(config.optim.epochs)):
            validation = ddp.broadcast(validate_detector(model_from_module(model, bundle_config, device), data,
                                                         thresholds=list(THRESHOLDS)) if ctx.is_main else None, ctx)
            by_threshold = validation.get("dice_by_threshold") or {}
            metric = max(by_threshold.values()) if by_threshold else -loss
            improved = best.update(metric, epoch)
            stop = stopper.step(improved)
        step_schedule(scheduler, config.optim.schedule, metric)
        if ctx.is_main:
            _save(out, model, optimizer, scheduler, scaler, best, stopper, epoch, improved, validation)
            log.append({"epoch": epoch + 1, "loss": round(loss, 6), "val_dice": validation.get("dice", ""),
                        "val_dice_best_threshold": max(by_threshold.values()) if by_threshold else None,
                        "lr": optimizer.param_groups[0]["lr"]})
        if stop:
            break
    ddp.write_debug_hash(model, ctx)
    if not ctx.is_main:
        ddp.barrier(ctx)        # rank 0 writes the bundle
        return out / "model"
    best_state = load_checkpoint(checkpoints / "best.pt", device)
    model.load_state_dict(best_state["model"])
    validation = choose_threshold(model_from_module(model, bundle_config, device), data)
    bundle_config.validation = {"metric": f"{data.task}_dice_pooled", "best_epoch": int(best_state["epoch"]),
                                **validation}
    bundle = save_bundle(out / "model", bundle_config, best_state["model"])
    ddp.barrier(ctx)
    return bundle


def _save(out: Path, model, optimizer, scheduler, scaler, best, stopper, epoch: int, improved: bool,
          validation: dict) -> None:
    """``best.pt`` when the metric improved, ``last.pt`` always (rank 0 only)."""
    from deepliver.train.checkpoint import save_checkpoint, training_state

    checkpoints = out / "checkpoints"
    if improved:
        save_checkpoint(checkpoints / "best.pt", {"epoch": epoch + 1, "model": model.state_dict(),
                                                  "validation": dict(validation)})
    save_checkpoint(checkpoints / "last.pt", training_state(
        epoch + 1, weights=model.state_dict(), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        callbacks={"best": best, "early_stopping": stopper}))
