"""The model names varshift knows and :func:`build_model`, which builds any of them by name.

Each name is the paper's network (or a small one); its family's size parameters pass through
``**kwargs``, so a scaled-down network of the same family is one config override away. A name may also
fix other defaults of a family: ``preresnet14_w8`` is PreResNet with 14 layers of basic blocks and widths
8/16/32 (13 BN layers, 44 k parameters), the laptop scale's stand-in for PreResNet-110. The ImageNet networks
(``resnet200``, ``resnext101_64x4d``, ``senet154``, ``resnet50``) are timm's (:mod:`varshift.models.imagenet`).
"""

from __future__ import annotations

import functools
import inspect
from functools import partial
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from varshift.checks import one_of, refuse, require
from varshift.dropout import MultiplicativeNoise
from varshift.models.densenet import DenseNetBC
from varshift.models.imagenet import PreActResNet, ResNet, SENet
from varshift.models.preresnet import PreResNet
from varshift.models.resnext import ResNeXt
from varshift.models.small import MLP, SmallCNN
from varshift.models.wrn import WideResNet
from varshift.vocabulary import MODEL_NAMES, POSITIONS  # FAMILIES has MODEL_NAMES as keys, in order (a test pins it)

FAMILIES = {
    "preresnet110": PreResNet,
    "resnext29_8x64d": ResNeXt,
    "wrn28_10": WideResNet,
    "densenet_bc100": DenseNetBC,
    "small_cnn": SmallCNN,
    "mlp": MLP,
    "preresnet14_w8": partial(PreResNet, depth=14, block="basic", width=8),
    "resnet200": PreActResNet,
    "resnext101_64x4d": partial(ResNet, layers=(3, 4, 23, 3), cardinality=64, base_width=4),
    "senet154": SENet,
    "resnet50": ResNet,
}
DEFAULT_DROPOUT = MappingProxyType({"kind": "bernoulli", "rate": 0.5, "channelwise": False})


def family_parameters(name: str) -> dict:
    """The size parameters of model ``name`` with their defaults (the paper's values)."""
    family = _family(name)
    return {p.name: p.default for p in inspect.signature(family).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, num_classes: int = 10, in_channels: int | None = None, dropout=DEFAULT_DROPOUT,
                position: str = "none", **kwargs) -> nn.Module:
    """The network ``name`` with ``dropout`` (a mapping kind/rate/channelwise, or None) at ``position``.

    ``in_channels``: channels of the input images; by default the family's own, 3 for the paper's networks (CIFAR)
    and 1 for small_cnn and mlp (MNIST, Fashion-MNIST). ``position`` is one of none, before_bn, before_conv, head
    (see :mod:`varshift.models.slots`); ``kwargs`` are the family's size parameters (:func:`family_parameters`).
    """
    family = _family(name)
    allowed = family_parameters(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"model {name!r} has no parameter {key!r}; its parameters: {', '.join(allowed)}")
    channels = {} if in_channels is None else {"in_channels": in_channels}
    return family(num_classes=num_classes, dropout=dropout, position=position, **channels, **kwargs)


def build_on_meta(name: str, dropout=DEFAULT_DROPOUT, position: str = "none", **kwargs) -> nn.Module:
    """Network ``name`` on the meta device: its layers without the memory or the time to initialise them, for
    counting them. Arguments as in :func:`build_model`."""
    with torch.device("meta"):
        return build_model(name, dropout=dropout, position=position, **kwargs)


def _family(name: str) -> type[nn.Module]:
    return FAMILIES[one_of("model", name, MODEL_NAMES)]


@functools.lru_cache(maxsize=256)
def _layer_counts(name: str, dropout: tuple[tuple[str, Any], ...], position: str, num_classes: int,
                  in_channels: int, kwargs: tuple[tuple[str, Any], ...]) -> tuple[int, int]:
    """(dropout layers, BN layers) of the network, built on the meta device (a sweep asks for few networks)."""
    network = build_on_meta(name, dict(dropout), position, num_classes=num_classes, in_channels=in_channels,
                            **dict(kwargs))
    modules = list(network.modules())
    return (sum(isinstance(module, MultiplicativeNoise) for module in modules),
            sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in modules))


def check_model_config(model: dict, data: dict, dropout: dict) -> None:
    """A composed ``cfg.model``: a known network whose parameters fit the dataset, which builds with the config's
    dropout, has BN layers, and has a dropout slot at ``dropout.position``."""
    name, kwargs, position = model["name"], model["kwargs"], dropout["position"]
    one_of("model.name", name, MODEL_NAMES)
    parameters = family_parameters(name)
    for key, value in kwargs.items():
        require(key in parameters, f"model.kwargs.{key}", value,
                f"model {name} has no parameter {key!r}; its parameters: {', '.join(parameters)}")
    if "image_size" in parameters:
        image_size = kwargs.get("image_size", parameters["image_size"])
        require(image_size == data["size"], "model.kwargs.image_size", image_size,
                f"{data['size']}, the side of {data['name']}'s images")
    frozen_kwargs = tuple((key, tuple(value) if isinstance(value, list) else value) for key, value in kwargs.items())
    spec = tuple((key, dropout[key]) for key in ("kind", "rate", "channelwise"))

    def counts(at: str) -> tuple[int, int]:
        try:
            return _layer_counts(name, spec, at, data["num_classes"], data["channels"], frozen_kwargs)
        except ValueError as err:
            raise ValueError(f"model.kwargs={kwargs!r} is not allowed for model {name}: {err}") from None

    dropout_layers, bn_layers = counts(position)
    if bn_layers == 0:
        switched_off = [key for key, value in kwargs.items() if value is False]
        key, value = (f"model.kwargs.{switched_off[0]}", False) if len(switched_off) == 1 else ("model.kwargs", kwargs)
        refuse(key, value, f"model {name} has no BN layer with it, and varshift measures the variance shift of "
                           "BN layers")
    if position != "none" and dropout_layers == 0:
        supported = [at for at in POSITIONS[1:] if counts(at)[0] > 0]
        refuse("dropout.position", position, f"model {name} with model.kwargs={kwargs} has no dropout slot at "
                                             f"{position}; its slots: {', '.join(supported) or 'none'}")
