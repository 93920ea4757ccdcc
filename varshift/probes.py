"""Measure the variance shift of every BN layer of a model, the paper's way (its section 4, Figure 4).

>>> from varshift.probes import measure_variance_shift
>>> table = measure_variance_shift(model, loaders.train_eval, max_batches=50)
>>> table[["layer", "name", "shift"]]

For each BN layer, in the order the forward pass reaches them:

* ``moving_var``: the channel mean of the BN's running variance (what training left behind);
* ``real_var``: the channel mean of the variance of the BN's input with the whole model in eval mode
  (dropout off, BN normalising with its running statistics), the data passed again;
* ``train_var``: the same with the whole model in train mode, as in training (dropout on, BN normalising
  with batch statistics), the BN running statistics left untouched;
* ``shift``: ``max(real_var / moving_var, moving_var / real_var)``; 1 means no shift.

real_var and train_var use BN's own estimator: per batch the unbiased variance of each channel (over
the batch, and over height and width for feature maps), then the cumulative average over batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from varshift.bn import (
    Layers,
    batchnorm_layers,
    model_device,
    model_inputs,
    preserved_bn_buffers,
    preserved_modes,
    tracked_batchnorm_layers,
)

LAYER_COLUMNS = ["layer", "name", "moving_var", "real_var", "train_var", "shift"]
CHANNEL_COLUMNS = ["layer", "name", "channel", "moving_var", "real_var", "train_var", "shift"]


class InputVariances:
    """Forward pre-hooks for BN layers: per layer, the sum over calls of the per-channel unbiased variance
    of its input, and the number of calls. Layers are kept in the order they are first called.

    Sums stay float64 tensors on the input's device, so recording never waits for the device.
    """

    def __init__(self):
        self.totals: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}

    def hook(self, name: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if x.dim() < 2 or x.numel() < 2 * x.shape[1]:
                raise ValueError(f"BN layer {name!r} got an input of shape {tuple(x.shape)}; an unbiased "
                                 "variance needs (batch, channels, ...) with at least 2 values per channel: "
                                 "use batches of 2 or more samples")
            variance = torch.var(x.detach().to(torch.float64), dim=[0, *range(2, x.dim())], correction=1)
            self.totals[name] = self.totals[name] + variance if name in self.totals else variance
            self.calls[name] = self.calls.get(name, 0) + 1

        return record

    def averages(self) -> dict[str, torch.Tensor]:
        return {name: total / self.calls[name] for name, total in self.totals.items()}


def input_variances(model: nn.Module, layers: Layers, batches: Iterable,
                    max_batches: int | None) -> dict[str, torch.Tensor]:
    """One pass over ``batches`` in the model's current mode: name -> per-channel input variance.

    The names come in forward order (first call).
    """
    recorder = InputVariances()
    handles = [bn.register_forward_pre_hook(recorder.hook(name)) for name, bn in layers]
    try:
        for x in model_inputs(batches, model_device(model), max_batches):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in layers if name not in recorder.totals]
    if missing:
        raise ValueError(f"BN layers never reached by the forward pass: {', '.join(missing)}; "
                         "measure_variance_shift needs every BN layer of the model on its forward path")
    return recorder.averages()


def shift_of(real_var: np.ndarray, moving_var: np.ndarray) -> np.ndarray:
    """``max(real / moving, moving / real)``, elementwise (inf or nan where a variance is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(real_var / moving_var, moving_var / real_var)


def measure_variance_shift(model: nn.Module, batches: Iterable, per_channel: bool = False,
                           max_batches: int | None = None) -> pd.DataFrame:
    """The variance shift of every BN layer of ``model``: one row per layer, in forward order.

    ``batches`` is a re-iterable (it is passed twice: eval mode, then train mode) of ``(x, y)``
    tuples or of tensors ``x``; ``x`` is moved to the model's device. For the paper's statistic, pass
    the training data with its augmentation. ``max_batches`` limits each pass to the first batches.

    Returns columns layer (0-based forward order), name (qualified module name), moving_var,
    real_var, train_var, shift; with ``per_channel``, one row per layer and channel, with a column
    channel and the same quantities per channel (the channel means of moving_var, real_var and
    train_var are the per-layer values).

    The model's parameters, buffers and modes are as before, also when the forward pass raises.
    Raises ValueError for a model without BN, a BN layer without running statistics or one the
    forward pass never reaches.
    """
    layers = tracked_batchnorm_layers(model)
    untracked = [name for name, bn in batchnorm_layers(model) if not bn.track_running_stats]
    if untracked:
        raise ValueError(f"BN layers without running statistics (track_running_stats=False): "
                         f"{', '.join(untracked)}; they have no moving variance to compare with")
    with preserved_modes(model), preserved_bn_buffers(layers), torch.no_grad():
        real = input_variances(model.eval(), layers, batches, max_batches)
        # the train-mode pass draws dropout noise from a forked RNG, so probing a run does not change
        # the noise its later training epochs see
        cuda = [model_device(model)] if model_device(model).type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            train = input_variances(model.train(), layers, batches, max_batches)
    modules = dict(layers)
    names = list(real)
    # one device-to-host transfer for all layers and quantities
    stacked = torch.stack([
        torch.cat([modules[name].running_var.detach().to(torch.float64) for name in names]),
        torch.cat([real[name] for name in names]),
        torch.cat([train[name] for name in names]),
    ]).cpu().numpy()
    widths = [modules[name].num_features for name in names]
    moving_var, real_var, train_var = stacked
    if per_channel:
        return pd.DataFrame({
            "layer": np.repeat(np.arange(len(names)), widths),
            "name": np.repeat(names, widths),
            "channel": np.concatenate([np.arange(width) for width in widths]),
            "moving_var": moving_var, "real_var": real_var, "train_var": train_var,
            "shift": shift_of(real_var, moving_var),
        }, columns=CHANNEL_COLUMNS)
    starts = np.cumsum([0, *widths[:-1]])
    moving_mean, real_mean, train_mean = (np.add.reduceat(values, starts) / widths for values in stacked)
    return pd.DataFrame({
        "layer": np.arange(len(names)), "name": names,
        "moving_var": moving_mean, "real_var": real_mean, "train_var": train_mean,
        "shift": shift_of(real_mean, moving_mean),
    }, columns=LAYER_COLUMNS)
