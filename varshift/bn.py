"""BN recalibration, and the helpers that let varshift run a model without leaving a trace on it.

:func:`recalibrate_bn` re-estimates every BN layer's running mean and variance with dropout off, the
paper's fix "adjust BN moving mean/variance on training data in test mode" (Table 3):

>>> from varshift.bn import recalibrate_bn
>>> recalibrate_bn(model, loaders.train_eval)   # any re-iterable of (x, y) or of bare x

The helpers (:func:`batchnorm_layers`, :func:`preserved_modes`, :func:`preserved_bn_buffers`,
:func:`model_inputs`) are shared with :mod:`varshift.probes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
Layers = list[tuple[str, _BatchNorm]]  # (qualified name, module)
# Data-parallel passes: a function that returns the object each process passes it, in rank order
# (varshift.training.distributed.Group.gather, torch.distributed.all_gather_object)
Gather = Callable[[Any], list]


def batchnorm_layers(model: nn.Module) -> Layers:
    """``(qualified name, module)`` of every BN layer (any ``_BatchNorm``) of ``model``, as defined."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, _BatchNorm)]


def tracked_batchnorm_layers(model: nn.Module) -> Layers:
    """The BN layers of ``model`` that keep running statistics; ValueError if there is none."""
    layers = [(name, bn) for name, bn in batchnorm_layers(model) if bn.track_running_stats]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics "
                         "(track_running_stats=True); there is no variance shift to measure or fix")
    return layers


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Give every module of ``model`` back the training flag it had on entry, also on exceptions."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def preserved_bn_buffers(layers: Layers, only_on_error: bool = False) -> Iterator[None]:
    """Copy the running statistics of ``layers`` back in place on exit (only after an exception if asked).

    The values are copied into the same tensors, so references held elsewhere (an optimiser, a
    compiled graph) stay valid and the buffers end bit-identical to what they were.
    """
    saved = [(buffer, buffer.clone()) for _, bn in layers for name in BN_BUFFERS
             if (buffer := getattr(bn, name, None)) is not None]

    def restore() -> None:
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)

    try:
        yield
    except BaseException:
        restore()
        raise
    if not only_on_error:
        restore()


@contextlib.contextmanager
def preserved_momenta(layers: Layers) -> Iterator[None]:
    """Give every BN layer in ``layers`` back its momentum on exit, also on exceptions."""
    momenta = [(bn, bn.momentum) for _, bn in layers]
    try:
        yield
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_inputs(batches: Iterable, device: torch.device, max_batches: int | None = None, *,
                 required: bool = True) -> Iterator[torch.Tensor]:
    """The model input ``x`` of each batch (an ``(x, y)`` tuple or a bare tensor ``x``), on ``device``.

    Stops after ``max_batches`` batches (None: all); ValueError if ``batches`` gives no batch at all, unless not
    ``required`` (a process's share of a data-parallel pass may be empty). ``max_batches`` is checked here, before the
    first batch is drawn.
    """
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be None (all batches) or an integer >= 1, got {max_batches!r}")
    return _inputs(batches, device, max_batches, required)


NO_BATCH = "batches gave no batch; pass a non-empty re-iterable of (x, y) tuples or tensors"


def _inputs(batches: Iterable, device: torch.device, max_batches: int | None,
            required: bool) -> Iterator[torch.Tensor]:
    count = 0
    for batch in batches:
        if count == max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"batch {count} is a {type(batch).__name__}; allowed: a tensor x or an (x, y) "
                             "tuple whose first item is a tensor")
        count += 1
        yield x.to(device)
    if count == 0 and required:
        raise ValueError(NO_BATCH)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, max_batches: int | None = None, *,
                   gather: Gather | None = None) -> nn.Module:
    """Re-estimate the running mean and variance of every BN layer from ``batches``, dropout off.

    The running statistics are reset and replaced by the cumulative average over the batches (what a
    BN with ``momentum=None`` stores: the mean of the per-batch means and of the per-batch unbiased
    variances), with the BN layers normalising by batch statistics as in training and every other
    module (dropout above all) in eval mode. Nothing else changes: the parameters, every module's mode
    and every BN's momentum are as before. If the pass fails, the old running statistics are kept.

    ``batches``: a re-iterable of ``(x, y)`` tuples or of tensors ``x`` (moved to the model's device);
    ``max_batches``: use only the first ones (None: all). Returns ``model``.

    ``gather``: with several processes, each passing its share of the batches (data-parallel training), the function
    that collects every process's statistics (:data:`Gather`): every process then holds the cumulative average over
    all their batches, each process's averages weighted by its number of batches. A process's share may be empty.
    """
    layers = tracked_batchnorm_layers(model)
    inputs = model_inputs(batches, model_device(model), max_batches, required=gather is None)
    with preserved_modes(model), preserved_momenta(layers), preserved_bn_buffers(layers, only_on_error=True):
        model.eval()
        for _, bn in layers:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for x in inputs:
            model(x)
        if gather is not None:
            combine_cumulative_averages(layers, gather)
    return model


def combine_cumulative_averages(layers: Layers, gather: Gather) -> None:
    """Every layer's running statistics: the cumulative averages of all processes, weighted by their batch counts."""
    local = [(int(bn.num_batches_tracked), bn.running_mean.double().cpu(), bn.running_var.double().cpu())
             for _, bn in layers]
    parts = gather(local)
    for index, (_, bn) in enumerate(layers):
        counts, means, variances = zip(*(part[index] for part in parts), strict=True)
        total = sum(counts)
        if total == 0:
            raise ValueError(NO_BATCH)
        bn.running_mean.copy_(sum(count * mean for count, mean in zip(counts, means, strict=True)) / total)
        bn.running_var.copy_(sum(count * var for count, var in zip(counts, variances, strict=True)) / total)
        bn.num_batches_tracked.fill_(total)
