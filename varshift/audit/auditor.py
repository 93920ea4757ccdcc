""":func:`audit`: every dropout-like site of a model, the BN layers it shifts, the predicted and measured
shift, the fixes, and dropout left on in eval mode. The model is left as it was: its parameters,
buffers, modes and the caller's RNG state."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from varshift.audit.eval_noise import EvalNoise, first_eval_divergence
from varshift.audit.moments import eval_moments
from varshift.audit.predict import predict
from varshift.audit.reach import trace_feeds
from varshift.audit.response import noise_responses
from varshift.audit.tables import SHIFTING, feed_table, site_table, verdict
from varshift.bn import model_device, model_inputs, recalibrate_bn, tracked_batchnorm_layers
from varshift.probes import measure_variance_shift

DEFAULT_INPUT_SHAPE = (3, 224, 224)
# Finding the feeds and the eval-mode noise needs the model's structure, not statistics: two samples do.
TRACE_SAMPLES = 2


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit` found.

    ``feeds``: one row per (site, BN layer) feed, see :data:`varshift.audit.tables.FEED_COLUMNS`;
    ``sites``: one row per dropout site; ``eval_noise``: the first module whose eval-mode output is random,
    or None; ``notes``: what could not be measured, and why.
    """

    feeds: pd.DataFrame
    sites: pd.DataFrame
    eval_noise: EvalNoise | None
    input_shape: tuple[int, ...]
    batch_size: int
    num_batches: int
    from_data: bool  # whether the statistics come from the caller's batches (else random-normal inputs)
    measured: bool  # whether the shifts were measured (data given and a shifting dropout found)
    notes: tuple[str, ...]
    seconds: float

    @property
    def shift_found(self) -> bool:
        return bool((self.sites["verdict"] == SHIFTING).any())

    @property
    def exit_code(self) -> int:
        """0: no shifting dropout and no dropout active in eval mode; 1 otherwise."""
        return int(self.shift_found or self.eval_noise is not None)


def sample_inputs(model: nn.Module, batches: Iterable | None, input_shape: Sequence[int], batch_size: int,
                  num_batches: int, seed: int) -> list[Tensor]:
    """The first ``num_batches`` inputs of ``batches``, or as many random-normal batches of ``input_shape``."""
    device = model_device(model)
    if batches is not None:
        return list(model_inputs(batches, device, num_batches))
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, *input_shape, generator=generator).to(device) for _ in range(num_batches)]


def measured_shifts(model: nn.Module, inputs: list[Tensor]) -> tuple[dict[str, float], dict[str, float]]:
    """BN name -> the shift :func:`varshift.probes.measure_variance_shift` measures on ``inputs``, before and
    after :func:`varshift.bn.recalibrate_bn` on them (on a copy of the model)."""
    before = measure_variance_shift(model, inputs)
    after = measure_variance_shift(recalibrate_bn(copy.deepcopy(model), inputs), inputs)
    return (dict(zip(before["name"], before["shift"], strict=True)),
            dict(zip(after["name"], after["shift"], strict=True)))


def statistics_model(model: nn.Module, inputs: list[Tensor]) -> tuple[nn.Module, str | None]:
    """The model the prediction's statistics come from: ``model``, or where none of its BN layers has ever been
    updated (``num_batches_tracked`` 0: an untrained model, whose BN layers are identities in eval mode) a copy with
    its BN statistics re-estimated on ``inputs`` (dropout off), as training would have set them; and a note saying
    so."""
    layers = tracked_batchnorm_layers(model)
    if not layers or any(int(bn.num_batches_tracked) for _, bn in layers):
        return model, None
    return recalibrate_bn(copy.deepcopy(model), inputs), (
        "the BN layers were never updated (an untrained model): the prediction uses BN statistics re-estimated on "
        "the sample batches with dropout off")


def audit(model: nn.Module, batches: Iterable | None = None, *, input_shape: Sequence[int] | None = None,
          batch_size: int = 8, num_batches: int = 2, seed: int = 0) -> AuditReport:
    """Audit ``model`` for the variance shift between its dropout-like layers and its BN layers.

    ``batches``: a re-iterable of ``(x, y)`` tuples or tensors ``x`` (training data, for the measured
    shift); its first ``num_batches`` are used. Without it, ``num_batches`` random-normal batches of
    ``batch_size`` inputs of ``input_shape`` (default: the model's ``input_shape`` attribute, else
    3x224x224) give the statistics of the prediction and nothing is measured.
    """
    start = time.perf_counter()
    if input_shape is None:
        input_shape = getattr(model, "input_shape", DEFAULT_INPUT_SHAPE)
    device = model_device(model)
    # a dropout left on in eval mode draws noise in every pass below: the caller's RNG must not see it
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        inputs = sample_inputs(model, batches, input_shape, batch_size, num_batches, seed)
        probe = inputs[0][:TRACE_SAMPLES]
        sites, feeds = trace_feeds(model, probe)
        by_name = {site.name: site for site in sites}
        direct = {(feed.site, feed.bn): feed.direct for feed in feeds}
        noisy = {(feed.site, feed.bn) for feed in feeds if by_name[feed.site].noise_variance not in (None, 0.0)}
        trained, note = statistics_model(model, inputs) if noisy else (model, None)
        notes = [] if note is None else [note]
        bn_moments = eval_moments(trained, inputs, {feed.bn for feed in feeds})
        responses = noise_responses(trained, inputs, sites, {pair for pair in noisy if not direct[pair]}, seed)
        # every path matters where some site reaches the BN through other layers; where all feed it directly
        # (DenseNet's concatenations), their case (a) terms are the joint prediction
        crossed = {bn for (_, bn), is_direct in direct.items() if not is_direct}
        joint_responses = noise_responses(trained, inputs, sites, {pair for pair in noisy if pair[1] in crossed},
                                          seed, through_bn=True)
        predictions = predict(feeds, by_name, bn_moments, responses, joint_responses)
        shifting = any(verdict(site, [feed for feed in feeds if feed.site == site.name]) == SHIFTING
                       for site in sites)
        measured, recalibrated = {}, {}
        if batches is not None and shifting:
            try:
                measured, recalibrated = measured_shifts(model, inputs)
            except ValueError as error:  # e.g. a BN layer the forward pass never reaches (an auxiliary head)
                notes.append(f"no measured shift: {error}")
        eval_noise = first_eval_divergence(model, probe)
    feed_rows = feed_table(sites, feeds, predictions, measured, recalibrated)
    return AuditReport(
        feeds=feed_rows, sites=site_table(feed_rows), eval_noise=eval_noise, input_shape=tuple(inputs[0].shape[1:]),
        batch_size=inputs[0].shape[0], num_batches=len(inputs), from_data=batches is not None,
        measured=bool(measured), notes=tuple(notes),
        seconds=time.perf_counter() - start)
