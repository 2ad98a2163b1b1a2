"""The epoch loop's stops: a non-finite loss and running out of memory give clear messages."""

from __future__ import annotations

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
