"""Closed forms of the variance shift and Monte-Carlo simulations that check them.

A unit ``x`` with mean ``c`` and variance ``v`` is multiplied in training by a noise ``m`` with
``E[m] = 1`` and ``Var[m] = s2`` (Bernoulli, Gaussian or uniform dropout) and by 1 at test time.

* Case (a), dropout directly before BN: ``Var_train = v + s2 (c^2 + v)``, ``Var_test = v``.
  For inverted Bernoulli dropout ``s2 = q / (1 - q)`` and the ratio is the paper's Eq. 8;
  for uniform noise (Uout) ``s2 = beta^2 / 3`` and at ``c = 0`` it is Eq. 15, ``3 / (3 + beta^2)``.
* Case (b), dropout -> weights ``w`` (fan-in ``d``) -> BN: the paper's Eq. 14 written for any
  ``s2``. With ``D = d cos^2(theta)`` and the pairwise input correlation ``rho``,
  ``Delta = (v + v rho (D - 1)) / (Var_train + v rho (D - 1))``.

The simulators draw the noise and the inputs with numpy and measure the variances directly, so the
closed forms are checked against an independent computation, not against themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from varshift.vocabulary import DROPOUT_KINDS

KINDS = DROPOUT_KINDS


def check_rate(kind: str, rate: float) -> float:
    """Return ``rate`` as a float, or raise ValueError naming the bad value and the allowed range."""
    if kind not in KINDS:
        raise ValueError(f"dropout kind {kind!r} is not known; allowed: {', '.join(KINDS)}")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{kind} dropout rate {rate!r} is not a number") from None
    if kind in ("bernoulli", "gaussian") and not 0.0 <= rate < 1.0:
        raise ValueError(f"{kind} dropout rate (drop ratio) {rate!r} is outside the allowed range [0, 1)")
    if kind == "uniform" and not 0.0 <= rate <= 1.0:
        raise ValueError(f"uniform dropout rate (beta) {rate!r} is outside the allowed range [0, 1]")
    if kind == "none" and rate != 0.0:
        raise ValueError(f"dropout kind 'none' takes rate 0, got {rate!r}")
    return rate


def noise_variance(kind: str, rate: float) -> float:
    """Var[m] of the multiplicative noise of a dropout of this kind and rate."""
    return noise_variance_of_checked(kind, check_rate(kind, rate))


def noise_variance_of_checked(kind: str, rate: float) -> float:
    """:func:`noise_variance` of a kind and rate already checked (a dropout layer checks them when built)."""
    if kind in ("bernoulli", "gaussian"):
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


def shift_ratio_weighted(kind: str, rate: float, mean, var, d, cos2, rho):
    """Case (b): ``Var_test / Var_train`` for dropout -> weights of fan-in ``d`` -> BN (Eq. 14)."""
    s2 = noise_variance(kind, rate)
    correlated = var * rho * (d * cos2 - 1.0)
    return (var + correlated) / (train_variance(s2, mean, var) + correlated)


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
