"""The ImageNet networks of the paper's Table 5 and ResNet-50, built by timm, with varshift's dropout slots.

Which timm network stands for each (the closest to the papers Table 5 cites; parameter counts on 1000 classes,
pinned by ``tests/test_imagenet_models.py``):

* ``resnet200``, :class:`PreActResNet`: the pre-activation ResNet-200 of He et al. 2016b ("Identity Mappings"),
  whose 21.7/5.8 top-1/top-5 error the paper quotes (fb.resnet.torch's pre-ResNet-200): timm's ``ResNetV2`` with
  ResNet-200's stages [3, 24, 36, 3], as timm builds its ``resnetv2_50/101/152``. 64.67 M parameters (64.7 M
  published); timm's pre-activation stem and projection shortcuts carry no BN, fb.resnet.torch's do.
* ``resnext101_64x4d``, :class:`ResNet`: ResNeXt-101 (64 x 4d) of Xie et al. 2017, whose 20.4/5.3 the paper
  quotes: timm's ``resnext101_64x4d``. 83,455,272 parameters, as torchvision's.
* ``senet154``, :class:`SENet`: SENet-154 of Hu et al. 2018: timm's ``senet154`` (SE-ResNeXt bottlenecks of
  64 groups, a three-conv stem, 3x3 projection shortcuts). 115.09 M parameters, as the authors' released model.
* ``resnet50``, :class:`ResNet`: ResNet-50 of He et al. 2016a, the affordable ImageNet network: timm's
  ``resnet50``. 25,557,032 parameters, as torchvision's.

timm builds the body without its classifier (it ends with global average pooling); the network adds the ``head``
slot and a classifier (``nn.Linear``) after it. timm's own ``drop_rate`` is a functional dropout before its
classifier, which a module hook cannot see; the slot is a module, found by the variance probe and the audit. The
BN layers keep timm's init with every BN weight 1 (``zero_init_last=False``), as the cited papers' networks had.

Dropout slots in every bottleneck block (timm's block, with the slot's layer in front of one of its layers):

* ``before_bn`` (Dropout-(a)): in front of the block's last BN (``bn3``; ``norm3`` in the pre-activation block);
* ``before_conv`` (Dropout-(b)): in front of the block's last conv (``conv3``), whose output feeds a BN;
* ``head``: after global pooling, in front of the classifier (the position of SENet's own dropout of 0.2).

``width`` is the first stage's bottleneck width (64; the stages have width, 2, 4, 8 width): with fewer ``layers``,
a narrow network of the same family for a CPU.

timm is imported when one of these networks is built, not with varshift: importing it takes seconds of CPU, which
every other run (and every ``varshift-train --help``) would pay.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from varshift.checks import refuse, require, whole_number
from varshift.models.slots import DropoutSlots

STAGES = 4


def slotted_layers() -> dict[type[nn.Module], tuple[str, str]]:
    """The layer of each timm block that the before_bn and the before_conv slot sit in front of."""
    from timm.models.resnet import Bottleneck
    from timm.models.resnetv2 import PreActBottleneck

    return {Bottleneck: ("bn3", "conv3"), PreActBottleneck: ("norm3", "conv3")}


class SlotBefore(nn.Module):
    """A dropout slot in front of one layer of a timm block: ``layer(slot(x))``."""

    def __init__(self, slot: nn.Module, layer: nn.Module):
        super().__init__()
        self.slot, self.layer = slot, layer

    def forward(self, x):
        return self.layer(self.slot(x))


class TimmNetwork(nn.Module):
    """A timm body without classifier (it returns pooled features), the ``head`` slot, the classifier; the slots
    before_bn and before_conv in every bottleneck of the body."""

    def __init__(self, body: nn.Module, num_classes: int, dropout, position: str):
        super().__init__()
        slot = DropoutSlots(dropout, position)
        # timm's classifier head keeps an nn.Dropout(p=0) when it has no classifier (ResNetV2's): an identity, which
        # would still count as a dropout site for the audit
        unused = [name for name, module in body.named_modules() if isinstance(module, nn.Dropout) and module.p == 0]
        for name in unused:
            body.set_submodule(name, nn.Identity())
        layers = slotted_layers()
        blocks = [module for module in body.modules() if type(module) in layers]
        for block in blocks:
            before_bn, before_conv = layers[type(block)]
            setattr(block, before_bn, SlotBefore(slot("before_bn"), getattr(block, before_bn)))
            setattr(block, before_conv, SlotBefore(slot("before_conv"), getattr(block, before_conv)))
        self.body = body
        self.drop_head = slot("head")
        self.fc = nn.Linear(body.num_features, whole_number("num_classes", num_classes))

    def forward(self, x):
        return self.fc(self.drop_head(self.body(x)))


def stage_blocks(family: str, layers: Sequence[int]) -> list[int]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) != STAGES:
        refuse(f"{family} layers", layers, f"a list of {STAGES} block counts, one per stage")
    return [whole_number(f"{family} layers", blocks) for blocks in layers]


def grouped_width(family: str, width: int, cardinality: int, base_width: int) -> None:
    """timm's first-stage 3x3 conv has floor(width * base_width / 64) * cardinality channels: at least one."""
    require(width * base_width // 64 * cardinality >= 1, f"{family} base_width", base_width,
            f"at least {-(-64 // width)} with width {width}: the first stage's grouped conv would have no channel")


