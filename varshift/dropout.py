"""Dropout as multiplicative noise ``x -> m * x`` with ``E[m] = 1``, identity in eval mode.

Three noises, each element-wise or channel-wise (one value per sample and channel, for conv
feature maps):

* :class:`BernoulliDropout`: inverted dropout, ``m = a / (1 - q)`` with ``a ~ Bernoulli(1 - q)``;
  ``rate`` is the drop ratio ``q``.
* :class:`GaussianDropout`: ``m ~ N(1, s2)``; by default ``s2 = q / (1 - q)``, the Bernoulli
  variance at the same drop ratio, or any ``s2 >= 0`` given directly.
* :class:`UniformDropout`: the paper's Uout, ``m = 1 + r`` with ``r ~ U(-beta, beta)``;
  ``rate`` is ``beta``.

And two that practitioners use in residual networks, drawn as timm draws them (the same numbers from the same
RNG state; ``rate`` is the drop ratio):

* :class:`DropPath` (stochastic depth): one inverted-Bernoulli value per sample for a whole residual branch.
* :class:`DropBlock`: squares of ``block_size`` units dropped together, one mask per sample and channel (timm's
  ``DropBlock2d(couple_channels=False)``), kept units scaled by the number of units over the number kept.

Noise is drawn on the input's device in float32 (float64 for a float64 input) and applied in that
precision, also under bf16 autocast: a bf16 mask would round ``1 / (1 - q)`` and ``1 +- beta`` and bias
the noise moments by more than the Uout effect itself. A bf16 input therefore gives a float32 output;
the next layer casts it as autocast does. The layers also work under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from varshift import theory
from varshift.checks import refuse, require
from varshift.vocabulary import KIND_POSITIONS, POSITIONS

# DropBlock's block side in varshift's networks: 3 fits their 28x28 to 7x7 feature maps (timm's default, 7, is
# for ImageNet's 56x56 to 7x7)
DROPBLOCK_SIZE = 3


class MultiplicativeNoise(nn.Module):
    """Base class: multiplies its input by noise from :meth:`sample` in training mode."""

    kind = "none"

    def __init__(self, rate: float, channelwise: bool = False):
        super().__init__()
        self.rate = theory.check_rate(self.kind, rate)
        self.channelwise = bool(channelwise)

    def noise_variance(self, shape: torch.Size | None = None) -> float:
        """Var[m] of this layer's multiplicative noise (on inputs of ``shape``, which only DropBlock needs)."""
        return theory.noise_variance_of_checked(self.kind, self.rate)

    def is_silent(self) -> bool:
        """Whether the layer is an identity in training too (no noise)."""
        return self.noise_variance() == 0.0

    def sample(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def noise_shape(self, x: torch.Tensor) -> torch.Size:
        if self.channelwise and x.dim() > 2:
            return x.shape[:2] + (1,) * (x.dim() - 2)
        return x.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.is_silent():
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

    def noise_variance(self, shape: torch.Size | None = None) -> float:
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


class WholeNoise(MultiplicativeNoise):
    """A noise whose sharing is its own (per sample, per block): ``channelwise`` does not apply."""

    def __init__(self, rate: float, channelwise: bool = False):
        if channelwise:
            raise ValueError(f"channelwise=True is not allowed for {self.kind}: its noise has its own sharing; "
                             "use channelwise=False")
        super().__init__(rate)


class DropPath(WholeNoise, BernoulliDropout):
    """Stochastic depth as timm's ``DropPath``: one inverted-Bernoulli value per sample; ``rate`` is the drop ratio."""

    kind = "droppath"

    def noise_shape(self, x: torch.Tensor) -> torch.Size:
        return x.shape[:1] + (1,) * (x.dim() - 1)


def feature_size(shape: torch.Size) -> tuple[int, int]:
    """Height and width of a feature map ``(batch, channels, height, width)``; ``(batch, features)`` is 1 x 1."""
    if len(shape) == 2:
        return 1, 1
    if len(shape) != 4:
        raise ValueError(f"dropblock takes (batch, channels, height, width) or (batch, features); got shape "
                         f"{tuple(shape)}")
    return int(shape[2]), int(shape[3])


class DropBlock(WholeNoise):
    """DropBlock as timm's ``DropBlock2d(drop_prob=rate, block_size=block_size, couple_channels=False)``.

    Seeds fire with probability ``gamma`` (:func:`varshift.theory.dropblock_gamma`), max-pooling grows each into a
    ``block_size`` square (smaller where the map is), one mask per sample and channel; kept units are scaled by the
    number of units over the number kept. A ``(batch, features)`` input is a 1 x 1 map: Bernoulli per unit. Its noise
    variance depends on the input's height and width (:func:`varshift.theory.dropblock_noise_variance`).
    """

    kind = "dropblock"

    def __init__(self, rate: float, channelwise: bool = False, block_size: int = DROPBLOCK_SIZE):
        super().__init__(rate, channelwise)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"dropblock block_size {block_size!r} is not allowed: a whole number >= 1")
        self.block_size = block_size

    def noise_variance(self, shape: torch.Size | None = None) -> float:
        if self.rate == 0.0:
            return 0.0
        if shape is None:
            raise ValueError("dropblock's noise variance depends on the height and width of its input: pass its shape")
        return theory.dropblock_noise_variance(self.rate, self.block_size, *feature_size(shape))

    def is_silent(self) -> bool:
        return self.rate == 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature_size(x.shape)
        if x.dim() == 2:
            return super().forward(x[:, :, None, None]).flatten(1)
        return super().forward(x)

    def sample(self, shape, dtype, device):
        height, width = shape[2], shape[3]
        block_h, block_w = min(self.block_size, height), min(self.block_size, width)
        seeds = torch.empty(shape, dtype=dtype, device=device).bernoulli_(
            theory.dropblock_gamma(self.rate, self.block_size, height, width))
        dropped = F.max_pool2d(seeds, kernel_size=(block_h, block_w), stride=1, padding=(block_h // 2, block_w // 2))
        if block_h % 2 == 0 or block_w % 2 == 0:
            dropped = dropped[..., (block_h + 1) % 2:, (block_w + 1) % 2:]
        keep = 1.0 - dropped
        return keep.mul_((keep.numel() / keep.to(torch.float32).sum().add(1e-7)).to(dtype))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, block_size={self.block_size}"


DROPOUT_CLASSES = {cls.kind: cls for cls in (BernoulliDropout, GaussianDropout, UniformDropout, DropPath, DropBlock)}


def build_dropout(kind: str, rate: float, channelwise: bool = False) -> nn.Module:
    """A dropout layer of ``kind`` (bernoulli, gaussian, uniform, droppath, dropblock, none) at ``rate``, which the
    layer checks.

    ``none`` gives ``nn.Identity``; any other kind keeps its module at rate 0 (then an identity too),
    so a network's structure does not depend on the rate.
    """
    if kind not in DROPOUT_CLASSES:
        theory.check_rate(kind, rate)  # names an unknown kind; for kind none, a rate other than 0
        return nn.Identity()
    return DROPOUT_CLASSES[kind](rate, channelwise=channelwise)


def kind_fits(kind: str, position: str) -> bool:
    """Whether dropout ``kind`` has a place at ``position`` (``none`` fits only ``none``)."""
    if position == "none":
        return True
    return position in KIND_POSITIONS.get(kind, tuple(p for p in POSITIONS[1:] if p != "residual"))


def check_dropout_config(drop: dict) -> None:
    """A composed ``cfg.dropout``: its rate (the layer it builds checks it) and a position that fits its kind."""
    kind, position = drop["kind"], drop["position"]
    if drop["channelwise"] and kind in KIND_POSITIONS:
        refuse("dropout.channelwise", True, f"false with dropout.kind={kind!r}: its noise has its own sharing")
    try:
        build_dropout(kind, drop["rate"], drop["channelwise"])
    except ValueError as error:
        refuse("dropout.rate", drop["rate"], str(error))
    if kind == "none":
        places = ", ".join(POSITIONS[1:])
        require(position == "none", "dropout.position", position,
                f"none with dropout.kind='none'; pick a kind (dropout=bernoulli, ...) to put dropout at {places}")
        return
    places = ", ".join(at for at in POSITIONS[1:] if kind_fits(kind, at))
    require(position != "none", "dropout.position", "none",
            f"one of {places} with dropout.kind={kind!r}; use dropout=none for no dropout")
    require(kind_fits(kind, position), "dropout.position", position, f"one of {places} with dropout.kind={kind!r}")
