"""What every varshift network shares: dropout slots, the three-stage builder, bias-free convs, bearpaw's init.

A family file only says where its slots are: a block asks ``slot("before_bn")`` where the paper's
Dropout-(a) would sit, ``slot("before_conv")`` for Dropout-(b) and the network asks ``slot("head")``
once, in front of its classifier. :class:`DropoutSlots` answers with the dropout layer for the one
slot that matches the chosen position and with ``nn.Identity`` everywhere else, so every network
has the same modules (and the same state-dict keys) whatever the position.

Positions:

* ``none``: no dropout anywhere (the baseline).
* ``before_bn``: in every block, directly in front of the block's last BN (Dropout-(a)).
* ``before_conv``: in every block, in front of the last conv, whose output feeds a BN (Dropout-(b)).
* ``head``: one dropout after all BN layers, after global pooling, in front of the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral

from torch import nn

from varshift.checks import flag, one_of, refuse, whole_number
from varshift.dropout import build_dropout
from varshift.vocabulary import POSITIONS

SLOTS = POSITIONS[1:]
SPEC_KEYS = ("kind", "rate", "channelwise")
# A config's dropout group may carry its position too (conf/dropout/*.yaml); it must match the position.
ALLOWED_KEYS = ", ".join((*SPEC_KEYS, "position"))


@dataclass(frozen=True)
class DropoutSpec:
    """Which dropout the slots hold: ``kind`` and ``rate`` as in :func:`varshift.dropout.build_dropout`, which
    checks them when it builds a slot's layer."""

    kind: str = "none"
    rate: float = 0.0
    channelwise: bool = False


def parse_dropout_spec(dropout) -> DropoutSpec:
    """A :class:`DropoutSpec` from None (no dropout) or a mapping with keys kind, rate, channelwise.

    ``rate`` may be left out only for kind ``none``; ``channelwise`` defaults to False. A ``position``
    key is allowed and left to :class:`DropoutSlots`.
    """
    if dropout is None:
        return DropoutSpec()
    if isinstance(dropout, DropoutSpec):
        return dropout
    if not isinstance(dropout, Mapping):
        raise ValueError(f"dropout spec {dropout!r} is not a mapping; give None or a mapping with keys "
                         f"{ALLOWED_KEYS}")
    unknown = [key for key in dropout if key not in (*SPEC_KEYS, "position")]
    if unknown:
        raise ValueError(f"dropout spec key {unknown[0]!r} is not known; allowed keys: {ALLOWED_KEYS}")
    if "kind" not in dropout:
        raise ValueError(f"dropout spec {dict(dropout)!r} has no 'kind'; allowed keys: {ALLOWED_KEYS}")
    kind = dropout["kind"]
    if kind != "none" and "rate" not in dropout:
        raise ValueError(f"dropout spec {dict(dropout)!r} has no 'rate' (needed for kind {kind!r})")
    return DropoutSpec(kind, dropout.get("rate", 0.0), flag("dropout channelwise", dropout.get("channelwise", False)))


class DropoutSlots:
    """Turns a slot name into the dropout layer (the slot of ``position``) or ``nn.Identity`` (any other).

    Calling it once per slot gives every slot its own module, so each is a real submodule of the
    network and ``isinstance(m, varshift.dropout.MultiplicativeNoise)`` finds it.
    """

    def __init__(self, dropout, position: str):
        one_of("dropout position", position, POSITIONS)
        self.spec = parse_dropout_spec(dropout)
        if isinstance(dropout, Mapping) and dropout.get("position", position) != position:
            raise ValueError(f"dropout spec position {dropout['position']!r} contradicts the position "
                             f"{position!r} asked for; give one position")
        self.position = position

    def __call__(self, slot: str) -> nn.Module:
        one_of("dropout slot", slot, SLOTS)
        if slot != self.position:
            return nn.Identity()
        return build_dropout(self.spec.kind, self.spec.rate, self.spec.channelwise)


def blocks_per_stage(family: str, depth, fixed_layers: int, layers_per_block: int) -> int:
    """Blocks in each of the three stages of a network of ``depth`` weight layers.

    A three-stage network has ``depth = fixed_layers + 3 * n * layers_per_block``; any other depth
    raises ValueError listing the allowed ones.
    """
    step = 3 * layers_per_block
    allowed = ", ".join(str(fixed_layers + step * n) for n in range(1, 5))
    if (isinstance(depth, bool) or not isinstance(depth, Integral) or depth <= fixed_layers
            or (depth - fixed_layers) % step):
        refuse(f"{family} depth", depth, f"{step}n+{fixed_layers} for n >= 1 ({allowed}, ...)")
    return (int(depth) - fixed_layers) // step


def three_stages(blocks: int, planes: int, make_block: Callable[[int, int, int], tuple[nn.Module, int]]
                 ) -> tuple[list[nn.Sequential], int]:
    """The three stages of a CIFAR network, ``blocks`` blocks each, and the width they end with.

    ``make_block(in_planes, stage, stride)`` returns a block and its output width; the first block of the second
    and third stage halves the resolution (stride 2). Blocks are built in order, stage by stage.
    """
    stages = []
    for stage in range(3):
        built = []
        for index in range(blocks):
            block, planes = make_block(planes, stage, 2 if stage > 0 and index == 0 else 1)
            built.append(block)
        stages.append(nn.Sequential(*built))
    return stages, planes


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 conv, padding 1, no bias (a BN follows or precedes it in every family)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups,
                     bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 conv, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PreActHead(nn.Module):
    """The end of a pre-activation network: BN-ReLU, global average pooling (any input size), the
    ``head`` dropout slot (after every BN layer), the classifier."""

    def __init__(self, planes: int, num_classes: int, slot: DropoutSlots):
        super().__init__()
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop_head = slot("head")
        self.fc = nn.Linear(planes, whole_number("num_classes", num_classes))

    def forward(self, x):
        return self.fc(self.drop_head(self.pool(self.relu(self.bn(x))).flatten(1)))


def init_bearpaw(model: nn.Module) -> None:
    """bearpaw's init: conv weights ~ N(0, 2 / (k * k * out_channels)), BN weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
