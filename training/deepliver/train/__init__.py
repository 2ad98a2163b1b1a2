"""Training: configs, per-case cache, samplers and augmentation, the epoch loop, callbacks, checkpoints, DDP.

Library entry: ``deepliver.train.run.train(dataset, out, config, resume=False, progress=None) -> Path``.
"""
