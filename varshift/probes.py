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
* ``shift``: ``max(real_var / moving_var, moving_var / real_var)``; 1 means no shift;
* ``input_mean``, ``input_var``: the mean ``c`` and variance ``v`` of the BN's input in eval mode (the
  test-time input of the theory, Eq. 7-8), each channel's taken over all values of the pass;
  ``input_var`` is their channel mean and ``input_mean`` the root mean square of the channel means, so
  that ``theory.shift_ratio(kind, rate, input_mean, input_var)`` is the case-(a) prediction of the
  channel-mean statistic: ``mean_k(v_k + s2 (c_k^2 + v_k)) = input_var + s2 (input_mean^2 + input_var)``
  (channel means of opposite signs would cancel in a plain mean);
* ``fed_by_dropout``: whether the BN's input is the output of a dropout layer (the paper's case (a)).

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
from varshift.dropout import MultiplicativeNoise

QUANTITIES = ["moving_var", "real_var", "train_var", "shift", "input_mean", "input_var"]
LAYER_COLUMNS = ["layer", "name", *QUANTITIES, "fed_by_dropout"]
CHANNEL_COLUMNS = ["layer", "name", "channel", *QUANTITIES, "fed_by_dropout"]
# torch's dropouts count too, for models that are not varshift's own
DROPOUT_TYPES = (MultiplicativeNoise, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)


class InputStatistics:
    """Hooks that record, per BN layer, what its input looked like over a pass of the model.

    Per layer and channel: the sum over calls of the unbiased variance of the input (BN's estimator), the
    number of calls, and the count, sum and sum of squares of all input values (the mean and variance over
    the whole pass). A layer is ``fed`` when its input is the very tensor a dropout layer returned. Layers
    are kept in the order they are first called; sums stay float64 tensors on the input's device, so
    recording never waits for the device.
    """

    def __init__(self):
        self.variance_sums: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.square_sums: dict[str, torch.Tensor] = {}
        self.fed: dict[str, bool] = {}
        self.dropout_outputs: dict[str, torch.Tensor] = {}  # the last output of each dropout layer

    def dropout_hook(self, name: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.dropout_outputs[name] = output

        return record

    def bn_hook(self, name: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if x.dim() < 2 or x.numel() < 2 * x.shape[1]:
                raise ValueError(f"BN layer {name!r} got an input of shape {tuple(x.shape)}; an unbiased "
                                 "variance needs (batch, channels, ...) with at least 2 values per channel: "
                                 "use batches of 2 or more samples")
            fed = any(x is output for output in self.dropout_outputs.values())
            values = x.detach().to(torch.float64)
            variance, mean = torch.var_mean(values, dim=[0, *range(2, x.dim())], correction=1)
            count = x.numel() // x.shape[1]
            # float64 sums of squares: activations are never far enough from zero, relative to their spread,
            # for the cancellation in sum(x^2) - count * mean^2 to matter
            squares = (count - 1) * variance + count * mean * mean
            if name in self.calls:
                self.variance_sums[name] += variance
                self.sums[name] += count * mean
                self.square_sums[name] += squares
            else:
                self.variance_sums[name], self.sums[name], self.square_sums[name] = variance, count * mean, squares
            self.calls[name] = self.calls.get(name, 0) + 1
            self.counts[name] = self.counts.get(name, 0) + count
            self.fed[name] = self.fed.get(name, False) or fed

        return record

    def variances(self) -> dict[str, torch.Tensor]:
        """Per layer, BN's estimate: the average over calls of the per-batch unbiased variance."""
        return {name: total / self.calls[name] for name, total in self.variance_sums.items()}

    def means(self) -> dict[str, torch.Tensor]:
        """Per layer, each channel's mean over all input values of the pass."""
        return {name: total / self.counts[name] for name, total in self.sums.items()}

    def pooled_variances(self) -> dict[str, torch.Tensor]:
        """Per layer, each channel's unbiased variance over all input values of the pass."""
        means = self.means()
        return {name: (self.square_sums[name] - self.counts[name] * means[name] ** 2) / (self.counts[name] - 1)
                for name in self.square_sums}


def input_statistics(model: nn.Module, layers: Layers, batches: Iterable,
                     max_batches: int | None) -> InputStatistics:
    """One pass over ``batches`` in the model's current mode, recording the inputs of every BN layer."""
    recorder = InputStatistics()
    handles = [bn.register_forward_pre_hook(recorder.bn_hook(name)) for name, bn in layers]
    handles += [module.register_forward_hook(recorder.dropout_hook(name))
                for name, module in model.named_modules() if isinstance(module, DROPOUT_TYPES)]
    try:
        for x in model_inputs(batches, model_device(model), max_batches):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        recorder.dropout_outputs.clear()
    missing = [name for name, _ in layers if name not in recorder.calls]
    if missing:
        raise ValueError(f"BN layers never reached by the forward pass: {', '.join(missing)}; "
                         "measure_variance_shift needs every BN layer of the model on its forward path")
    return recorder


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
    real_var, train_var, shift, input_mean, input_var, fed_by_dropout (see the module's docstring); with
    ``per_channel``, one row per layer and channel, with a column channel and the same quantities per
    channel (input_mean is then the channel's own mean; the channel means of moving_var, real_var,
    train_var and input_var are the per-layer values).

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
        real = input_statistics(model.eval(), layers, batches, max_batches)
        # the train-mode pass draws dropout noise from a forked RNG, so probing a run does not change
        # the noise its later training epochs see
        cuda = [model_device(model)] if model_device(model).type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            train = input_statistics(model.train(), layers, batches, max_batches)
    modules = dict(layers)
    names = list(real.calls)
    real_variances, train_variances = real.variances(), train.variances()
    means, pooled = real.means(), real.pooled_variances()
    # one device-to-host transfer for all layers and quantities
    stacked = torch.stack([
        torch.cat([modules[name].running_var.detach().to(torch.float64) for name in names]),
        torch.cat([real_variances[name] for name in names]),
        torch.cat([train_variances[name] for name in names]),
        torch.cat([means[name] for name in names]),
        torch.cat([pooled[name] for name in names]),
    ]).cpu().numpy()
    widths = [modules[name].num_features for name in names]
    fed = [real.fed[name] for name in names]
    moving_var, real_var, train_var, input_mean, input_var = stacked
    if per_channel:
        return pd.DataFrame({
            "layer": np.repeat(np.arange(len(names)), widths),
            "name": np.repeat(names, widths),
            "channel": np.concatenate([np.arange(width) for width in widths]),
            "moving_var": moving_var, "real_var": real_var, "train_var": train_var,
            "shift": shift_of(real_var, moving_var), "input_mean": input_mean, "input_var": input_var,
            "fed_by_dropout": np.repeat(fed, widths),
        }, columns=CHANNEL_COLUMNS)
    starts = np.cumsum([0, *widths[:-1]])

    def channel_mean(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts) / widths

    moving_mean, real_mean = channel_mean(moving_var), channel_mean(real_var)
    return pd.DataFrame({
        "layer": np.arange(len(names)), "name": names,
        "moving_var": moving_mean, "real_var": real_mean, "train_var": channel_mean(train_var),
        "shift": shift_of(real_mean, moving_mean), "input_mean": np.sqrt(channel_mean(input_mean**2)),
        "input_var": channel_mean(input_var), "fed_by_dropout": fed,
    }, columns=LAYER_COLUMNS)