def post_activation_body(model: str, family: str, in_channels: int, layers, width: int, cardinality: int,
                         base_width: int) -> nn.Module:
    """timm's network ``model`` (its ``ResNet`` class) at the given sizes, without classifier."""
    import timm

    layers = stage_blocks(family, layers)
    width = whole_number(f"{family} width", width)
    cardinality = whole_number(f"{family} cardinality", cardinality)
    base_width = whole_number(f"{family} base_width", base_width)
    grouped_width(family, width, cardinality, base_width)
    return timm.create_model(model, pretrained=False, num_classes=0, in_chans=whole_number("in_channels", in_channels),
                             layers=layers, channels=[width * 2**stage for stage in range(STAGES)], stem_width=width,
                             cardinality=cardinality, base_width=base_width, zero_init_last=False)


class ResNet(TimmNetwork):
    """ResNet / ResNeXt of bottleneck blocks, post-activation (timm's ``resnet50``, ``resnext101_64x4d``)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout=None, position: str = "none",
                 *, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64, cardinality: int = 1, base_width: int = 64):
        body = post_activation_body("resnet50", "resnet", in_channels, layers, width, cardinality, base_width)
        super().__init__(body, num_classes, dropout, position)


class SENet(TimmNetwork):
    """SENet-154 (timm's ``senet154``): SE-ResNeXt bottlenecks, a three-conv stem, 3x3 projection shortcuts."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout=None, position: str = "none",
                 *, layers: Sequence[int] = (3, 8, 36, 3), width: int = 64, cardinality: int = 64, base_width: int = 4):
        body = post_activation_body("senet154", "senet", in_channels, layers, width, cardinality, base_width)
        super().__init__(body, num_classes, dropout, position)


class PreActResNet(TimmNetwork):
    """Pre-activation ResNet of bottleneck blocks (timm's ``ResNetV2`` with BN, as its ``resnetv2_152``)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout=None, position: str = "none",
                 *, layers: Sequence[int] = (3, 24, 36, 3), width: int = 64):
        from timm.layers import BatchNormAct2d, create_conv2d
        from timm.models.resnetv2 import ResNetV2

        width = whole_number("preact resnet width", width)
        body = ResNetV2(layers=stage_blocks("preact resnet", layers), num_classes=0,
                        channels=[4 * width * 2**stage for stage in range(STAGES)], stem_chs=width,
                        in_chans=whole_number("in_channels", in_channels), conv_layer=create_conv2d,
                        norm_layer=BatchNormAct2d)
        super().__init__(body, num_classes, dropout, position)
