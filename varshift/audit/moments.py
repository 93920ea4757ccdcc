"""Per-channel mean ``c`` and variance ``v`` of the BN inputs at test time.

One eval-mode pass over the sample inputs (dropout off, BN normalising with its running statistics),
the statistics of the paper's theory. Channels are dimension 1; both are computed per batch over the
batch and the remaining dimensions, variance with BN's unbiased estimator, then averaged over batches
and calls as :mod:`varshift.probes` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from varshift.bn import batchnorm_layers, preserved_modes


@dataclass(frozen=True)
class Moments:
    """Per-channel mean and variance (numpy float64 arrays of one length)."""

    mean: np.ndarray
    var: np.ndarray


class MomentsRecorder:
    """Running sums of per-channel mean and unbiased variance, by name."""

    def __init__(self):
        self._sums: dict[str, list] = {}

    def add(self, name: str, x) -> None:
        """Record ``x`` (batch, channels, ...); tensors without two values per channel are skipped."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.numel() < 2 * x.shape[1]:
            return
        x = x.detach().to(torch.float64)
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dim=dims), torch.var(x, dim=dims, correction=1)
        if name in self._sums:
            sums = self._sums[name]
            if sums[0].shape != mean.shape:
                return  # a layer called with other widths has no single per-channel statistic
            sums[0] += mean
            sums[1] += var
            sums[2] += 1
        else:
            self._sums[name] = [mean, var, 1]

    def moments(self) -> dict[str, Moments]:
        return {name: Moments((mean / calls).cpu().numpy(), (var / calls).cpu().numpy())
                for name, (mean, var, calls) in self._sums.items()}


def eval_moments(model: nn.Module, inputs: Iterable[Tensor], bn_names: set[str]) -> dict[str, Moments]:
    """Eval-mode moments of the inputs of the BN layers ``bn_names``."""
    bns = MomentsRecorder()

    def record_bn(name: str):
        return lambda module, args: bns.add(name, args[0])

    handles = []
    with preserved_modes(model), torch.no_grad():
        model.eval()
        try:
            handles = [bn.register_forward_pre_hook(record_bn(name))
                       for name, bn in batchnorm_layers(model) if name in bn_names]
            for x in inputs:
                model(x)
        finally:
            for handle in handles:
                handle.remove()
    return bns.moments()
