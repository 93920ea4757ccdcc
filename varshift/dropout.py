"""Dropout as multiplicative noise ``x -> m * x`` with ``E[m] = 1``, identity in eval mode.

Three noises, each element-wise or channel-wise (one value per sample and channel, for conv
feature maps):

* :class:`BernoulliDropout`: inverted dropout, ``m = a / (1 - q)`` with ``a ~ Bernoulli(1 - q)``;
  ``rate`` is the drop ratio ``q``.
* :class:`GaussianDropout`: ``m ~ N(1, s2)``; by default ``s2 = q / (1 - q)``, the Bernoulli
  variance at the same drop ratio, or any ``s2 >= 0`` given directly.
* :class:`UniformDropout`: the paper's Uout, ``m = 1 + r`` with ``r ~ U(-beta, beta)``;
  ``rate`` is ``beta``.

Noise is drawn on the input's device in float32 (float64 for a float64 input) and applied in that
precision, also under bf16 autocast: a bf16 mask would round ``1 / (1 - q)`` and ``1 +- beta`` and bias
the noise moments by more than the Uout effect itself. A bf16 input therefore gives a float32 output;
the next layer casts it as autocast does. The layers also work under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from varshift import theory
from varshift.checks import refuse, require
from varshift.vocabulary import POSITIONS


class MultiplicativeNoise(nn.Module):
    """Base class: multiplies its input by noise from :meth:`sample` in training mode."""

    kind = "none"

    def __init__(self, rate: float, channelwise: bool = False):
        super().__init__()
        self.rate = theory.check_rate(self.kind, rate)
        self.channelwise = bool(channelwise)

    def noise_variance(self) -> float:
        """Var[m] of this layer's multiplicative noise."""
        return theory.noise_variance_of_checked(self.kind, self.rate)

    def sample(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def noise_shape(self, x: torch.Tensor) -> torch.Size:
        if self.channelwise and x.dim() > 2:
            return x.shape[:2] + (1,) * (x.dim() - 2)
        return x.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.noise_variance() == 0.0:
            return x
        dtype = x.dtype if x.dtype == torch.float64 else torch.float32
        return x.to(dtype) * self.sample(self.noise_shape(x), dtype, x.device)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, channelwise={self.channelwise}"


class BernoulliDropout(MultiplicativeNoise):
    """Inverted Bernoulli dropout; ``rate`` is the drop ratio in [0, 1)."""

    kind = "bernoulli"

    def sample(self, shape, dtype, device):
        keep = 1.0 - self.rate
        mask = torch.empty(shape, dtype=dtype, device=device).bernoulli_(keep)
        return mask.div_(keep)


class GaussianDropout(MultiplicativeNoise):
    """``m ~ N(1, s2)``; ``s2`` defaults to ``rate / (1 - rate)``, the Bernoulli variance at that rate."""

    kind = "gaussian"

    def __init__(self, rate: float = 0.0, channelwise: bool = False, s2: float | None = None):
        super().__init__(rate, channelwise)
        if s2 is not None:
            s2 = float(s2)
            if not (math.isfinite(s2) and s2 >= 0.0):
                raise ValueError(f"gaussian dropout s2 {s2!r} is outside the allowed range [0, inf)")
        self.s2 = s2

    def noise_variance(self) -> float:
        return super().noise_variance() if self.s2 is None else self.s2

    def sample(self, shape, dtype, device):
        noise = torch.randn(shape, dtype=dtype, device=device)
        return noise.mul_(math.sqrt(self.noise_variance())).add_(1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s2={self.noise_variance():.4g}"


class UniformDropout(MultiplicativeNoise):
    """Uout: ``m = 1 + r``, ``r ~ U(-beta, beta)``; ``rate`` is ``beta`` in [0, 1]."""

    kind = "uniform"

    def sample(self, shape, dtype, device):
        noise = torch.rand(shape, dtype=dtype, device=device)
        return noise.mul_(2.0 * self.rate).add_(1.0 - self.rate)


DROPOUT_CLASSES = {cls.kind: cls for cls in (BernoulliDropout, GaussianDropout, UniformDropout)}


def build_dropout(kind: str, rate: float, channelwise: bool = False) -> nn.Module:
    """A dropout layer of ``kind`` (bernoulli, gaussian, uniform, none) at ``rate``, which the layer checks.

    ``none`` gives ``nn.Identity``; any other kind keeps its module at rate 0 (then an identity too),
    so a network's structure does not depend on the rate.
    """
    if kind not in DROPOUT_CLASSES:
        theory.check_rate(kind, rate)  # names an unknown kind; for kind none, a rate other than 0
        return nn.Identity()
    return DROPOUT_CLASSES[kind](rate, channelwise=channelwise)


def check_dropout_config(drop: dict) -> None:
    """A composed ``cfg.dropout``: its rate (the layer it builds checks it) and a position that fits its kind."""
    try:
        build_dropout(drop["kind"], drop["rate"], drop["channelwise"])
    except ValueError as error:
        refuse("dropout.rate", drop["rate"], str(error))
    places = ", ".join(POSITIONS[1:])
    if drop["kind"] == "none":
        require(drop["position"] == "none", "dropout.position", drop["position"],
                f"none with dropout.kind='none'; pick a kind (dropout=bernoulli, ...) to put dropout at {places}")
    else:
        require(drop["position"] != "none", "dropout.position", "none",
                f"one of {places} with dropout.kind={drop['kind']!r}; use dropout=none for no dropout")
