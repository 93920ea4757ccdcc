"""BN statistics of the global batch in data-parallel training (``trainer.sync_bn``): torch's SyncBatchNorm, on CPU
processes too, and per process on request.

:func:`synchronise` converts every BN layer of a network with torch's converter (timm's for timm's BN + activation
layers, which torch's would strip of their activation) and gives the converted layers varshift's
:class:`SyncBatchNorm` behaviour, which only adds to torch's:

* on GPUs it is torch's SyncBatchNorm (its CUDA kernels, one all-gather per layer);
* on CPU processes (gloo), where torch's refuses to run, the same computation from all-reduced sums: the batch mean
  and biased variance of every channel over all processes' slices, in float64, differentiable through
  ``torch.distributed.nn.functional.all_reduce`` (whose backward sums the gradients over the processes, as torch's
  SyncBatchNorm does), and the running statistics updated with the unbiased variance;
* :func:`per_process_statistics` makes the layers normalise by this process's batch alone, as plain BN: for the passes
  of the variance probe and of BN recalibration, in which each process holds whole batches of its own.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNorm(nn.SyncBatchNorm):
    """torch's SyncBatchNorm, which also synchronises CPU tensors, and normalises per process when ``per_process``."""

    per_process = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.per_process:
            return _BatchNorm.forward(self, input)  # what SyncBatchNorm does when it has nothing to synchronise
        if input.device.type == "cpu" and self.training and self.group_size() > 1:
            return self.synchronised_on_cpu(input)
        return super().forward(input)

    def group_size(self) -> int:
        if not dist.is_initialized():
            return 1
        return dist.get_world_size(self.process_group or dist.group.WORLD)

    def synchronised_on_cpu(self, x: torch.Tensor) -> torch.Tensor:
        group = self.process_group or dist.group.WORLD
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.double()
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64)
        dist.all_reduce(count, group=group)
        mean = all_reduce(values.sum(dims), group=group) / count
        centred = values - mean.view(shape)
        variance = all_reduce((centred * centred).sum(dims), group=group) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((variance * count / (count - 1)).to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


@functools.cache
def with_varshift_forward(converted: type[nn.SyncBatchNorm]) -> type[SyncBatchNorm]:
    """The class of a converted layer with :class:`SyncBatchNorm`'s forward under its own: timm's SyncBatchNormAct
    calls ``super().forward`` and then its activation."""
    if converted is nn.SyncBatchNorm:
        return SyncBatchNorm
    return type(converted.__name__, (converted, SyncBatchNorm), {})


def convertible_types() -> tuple[type, ...]:
    """torch's BN layers, and timm's BN + activation when timm built the network (then it is imported)."""
    timm_layers = sys.modules.get("timm.layers")
    return PLAIN_BN + ((timm_layers.BatchNormAct2d,) if timm_layers is not None else ())


def synchronise(model: nn.Module) -> None:
    """Synchronise every BN layer of ``model`` across the processes of the default group (module docstring), in
    place: the converters replace the layers inside the network, keeping their parameters and buffers, so a
    DistributedDataParallel that wraps ``model`` already trains the converted network. (DDP refuses to wrap torch's
    SyncBatchNorm on CPU, which varshift's layers synchronise over gloo: on CPU processes convert after wrapping.)
    ValueError naming a BN layer of another kind, which a converter would turn into a plain SyncBatchNorm."""
    if isinstance(model, _BatchNorm):
        raise ValueError("a network that is a single BN layer cannot be synchronised in place")
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, _BatchNorm)]
    others = [f"{name} ({type(module).__name__})" for name, module in layers
              if type(module) not in convertible_types()]
    if others:
        raise ValueError(f"config trainer.sync_bn=True is not allowed: BN layers of a kind it cannot synchronise: "
                         f"{', '.join(others)}; torch's BatchNorm1d/2d/3d and timm's BatchNormAct2d can")
    timm_layers = sys.modules.get("timm.layers")
    convert = timm_layers.convert_sync_batchnorm if timm_layers is not None else nn.SyncBatchNorm.convert_sync_batchnorm
    convert(model)
    for module in model.modules():
        if isinstance(module, nn.SyncBatchNorm):
            # varshift's class adds a forward and no state: the layer keeps its parameters, buffers and hooks
            module.__class__ = with_varshift_forward(type(module))


@contextlib.contextmanager
def per_process_statistics(model: nn.Module) -> Iterator[None]:
    """While in the block, the synchronised BN layers of ``model`` normalise by this process's batch alone."""
    layers = [module for module in model.modules() if isinstance(module, SyncBatchNorm)]
    for layer in layers:
        layer.per_process = True
    try:
        yield
    finally:
        for layer in layers:
            layer.per_process = False
