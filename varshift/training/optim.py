"""The optimiser and its schedule: SGD with momentum, the learning rate per epoch, the L1 penalty."""

from __future__ import annotations

import math

import torch
from torch import nn


def milestone_epochs(optim: dict, epochs: int) -> list[int]:
    """The epochs (0-based, as ``LambdaLR`` counts) from which the learning rate is multiplied once more by
    ``optim.gamma``: the fractions ``optim.milestones`` of ``epochs``, rounded."""
    return [round(fraction * epochs) for fraction in optim["milestones"]]


def lr_factor(optim: dict, epochs: int):
    """The learning-rate multiplier of each epoch (0-based), for ``LambdaLR``."""
    milestones = milestone_epochs(optim, epochs)
    if optim["schedule"] == "multistep":
        return lambda e: optim["gamma"] ** sum(e >= m for m in milestones)
    if optim["schedule"] == "cosine":
        return lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs))
    return lambda e: 1.0


def build_optimizer(model: nn.Module, optim: dict, device: torch.device) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                           nesterov=optim["nesterov"], weight_decay=optim["weight_decay"],
                           fused=device.type == "cuda")


def build_scheduler(optimizer: torch.optim.Optimizer, optim: dict, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, epochs))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over conv and linear weights (BN parameters and biases are left alone)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(w.abs().sum() for w in weights)
