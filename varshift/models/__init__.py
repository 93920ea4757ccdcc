"""The paper's four CIFAR networks, two small ones and the ImageNet networks of Table 5 (timm's), each with dropout
slots at a chosen position.

>>> from varshift.models import build_model
>>> model = build_model("wrn28_10", num_classes=100, position="before_conv",
...                     dropout={"kind": "bernoulli", "rate": 0.3}, depth=10, widen_factor=2)
"""

from varshift.models.densenet import DenseNetBC
from varshift.models.imagenet import PreActResNet, ResNet, SENet
from varshift.models.preresnet import PreResNet
from varshift.models.registry import FAMILIES, MODEL_NAMES, build_model, check_model_config, family_parameters
from varshift.models.resnext import ResNeXt
from varshift.models.slots import POSITIONS, DropoutSlots, DropoutSpec, parse_dropout_spec
from varshift.models.small import MLP, SmallCNN
from varshift.models.wrn import WideResNet

__all__ = [
    "FAMILIES",
    "MLP",
    "MODEL_NAMES",
    "POSITIONS",
    "DenseNetBC",
    "DropoutSlots",
    "DropoutSpec",
    "PreActResNet",
    "PreResNet",
    "ResNeXt",
    "ResNet",
    "SENet",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "check_model_config",
    "family_parameters",
    "parse_dropout_spec",
]
