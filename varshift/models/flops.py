"""What a network costs to run: FLOPs of a forward pass, counted by torch on the meta device, and the GPU-hours of
training it at a stated speed.

FLOPs are torch's ``FlopCounterMode`` count: the matrix products and convolutions, two FLOPs per multiply-add (the
BN layers, activations and pooling are left out, as in the published counts: ResNet-50's 4.09 G multiply-adds at
224x224 are 8.18 GFLOPs here). A training step costs about three forward passes (the backward pass two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from varshift.models.registry import build_on_meta

TRAINING_PASSES = 3  # forward + backward, in forward passes
# Passes over the training images after the last epoch, forward only (varshift.training.trainer.Trainer.finish):
# training-data accuracy in eval mode, the variance probe (2 passes), BN recalibration, the probe again (2).
FINAL_PASSES = 6


def forward_flops(name: str, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3, **kwargs) -> int:
    """FLOPs of one forward pass of one ``image_size`` x ``image_size`` image through network ``name`` (built with
    ``kwargs`` on the meta device: no memory, no time), without dropout."""
    model = build_on_meta(name, dropout=None, position="none", num_classes=num_classes, in_channels=in_channels,
                          **kwargs).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    return counter.get_total_flops()


@dataclass(frozen=True)
class TrainingCost:
    """The cost of one run of ``epochs`` over ``train_images``, a test pass over ``test_images`` after each epoch
    and varshift's final passes, for a network of ``flops`` forward FLOPs per image, on a GPU that trains
    ``reference_images_per_s`` images/s of a network of ``reference_flops`` (the same FLOPs per second)."""

    flops: int
    epochs: int
    train_images: int
    test_images: int
    reference_flops: int
    reference_images_per_s: float

    @property
    def forward_passes(self) -> int:
        """Images passed forward in the run, a training step counting as TRAINING_PASSES of them."""
        return ((TRAINING_PASSES * self.epochs + FINAL_PASSES) * self.train_images
                + (self.epochs + 1) * self.test_images)

    @property
    def flops_per_s(self) -> float:
        return TRAINING_PASSES * self.reference_flops * self.reference_images_per_s

    @property
    def images_per_s(self) -> float:
        """Training images/s of this network on that GPU."""
        return self.flops_per_s / (TRAINING_PASSES * self.flops)

    @property
    def gpu_hours(self) -> float:
        return self.forward_passes * self.flops / self.flops_per_s / 3600
