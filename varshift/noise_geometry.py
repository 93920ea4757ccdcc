"""How a dropout's noise lines up with the filters of the weight layer it feeds: the numbers Eq. 14 needs per filter.

A weight layer (conv or linear) between a dropout and a BN sums ``w_i m_i x_i`` over its fan-in. Per filter,
with ``|w|^2 = sum_i w_i^2``:

* ``D = d cos^2(theta) = (sum_i w_i)^2 / |w|^2``, the paper's Eq. 13 (how the filter lines up with the
  all-ones vector, which the input correlation ``rho`` weighs);
* ``B = sum_ij w_i w_j kappa_ij / (s2 |w|^2)`` and ``B0 = sum_i w_i^2 kappa_ii / (s2 |w|^2)``, the same for the
  noise covariances ``kappa_ij = E[m_i m_j] - 1`` of the units under the filter's taps, averaged over the
  positions the filter is applied at (:func:`varshift.theory.weighted_train_variance` takes them; with them it is
  exact for inputs of mean 0 whose units share one variance and one pairwise correlation).

Independent noise (Bernoulli, Gaussian, Uout element-wise) has ``kappa = s2 I``, so ``B = B0 = 1`` and Eq. 14 is the
paper's. A channel-wise noise shares one value over a channel's taps; DropPath one value over every tap (``B = D``);
DropBlock drops squares, so taps closer than its block size are dropped together, less near the border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from varshift import theory


@dataclass(frozen=True)
class NoiseLayout:
    """The noise covariances ``E[m_i m_j] - 1`` between the taps of one filter (T x T, T = kernel height x width):
    ``within`` for two taps in one input channel, ``across`` for taps in two different channels."""

    within: np.ndarray
    across: np.ndarray
    noise_variance: float


@dataclass(frozen=True)
class FilterAlignment:
    """Per filter (output unit) of a weight layer: ``norm2`` ``|w|^2``, ``d_cos2`` ``D``, ``alignment`` ``B`` and
    ``diagonal`` ``B0`` (numpy arrays of the layer's output width)."""

    norm2: np.ndarray
    d_cos2: np.ndarray
    alignment: np.ndarray
    diagonal: np.ndarray

    def weighted(self) -> tuple[float, float, float, float]:
        """``mean |w|^2`` and the ``|w|^2``-weighted means of D, B and B0: with them Eq. 14 gives the channel
        mean of the variances of the layer's outputs exactly (it is linear in ``|w|^2``, ``|w|^2 D``, ...)."""
        total = self.norm2.sum()
        return (float(self.norm2.mean()), float((self.norm2 * self.d_cos2).sum() / total),
                float((self.norm2 * self.alignment).sum() / total), float((self.norm2 * self.diagonal).sum() / total))


def layer_filters(layer: nn.Module) -> np.ndarray:
    """The weight of a conv or linear layer as float64 ``(filters, input channels per group, taps)``."""
    weight = layer.weight.detach().to(torch.float64).cpu().numpy()
    return weight.reshape(weight.shape[0], weight.shape[1], -1)


def filter_alignment(layer: nn.Module, layout: NoiseLayout) -> FilterAlignment:
    """D, B and B0 of every filter of ``layer`` (a conv or linear layer) under a noise of ``layout``."""
    w = layer_filters(layer)
    norm2 = np.einsum("oct,oct->o", w, w)
    if np.any(norm2 == 0):
        raise ValueError(f"{type(layer).__name__} has an all-zero filter: cos^2(theta) is undefined")
    sums = w.sum(axis=(1, 2))
    # sum over pairs of channels c != c' = sum over all pairs - sum over c = c'
    channel_sums = w.sum(axis=1)
    paired = (np.einsum("oct,ts,ocs->o", w, layout.within - layout.across, w)
              + np.einsum("ot,ts,os->o", channel_sums, layout.across, channel_sums))
    diagonal = np.einsum("oct,t,oct->o", w, np.diag(layout.within), w)
    scale = layout.noise_variance * norm2
    if layout.noise_variance == 0.0:
        ones = np.ones_like(norm2)
        return FilterAlignment(norm2, sums**2 / norm2, ones, ones)
    return FilterAlignment(norm2, sums**2 / norm2, paired / scale, diagonal / scale)


def kernel_geometry(layer: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Kernel size, stride, padding and dilation of a conv (a linear layer: a 1 x 1 conv)."""
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):
            raise ValueError(f"conv padding={layer.padding!r} is not supported; give the padding in pixels")
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation
    return (1, 1), (1, 1), (0, 0), (1, 1)


def uniform_layout(layer: nn.Module, noise_variance: float, shared: bool, across_channels: bool,
                   feature_size: tuple[int, int] | None = None) -> NoiseLayout:
    """Independent noise per unit (``shared`` False), or one value over a channel's taps (or all taps); on a map of
    ``feature_size``, a tap on the padding carries none (:func:`tap_overlap`)."""
    taps = int(np.prod(kernel_geometry(layer)[0]))
    overlap = np.ones((taps, taps)) if feature_size is None else tap_overlap(layer, *feature_size)
    within = noise_variance * overlap * (1.0 if shared else np.eye(taps))
    return NoiseLayout(within, within if across_channels else np.zeros_like(within), noise_variance)


def tap_coordinates(layer: nn.Module, height: int, width: int) -> list[np.ndarray]:
    """Per side (rows, columns), the input coordinate under each (output position, tap): shape (outputs, taps);
    outside ``[0, size)`` it is padding."""
    (kh, kw), stride, padding, dilation = kernel_geometry(layer)
    sides = []
    for size, kernel, step, pad, dil in ((height, kh, stride[0], padding[0], dilation[0]),
                                         (width, kw, stride[1], padding[1], dilation[1])):
        outputs = (size + 2 * pad - dil * (kernel - 1) - 1) // step + 1
        sides.append(np.arange(outputs)[:, None] * step - pad + np.arange(kernel)[None, :] * dil)
    return sides


def tap_overlap(layer: nn.Module, height: int, width: int) -> np.ndarray:
    """The share of the layer's output positions at which both of two taps read the map, not its padding (T x T):
    zero padding makes a conv's fan-in smaller at the border, for the noise and the input alike."""
    sides = zip(tap_coordinates(layer, height, width), (height, width), strict=True)
    rows, columns = [(coordinates >= 0) & (coordinates < size) for coordinates, size in sides]
    both_rows = (rows[:, :, None] & rows[:, None, :]).mean(axis=0)
    both_columns = (columns[:, :, None] & columns[:, None, :]).mean(axis=0)
    kh, kw = rows.shape[1], columns.shape[1]
    return np.einsum("ab,ce->acbe", both_rows, both_columns).reshape(kh * kw, kh * kw)


def dropblock_layout(layer: nn.Module, rate: float, block_size: int, height: int, width: int) -> NoiseLayout:
    """DropBlock's noise covariances between the taps of ``layer`` applied to a ``height x width`` map.

    Units ``i`` and ``j`` of one channel are both kept when no seed fires among the ``n_i + n_j - n_ij`` seeds
    that drop either, so ``E[m_i m_j] = S^2 (1 - gamma)^(n_i + n_j - n_ij)`` with ``S = 1 / keep`` the scale of
    kept units; in two channels (independent masks) ``E[m_i] E[m_j] = S^2 (1 - gamma)^(n_i + n_j)``, not 1 near the
    border, where fewer seeds drop a unit. A tap on the padding carries no noise. Averaged over the layer's output
    positions.
    """
    s2 = theory.dropblock_noise_variance(rate, block_size, height, width)
    if s2 == 0.0:
        return uniform_layout(layer, 0.0, False, False)
    gamma = theory.dropblock_gamma(rate, block_size, height, width)
    scale = 1.0 / theory.dropblock_keep_fraction(rate, block_size, height, width)
    sides = []
    for coordinates, size in zip(tap_coordinates(layer, height, width), (height, width), strict=True):
        inside = (coordinates >= 0) & (coordinates < size)
        first, last = theory.seed_window(coordinates, size, min(block_size, size))
        count = np.where(inside, last - first + 1, 0)
        # seeds that drop both the unit under tap a and the one under tap b: (outputs, kernel, kernel)
        shared = np.maximum(0, np.minimum(last[:, :, None], last[:, None, :])
                            - np.maximum(first[:, :, None], first[:, None, :]) + 1)
        both_inside = inside[:, :, None] & inside[:, None, :]
        sides.append((count, shared, both_inside))
    (count_h, shared_h, inside_h), (count_w, shared_w, inside_w) = sides
    # axes: output row o, output column p, tap rows a, b, tap columns c, e
    n_i = count_h[:, None, :, None, None, None] * count_w[None, :, None, None, :, None]
    n_j = count_h[:, None, None, :, None, None] * count_w[None, :, None, None, None, :]
    n_ij = shared_h[:, None, :, :, None, None] * shared_w[None, :, None, None, :, :]
    inside = inside_h[:, None, :, :, None, None] & inside_w[None, :, None, None, :, :]

    def tap_covariances(exponent: np.ndarray) -> np.ndarray:
        covariance = np.where(inside, scale**2 * (1.0 - gamma) ** exponent - 1.0, 0.0).mean(axis=(0, 1))
        taps = covariance.shape[0] * covariance.shape[2]
        return covariance.transpose(0, 2, 1, 3).reshape(taps, taps)

    return NoiseLayout(tap_covariances(n_i + n_j - n_ij), tap_covariances(n_i + n_j), s2)
