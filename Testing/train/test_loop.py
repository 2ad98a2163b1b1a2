"""The epoch loop's stops: a non-finite loss and running out of memory give clear messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepliver.train.loop import ResourceError, StepOptions, TrainingError, make_loss, train_epoch


class _OutOfMemoryNet(torch.nn.Module):
    """Stands in for a network too big for the device: torch raises this when an allocation fails."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _batches(n=2):
    return [(torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()) for _ in range(n)]


def test_out_of_memory_says_what_to_lower():
    net = _OutOfMemoryNet()
    opt = torch.optim.Adam(net.parameters())
    options = StepOptions("cpu", describe="batch 2, patch 8x8")
    with pytest.raises(ResourceError) as e:
        train_epoch(net, _batches(), opt, make_loss(), torch.amp.GradScaler("cuda", enabled=False), options)
    assert str(e.value) == ("out of memory on cpu (batch 2, patch 8x8): lower --batch or data.patch_size in the "
                            "config, or add --amp on a GPU")
    assert e.value.exit_code == 2


def test_non_finite_loss_stops_with_the_step_and_a_fix():
    net = torch.nn.Conv2d(1, 2, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.5)
    loss_fn = make_loss()

    def poisoned(logits, target):
        return loss_fn(logits, target) * float("nan")
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 3 step 1/2; lower --lr \(now 0.5\)"):
        train_epoch(net, _batches(), opt, poisoned, torch.amp.GradScaler("cuda", enabled=False), StepOptions(),
                    stage="epoch 3")


def test_validation_scores_mean_and_pooled_dice_against_overlap_metrics():
    from deepliver.metrics.overlap import overlap_metrics
    from deepliver.train.segmentation import validation_scores

    rng = np.random.default_rng(3)
    cases = {"a": (rng.random((6, 7, 8)) < 0.3, rng.random((6, 7, 8)) < 0.2),       # both masks drawn
             "b": (np.zeros((5, 5, 5), bool), np.zeros((5, 5, 5), bool)),            # both empty: Dice 1
             "c": (rng.random((4, 4, 4)) < 0.1, np.zeros((4, 4, 4), bool))}          # false positives only
    counts = {k: (int((p & r).sum()), int(p.sum()), int(r.sum())) for k, (p, r) in cases.items()}
    scores = validation_scores(counts)
    per_case = [overlap_metrics(p, r)["dice"] for p, r in cases.values()]
    pooled = overlap_metrics(np.concatenate([p.ravel() for p, _ in cases.values()]),
                             np.concatenate([r.ravel() for _, r in cases.values()]))["dice"]
    assert scores["dice"] == pytest.approx(np.mean(per_case), abs=1e-12) and per_case[1] == 1.0
    assert scores["dice_global"] == pytest.approx(pooled, abs=1e-12)
    assert validation_scores({"b": counts["b"]}) == {"dice": 1.0, "dice_global": 1.0}
    assert all(np.isnan(v) for v in validation_scores({}).values())
