"""Closed forms of the variance shift and Monte-Carlo simulations that check them.

A unit ``x`` with mean ``c`` and variance ``v`` is multiplied in training by a noise ``m`` with
``E[m] = 1`` and ``Var[m] = s2`` (Bernoulli, Gaussian or uniform dropout) and by 1 at test time.

* Case (a), dropout directly before BN: ``Var_train = v + s2 (c^2 + v)``, ``Var_test = v``.
  For inverted Bernoulli dropout ``s2 = q / (1 - q)`` and the ratio is the paper's Eq. 8;
  for uniform noise (Uout) ``s2 = beta^2 / 3`` and at ``c = 0`` it is Eq. 15, ``3 / (3 + beta^2)``.
* Case (b), dropout -> weights ``w`` (fan-in ``d``) -> BN: the paper's Eq. 14 written for any
  ``s2``. With ``D = d cos^2(theta)`` and the pairwise input correlation ``rho``,
  ``Delta = (v + v rho (D - 1)) / (Var_train + v rho (D - 1))``. A noise correlated across the fan-in
  (channel-wise dropout, DropBlock's blocks, DropPath's one value per sample) adds its covariances through
  the weights: per unit ``|w|^2``, ``Var_test = v (1 + rho (D - 1))`` and
  ``Var_train = Var_test + s2 ((c^2 + v rho) B + v (1 - rho) B0)``, where ``B = sum_ij w_i w_j kappa_ij / (s2 |w|^2)``
  and ``B0 = sum_i w_i^2 kappa_ii / (s2 |w|^2)`` weigh the noise covariances ``kappa`` with the filter
  (:mod:`varshift.noise_geometry`); independent noise has ``B = B0 = 1``, which is Eq. 14.
* DropPath (stochastic depth) on a residual branch: the BN after ``x + m f(x)``, ``m`` one value per sample,
  sees ``Var(x + f) + s2 E[f^2]`` in training and ``Var(x + f)`` at test time (:func:`shift_ratio_residual`).
* DropBlock: each unit is kept or dropped (a Bernoulli marginal); its drop fraction follows from the block
  size and the feature-map size (:func:`dropblock_keep_fraction`), and at a BN it feeds directly the shift is
  Eq. 8 at that fraction. Its blocks correlate the noise of neighbouring units, which changes case (b).

The simulators draw the noise and the inputs with numpy and measure the variances directly, so the
closed forms are checked against an independent computation, not against themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from varshift.vocabulary import DROPOUT_KINDS

KINDS = DROPOUT_KINDS


# kinds whose rate is a drop ratio in [0, 1) and whose kept units are scaled by 1 / (1 - rate)
DROP_RATIO_KINDS = ("bernoulli", "gaussian", "droppath", "dropblock")


def check_rate(kind: str, rate: float) -> float:
    """Return ``rate`` as a float, or raise ValueError naming the bad value and the allowed range."""
    if kind not in KINDS:
        raise ValueError(f"dropout kind {kind!r} is not known; allowed: {', '.join(KINDS)}")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{kind} dropout rate {rate!r} is not a number") from None
    if kind in DROP_RATIO_KINDS and not 0.0 <= rate < 1.0:
        raise ValueError(f"{kind} dropout rate (drop ratio) {rate!r} is outside the allowed range [0, 1)")
    if kind == "uniform" and not 0.0 <= rate <= 1.0:
        raise ValueError(f"uniform dropout rate (beta) {rate!r} is outside the allowed range [0, 1]")
    if kind == "none" and rate != 0.0:
        raise ValueError(f"dropout kind 'none' takes rate 0, got {rate!r}")
    return rate


def noise_variance(kind: str, rate: float, *, block_size: int | None = None,
                   feature_size: tuple[int, int] | None = None) -> float:
    """Var[m] of the multiplicative noise of a dropout of this kind and rate.

    DropBlock's depends on its ``block_size`` and the ``feature_size`` (height, width) of its input, both
    required for it (:func:`dropblock_noise_variance`).
    """
    rate = check_rate(kind, rate)
    if kind == "dropblock":
        if block_size is None or feature_size is None:
            raise ValueError("dropblock's noise variance depends on its block size and on the height and width "
                             "of its input: give block_size and feature_size")
        return dropblock_noise_variance(rate, block_size, *feature_size)
    return noise_variance_of_checked(kind, rate)


def noise_variance_of_checked(kind: str, rate: float) -> float:
    """:func:`noise_variance` of a kind (not dropblock) and rate already checked (a layer checks them when built)."""
    if kind in ("bernoulli", "gaussian", "droppath"):
        return rate / (1.0 - rate)
    if kind == "uniform":
        return rate * rate / 3.0
    return 0.0


def train_variance(s2, mean, var):
    """Variance of ``m * x`` in training: ``v + s2 (c^2 + v)``."""
    return var + s2 * (mean * mean + var)


def shift_ratio(kind: str, rate: float, mean, var):
    """Case (a): ``Var_test / Var_train`` for dropout directly in front of BN (Eq. 8, Eq. 15)."""
    s2 = noise_variance(kind, rate)
    return var / train_variance(s2, mean, var)


def weighted_test_variance(var, d_cos2, rho):
    """Case (b) at test time, per unit ``|w|^2`` of the filter: ``v (1 + rho (D - 1))`` (Eq. 10)."""
    return var * (1.0 + rho * (d_cos2 - 1.0))


def weighted_noise_variance(s2, mean, var, rho, alignment=1.0, diagonal=1.0):
    """Case (b): what the noise adds through the weights, per unit ``|w|^2``: ``s2 ((c^2 + v rho) B + v (1 - rho) B0)``
    (``alignment`` B and ``diagonal`` B0 are 1 for independent noise: ``s2 (c^2 + v)``, Eq. 9 less Eq. 10)."""
    return s2 * ((mean * mean + var * rho) * alignment + var * (1.0 - rho) * diagonal)


def weighted_train_variance(s2, mean, var, d_cos2, rho, alignment=1.0, diagonal=1.0):
    """Case (b) in training, per unit ``|w|^2``: ``Var_test`` plus :func:`weighted_noise_variance` (Eq. 9 for any
    noise)."""
    return weighted_test_variance(var, d_cos2, rho) + weighted_noise_variance(s2, mean, var, rho, alignment, diagonal)


def shift_ratio_weighted(kind: str, rate: float, mean, var, d, cos2, rho):
    """Case (b): ``Var_test / Var_train`` for dropout -> weights of fan-in ``d`` -> BN (Eq. 14)."""
    s2 = noise_variance(kind, rate)
    return weighted_test_variance(var, d * cos2, rho) / weighted_train_variance(s2, mean, var, d * cos2, rho)


def shift_ratio_residual(s2, branch_mean, branch_var, sum_var):
    """DropPath: ``Var_test / Var_train`` of ``x + m f(x)`` with one noise ``m`` per sample (``s2 = Var[m]``).

    ``x + m f = (x + f) + (m - 1) f`` and ``m`` is independent of both with mean 1, so training adds
    ``s2 E[f^2] = s2 (c_f^2 + v_f)`` to the test-time variance ``sum_var = Var(x + f)``. Per channel, or with
    channel means (``branch_mean`` the root mean square of the channel means) for the paper's statistic.
    """
    return sum_var / (sum_var + s2 * (branch_mean * branch_mean + branch_var))


def dropblock_gamma(rate: float, block_size: int, height: int, width: int) -> float:
    """The probability that a unit seeds a block (timm's ``drop_block_2d``): ``rate`` scaled by the map's area
    over the block's and over the number of positions a whole block fits in."""
    block_h, block_w = min(block_size, height), min(block_size, width)
    return rate * height * width / (block_h * block_w) / ((height - block_h + 1) * (width - block_w + 1))


def seed_window(index, size: int, block: int):
    """The first and last seed (along one side) whose block drops the unit at ``index``: timm grows each seed into a
    block by max-pooling (padding ``block // 2``, an even block's first row and column trimmed), so a unit is
    dropped by the seeds from ``(block - 1) // 2`` before it to ``block // 2`` after it, inside the map."""
    return np.maximum(index - (block - 1) // 2, 0), np.minimum(index + block // 2, size - 1)


def seeds_covering(size: int, block: int) -> np.ndarray:
    """Per position along one side, how many seed positions drop it (fewer near the border)."""
    first, last = seed_window(np.arange(size), size, block)
    return last - first + 1


def dropblock_keep_fraction(rate: float, block_size: int, height: int, width: int) -> float:
    """The expected fraction of units DropBlock keeps: a unit is kept when none of the ``n`` seeds that would
    drop it fires, ``(1 - gamma)^n``, averaged over the map (``n`` is smaller near the border)."""
    block_h, block_w = min(block_size, height), min(block_size, width)
    gamma = dropblock_gamma(rate, block_size, height, width)
    covering = np.outer(seeds_covering(height, block_h), seeds_covering(width, block_w))
    return float(np.mean((1.0 - gamma) ** covering))


def dropblock_noise_variance(rate: float, block_size: int, height: int, width: int) -> float:
    """Var[m] of DropBlock's noise: ``m`` is ``0`` or ``1 / keep`` (kept units are scaled by the map's size over
    the number kept), so ``Var[m] = 1 / keep - 1``: inverted Bernoulli dropout at the drop fraction ``1 - keep``."""
    if rate == 0.0:
        return 0.0
    return 1.0 / dropblock_keep_fraction(rate, block_size, height, width) - 1.0


@dataclass(frozen=True)
class Alignment:
    """How a weight layer lines up with the all-ones vector (the paper's Eq. 13 and Table 1)."""

    d: int  # fan-in of one filter: in_channels (per group) * k * k
    cos2: float  # mean over output filters of cos^2(theta)
    d_cos2: float  # mean over output filters of d * cos^2(theta)


def weight_alignment(weight) -> Alignment:
    """cos^2 of the angle between each filter and the all-ones vector, averaged over filters.

    ``weight`` is a conv weight ``(out, in, k, k)`` or a linear weight ``(out, in)`` (torch tensor or
    array); a ``k x k`` filter is vectorised so ``d = in * k * k``.
    """
    w = np.asarray(weight.detach().cpu() if hasattr(weight, "detach") else weight, dtype=np.float64)
    if w.ndim < 2:
        raise ValueError(f"weight must have shape (out, in, ...), got shape {w.shape}")
    filters = w.reshape(w.shape[0], -1)
    d = filters.shape[1]
    norms = np.sum(filters**2, axis=1)
    if np.any(norms == 0):
        raise ValueError("weight has an all-zero filter: cos^2(theta) is undefined")
    cos2 = np.sum(filters, axis=1) ** 2 / (d * norms)
    return Alignment(d=d, cos2=float(cos2.mean()), d_cos2=float(d * cos2.mean()))


def sample_noise(kind: str, rate: float, size, rng: np.random.Generator) -> np.ndarray:
    """Draw the multiplicative noise ``m`` of a dropout kind with numpy (independent of torch)."""
    rate = check_rate(kind, rate)
    if kind == "bernoulli":
        keep = 1.0 - rate
        return (rng.random(size) < keep) / keep
    if kind == "gaussian":
        return 1.0 + math.sqrt(rate / (1.0 - rate)) * rng.standard_normal(size)
    if kind == "uniform":
        return 1.0 + rng.uniform(-rate, rate, size)
    return np.ones(size)


def simulate_shift_ratio(kind: str, rate: float, mean: float, var: float, samples: int = 2_000_000,
                         seed: int = 0) -> float:
    """Case (a) by simulation: the sample variance of ``x`` over that of ``m * x``."""
    rng = np.random.default_rng(seed)
    x = mean + math.sqrt(var) * rng.standard_normal(samples)
    m = sample_noise(kind, rate, samples, rng)
    return float(np.var(x) / np.var(m * x))


def unit_weight(d: int, cos2: float, rng: np.random.Generator) -> np.ndarray:
    """A random weight vector of length ``d`` whose angle to the all-ones vector has cos^2 = ``cos2``."""
    ones = np.ones(d) / math.sqrt(d)
    other = rng.standard_normal(d)
    other -= other.dot(ones) * ones
    other /= np.linalg.norm(other)
    return math.sqrt(cos2) * ones + math.sqrt(1.0 - cos2) * other


def simulate_shift_ratio_weighted(kind: str, rate: float, mean: float, var: float, d: int, cos2: float,
                                  rho: float, samples: int = 400_000, seed: int = 0,
                                  chunk: int = 50_000) -> float:
    """Case (b) by simulation: inputs with pairwise correlation ``rho`` pass noise, then a weight.

    ``x_i = c + sqrt(v) (sqrt(rho) z_0 + sqrt(1 - rho) z_i)`` has mean ``c``, variance ``v`` and
    correlation ``rho`` between any two components.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho {rho!r} is outside the allowed range [0, 1] of this simulator")
    rng = np.random.default_rng(seed)
    w = unit_weight(d, cos2, rng)
    test_out, train_out = [], []
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        shared = rng.standard_normal((n, 1))
        x = mean + math.sqrt(var) * (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * rng.standard_normal((n, d)))
        m = sample_noise(kind, rate, (n, d), rng)
        test_out.append(x @ w)
        train_out.append((m * x) @ w)
    return float(np.var(np.concatenate(test_out)) / np.var(np.concatenate(train_out)))


def simulate_residual_shift(rate: float, branch_mean: float, branch_var: float, skip_var: float, correlation: float,
                            samples: int = 400_000, positions: int = 4, seed: int = 0) -> float:
    """DropPath by simulation: ``x + m f`` with ``m`` one inverted-Bernoulli value per sample shared by its
    ``positions`` units, ``x`` (mean 0, variance ``skip_var``) and ``f`` correlated ``correlation``; the variance
    over every unit of ``x + f`` over that of ``x + m f``."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((samples, positions))
    x = math.sqrt(skip_var) * shared
    own = math.sqrt(1.0 - correlation**2) * rng.standard_normal((samples, positions))
    f = branch_mean + math.sqrt(branch_var) * (correlation * shared + own)
    m = sample_noise("bernoulli", rate, (samples, 1), rng)
    return float(np.var(x + f) / np.var(x + m * f))


def dropblock_noise(rate: float, block_size: int, shape: tuple[int, int, int, int],
                    rng: np.random.Generator) -> np.ndarray:
    """DropBlock's noise drawn with numpy and scipy (independent of the torch layer), for an odd ``block_size``:
    seeds with probability gamma, each grown into a square of dropped units, one mask per sample and channel,
    kept units scaled by the number of units over the number kept."""
    from scipy import ndimage

    if block_size % 2 == 0:
        raise ValueError(f"block_size {block_size} is even; this simulator takes odd block sizes")
    height, width = shape[2:]
    seeds = rng.random(shape) < dropblock_gamma(rate, block_size, height, width)
    block = (1, 1, min(block_size, height), min(block_size, width))
    kept = ~ndimage.maximum_filter(seeds, size=block, mode="constant", cval=False)
    return kept * (kept.size / kept.sum())


def simulate_dropblock_weighted(rate: float, block_size: int, var: float, rho: float, weight: np.ndarray,
                                feature_size: tuple[int, int], samples: int = 20_000,
                                seed: int = 0) -> tuple[float, float]:
    """DropBlock -> conv (no padding, stride 1) by simulation, at input mean 0: every unit of a sample's input
    has variance ``var`` and correlation ``rho`` with every other. Returns the channel means over the conv's
    outputs of their variance in training (noise on) and at test time."""
    rng = np.random.default_rng(seed)
    out, channels, kh, kw = weight.shape
    shape = (samples, channels, *feature_size)
    x = math.sqrt(var) * (math.sqrt(rho) * rng.standard_normal((samples, 1, 1, 1))
                          + math.sqrt(1.0 - rho) * rng.standard_normal(shape))
    noisy = dropblock_noise(rate, block_size, shape, rng) * x

    def conv(values: np.ndarray) -> np.ndarray:
        patches = np.lib.stride_tricks.sliding_window_view(values, (kh, kw), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", patches, weight)

    def channel_mean_variance(values: np.ndarray) -> float:
        return float(np.mean(np.var(values, axis=(0, 2, 3))))

    return channel_mean_variance(conv(noisy)), channel_mean_variance(conv(x))
