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

And what the theory of the layer needs, from the training-mode pass (:mod:`varshift.probe_feeds`):

* ``feed``: how a dropout's noise reaches the BN input before any other BN: ``direct`` (case (a)), ``additive``
  (through residual adds: DropPath's ``x + m f``), ``weight`` (through one conv or linear layer, and adds: case (b)),
  ``downstream`` (some other way: no closed form), or ``none`` (no dropout reaches it); ``sources`` names the dropouts;
* ``noise_predicted``: the variance the sources' noise adds to the BN input in training, by the theory from their
  training-time inputs ``x'``: ``s2 E[x'^2]`` (Eq. 7) for direct and additive sources; through a weight layer, Eq. 14
  per filter, ``|w|^2 s2 ((c'^2 + v' rho') B + v' (1 - rho') B0)``, with the layer's ``c'``, ``v'``, the correlation
  ``rho'`` of ``x'`` across its fan-in and each filter's D and B (:mod:`varshift.noise_geometry`);
* ``noise_measured``: the same, measured: the variance of each source's output (a weight layer's: on the noisy
  input) less that of its input (a weight layer run again on ``x'``);
* ``clean_var``: ``train_var - noise_measured``, the BN input's training-time variance without its sources' noise;
  ``clean_var + noise_predicted`` is the theory's moving variance, and ``clean_var / real_var`` the chain factor
  (what the dropouts further up changed);
* with one source: ``noise_variance`` (its ``s2``), ``source_mean`` and ``source_var`` (``c'`` and ``v'``: the RMS over
  channels of ``sqrt(E[x'^2] - v')`` and the channel mean of BN's estimate of the variance of ``x'``), and for a
  weight source ``rho``, ``d_cos2`` and ``alignment`` (B), ``|w|^2``-weighted means over filters (per filter in the
  per-channel rows).

Variances use BN's own estimator: per batch the unbiased variance of each channel (over the batch, and over height
and width for feature maps), then the cumulative average over batches.

In data-parallel training each process passes its share of the batches, whole batches
(:mod:`varshift.data.shards`), and ``gather`` collects what every process recorded: the sums and counts are added up,
so every process gets the table of all the batches, what one process passing them all computes (up to the order of
float64 additions). Synchronised BN layers must then normalise by each process's own batch
(:func:`varshift.training.sync_batchnorm.per_process_statistics`), as BN does in one process.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from varshift.bn import (
    NO_BATCH,
    Gather,
    Layers,
    batchnorm_layers,
    model_device,
    model_inputs,
    preserved_bn_buffers,
    preserved_modes,
    tracked_batchnorm_layers,
)
from varshift.probe_columns import CHANNEL_COLUMNS, CHANNEL_MEANS, LAYER_COLUMNS, QUANTITIES, THEORY
from varshift.probe_feeds import DOWNSTREAM, DROPOUT_TYPES, UNREACHED, ChannelMoments, FeedRecorder

__all__ = ["CHANNEL_COLUMNS", "LAYER_COLUMNS", "QUANTITIES", "TrainingPass", "layer_table", "measure_variance_shift",
           "shift_of", "training_pass"]

# the samples the structure of the feeds is traced on (it needs the model's graph, not statistics)
TRACE_SAMPLES = 2


class InputStatistics(ChannelMoments):
    """Hooks that record, per BN layer, what its input looked like over a pass of the model: its
    :class:`~varshift.probe_feeds.ChannelMoments`, and whether it is ``fed``: the very tensor a dropout layer
    returned. Layers are kept in the order they are first called."""

    def __init__(self):
        super().__init__()
        self.fed: dict[str, bool] = {}
        self.dropout_outputs: dict[str, torch.Tensor] = {}  # the last output of each dropout layer

    @classmethod
    def combined(cls, parts: list[InputStatistics], device: torch.device) -> InputStatistics:
        total = super().combined(parts, device)
        for part in parts:
            for name, fed in part.fed.items():
                total.fed[name] = total.fed.get(name, False) or fed
        return total

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
            self.add(name, x)
            self.fed[name] = self.fed.get(name, False) or any(x is output for output in self.dropout_outputs.values())

        return record


def input_statistics(model: nn.Module, layers: Layers, batches: Iterable, max_batches: int | None,
                     feeds: FeedRecorder | None = None, gather: Gather | None = None) -> InputStatistics:
    """One pass over ``batches`` in the model's current mode, recording the inputs of every BN layer (and, with
    ``feeds``, what the theory of the fed layers needs); with ``gather``, what every process recorded in its share of
    the pass, added up (module docstring)."""
    recorder = InputStatistics()
    device = model_device(model)
    inputs = model_inputs(batches, device, max_batches, required=gather is None)
    first = next(inputs, None)  # None only for a process whose share of a data-parallel pass is empty
    if first is not None:
        handles = [] if feeds is None else feeds.start(first[:TRACE_SAMPLES])
        handles += [bn.register_forward_pre_hook(recorder.bn_hook(name)) for name, bn in layers]
        handles += [module.register_forward_hook(recorder.dropout_hook(name))
                    for name, module in model.named_modules() if isinstance(module, DROPOUT_TYPES)]
        try:
            for x in itertools.chain([first], inputs):
                model(x)
        finally:
            for handle in handles:
                handle.remove()
            recorder.dropout_outputs.clear()
            if feeds is not None:
                feeds.clear()
    if gather is not None:
        recorder = combined_records(recorder, feeds, gather, device)
    missing = [name for name, _ in layers if name not in recorder.calls]
    if missing:
        raise ValueError(f"BN layers never reached by the forward pass: {', '.join(missing)}; "
                         "measure_variance_shift needs every BN layer of the model on its forward path")
    return recorder


def combined_records(recorder: InputStatistics, feeds: FeedRecorder | None, gather: Gather,
                     device: torch.device) -> InputStatistics:
    """The BN inputs (and the feeds' records, in place) of every process's share of a pass, added up."""
    cpu = torch.device("cpu")
    records = gather((recorder.on(cpu), None if feeds is None else feeds.record()))
    if not any(statistics.calls for statistics, _ in records):
        raise ValueError(NO_BATCH)
    if feeds is not None:
        feeds.combine([record for _, record in records], device)
    return InputStatistics.combined([statistics for statistics, _ in records], device)


def shift_of(real_var: np.ndarray, moving_var: np.ndarray) -> np.ndarray:
    """``max(real / moving, moving / real)``, elementwise (inf or nan where a variance is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(real_var / moving_var, moving_var / real_var)


@dataclass(frozen=True)
class TrainingPass:
    """The training-mode pass of a probe: the BN inputs and the feeds' records. It does not depend on the BN
    running statistics, so a probe after BN recalibration may reuse the one before it."""

    statistics: InputStatistics
    feeds: FeedRecorder


def checked_layers(model: nn.Module) -> Layers:
    layers = tracked_batchnorm_layers(model)
    untracked = [name for name, bn in batchnorm_layers(model) if not bn.track_running_stats]
    if untracked:
        raise ValueError(f"BN layers without running statistics (track_running_stats=False): "
                         f"{', '.join(untracked)}; they have no moving variance to compare with")
    return layers


def training_pass(model: nn.Module, batches: Iterable, max_batches: int | None = None, *,
                  gather: Gather | None = None) -> TrainingPass:
    """The train-mode pass of :func:`measure_variance_shift` (dropout on, BN normalising with batch statistics, its
    running statistics left as they were), with the feeds of every BN traced on the first batch's first samples;
    ``gather`` as for :func:`measure_variance_shift`."""
    layers = checked_layers(model)
    device = model_device(model)
    feeds = FeedRecorder(model)
    # the train-mode pass draws dropout noise from a forked RNG, so probing a run does not change the noise its later
    # training epochs see
    with preserved_modes(model), preserved_bn_buffers(layers), torch.no_grad(), \
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        statistics = input_statistics(model.train(), layers, batches, max_batches, feeds, gather)
    return TrainingPass(statistics, feeds)


def measure_variance_shift(model: nn.Module, batches: Iterable, per_channel: bool = False,
                           max_batches: int | None = None, training: TrainingPass | None = None, *,
                           gather: Gather | None = None) -> pd.DataFrame:
    """The variance shift of every BN layer of ``model``: one row per layer, in forward order.

    ``batches`` is a re-iterable (it is passed twice: eval mode, then train mode) of ``(x, y)``
    tuples or of tensors ``x``; ``x`` is moved to the model's device. For the paper's statistic, pass
    the training data with its augmentation. ``max_batches`` limits each pass to the first batches.
    ``training``: the :func:`training_pass` of these batches on this model (its parameters unchanged since), in
    place of a new one. ``gather``: in a data-parallel pass, where ``batches`` are this process's share, the function
    that collects what every process recorded (:data:`varshift.bn.Gather`; the module's docstring).

    Returns the columns :data:`LAYER_COLUMNS` (see the module's docstring); with ``per_channel``, one row per layer
    and channel (:data:`CHANNEL_COLUMNS`), with the same quantities per channel (input_mean and source_mean are
    then the channel's own; the channel means of :data:`CHANNEL_MEANS` are the per-layer values).

    The model's parameters, buffers and modes are as before, also when the forward pass raises.
    Raises ValueError for a model without BN, a BN layer without running statistics or one the
    forward pass never reaches.
    """
    layers = checked_layers(model)
    with preserved_modes(model), preserved_bn_buffers(layers), torch.no_grad():
        real = input_statistics(model.eval(), layers, batches, max_batches, gather=gather)
    training = training or training_pass(model, batches, max_batches, gather=gather)
    modules = dict(layers)
    names = list(real.calls)
    train = training.statistics
    # one device-to-host transfer for all layers and quantities
    stacked = torch.stack([
        torch.cat([modules[name].running_var.detach().to(torch.float64) for name in names]),
        torch.cat([real.variance(name) for name in names]),
        torch.cat([train.variance(name) for name in names]),
        torch.cat([real.mean(name) for name in names]),
        torch.cat([real.pooled_variance(name) for name in names]),
    ]).cpu().numpy()
    widths = [modules[name].num_features for name in names]
    moving_var, real_var, train_var, input_mean, input_var = stacked
    channels = pd.DataFrame({
        "layer": np.repeat(np.arange(len(names)), widths), "name": np.repeat(names, widths),
        "channel": np.concatenate([np.arange(width) for width in widths]),
        "moving_var": moving_var, "real_var": real_var, "train_var": train_var,
        "shift": shift_of(real_var, moving_var), "input_mean": input_mean, "input_var": input_var,
        "fed_by_dropout": np.repeat([real.fed[name] for name in names], widths),
        "feed": np.repeat([training.feeds.feeds.kind(name) for name in names], widths),
    })
    channels = channels.join(theory_terms(training.feeds, names, widths))
    channels["clean_var"] = channels["train_var"] - channels["noise_measured"]
    return channels[CHANNEL_COLUMNS] if per_channel else layer_table(channels)


def theory_terms(feeds: FeedRecorder, names: list[str], widths: list[int]) -> pd.DataFrame:
    """Per channel of every layer: the theory's terms (NaN where a layer has no sources, or no closed form)."""
    frames = []
    for name, width in zip(names, widths, strict=True):
        terms = {column: np.full(width, np.nan) for column in THEORY if column != "clean_var"}
        terms["sources"] = np.full(width, "", dtype=object)
        if feeds.feeds.kind(name) not in (UNREACHED, DOWNSTREAM):
            for column, value in feeds.terms(name).items():
                terms[column] = np.broadcast_to(np.nan if value is None else value, (width,))
        frames.append(pd.DataFrame(terms))
    return pd.concat(frames, ignore_index=True)


def root_mean_square(values: pd.Series) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def layer_table(channels: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table (:data:`LAYER_COLUMNS`) of a per-channel one: the channel means of :data:`CHANNEL_MEANS`
    (and of ``source_var`` and ``weight_norm2``), the paper's statistic of the means, ``input_mean`` and
    ``source_mean`` as root mean squares over channels, D and B as ``|w|^2``-weighted means over filters (so that
    Eq. 14 with them gives the channel mean of the variances)."""
    grouped = channels.groupby("layer", sort=True)
    rows = grouped[["name", "fed_by_dropout", "feed", "sources", "noise_variance", "rho"]].first()
    rows = rows.join(grouped[[*CHANNEL_MEANS, "source_var", "weight_norm2"]].mean())
    rows = rows.join(grouped[["input_mean", "source_mean"]].agg(root_mean_square))
    weighted = channels[["d_cos2", "alignment"]].mul(channels["weight_norm2"], axis=0).groupby(channels["layer"])
    rows = rows.join(weighted.sum(min_count=1).div(grouped["weight_norm2"].sum(min_count=1), axis=0))
    rows["shift"] = shift_of(rows["real_var"].to_numpy(), rows["moving_var"].to_numpy())
    return rows.reset_index()[LAYER_COLUMNS]
