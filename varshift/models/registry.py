"""The model names varshift knows and :func:`build_model`, which builds any of them by name.

Each name is the paper's network (or a small one); its family's size parameters pass through
``**kwargs``, so a scaled-down network of the same family is one config override away. A name may also
fix other defaults of a family: ``preresnet14_w8`` is PreResNet with 14 layers of basic blocks and widths
8/16/32 (13 BN layers, 44 k parameters), the laptop scale's stand-in for PreResNet-110.
"""

from __future__ import annotations

import inspect
from functools import partial
from types import MappingProxyType

import torch
from torch import nn

from varshift.models.densenet import DenseNetBC
from varshift.models.preresnet import PreResNet
from varshift.models.resnext import ResNeXt
from varshift.models.small import MLP, SmallCNN
from varshift.models.wrn import WideResNet
from varshift.vocabulary import MODEL_NAMES  # noqa: F401  (FAMILIES has these keys, in order; a test pins it)

FAMILIES = {
    "preresnet110": PreResNet,
    "resnext29_8x64d": ResNeXt,
    "wrn28_10": WideResNet,
    "densenet_bc100": DenseNetBC,
    "small_cnn": SmallCNN,
    "mlp": MLP,
    "preresnet14_w8": partial(PreResNet, depth=14, block="basic", width=8),
}
DEFAULT_DROPOUT = MappingProxyType({"kind": "bernoulli", "rate": 0.5, "channelwise": False})


def family_parameters(name: str) -> dict:
    """The size parameters of model ``name`` with their defaults (the paper's values)."""
    family = _family(name)
    return {p.name: p.default for p in inspect.signature(family).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, dropout=DEFAULT_DROPOUT,
                position: str = "none", **kwargs) -> nn.Module:
    """The network ``name`` with ``dropout`` (a mapping kind/rate/channelwise, or None) at ``position``.

    ``position`` is one of none, before_bn, before_conv, head (see :mod:`varshift.models.slots`);
    ``kwargs`` are the family's size parameters (:func:`family_parameters`).
    """
    family = _family(name)
    allowed = family_parameters(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"model {name!r} has no parameter {key!r}; its parameters: {', '.join(allowed)}")
    return family(num_classes=num_classes, in_channels=in_channels, dropout=dropout, position=position,
                  **kwargs)


def build_on_meta(name: str, position: str = "none", **kwargs) -> nn.Module:
    """Network ``name`` with the default dropout at ``position`` on the meta device: its layers without the
    memory or the time to initialise them, for counting them. ``kwargs`` as in :func:`build_model`."""
    with torch.device("meta"):
        return build_model(name, dropout=DEFAULT_DROPOUT, position=position, **kwargs)


def _family(name: str) -> type[nn.Module]:
    if name not in FAMILIES:
        raise ValueError(f"model name {name!r} is not known; allowed: {', '.join(MODEL_NAMES)}")
    return FAMILIES[name]
