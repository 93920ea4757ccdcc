"""Pre-activation ResNet for 32x32 and 28x28 images, as in bearpaw's pytorch-classification.

The paper's "PreResNet-110" is bearpaw's ``preresnet(depth=110)`` of 2017, which put 18 bottleneck
blocks in each stage: 164 weight layers, widths 16/32/64 (x4), 163 BN layers, 1,703,258 parameters
on 10 classes. Here ``depth`` counts weight layers, so that network is ``depth=164`` (the default)
and ``block="bottleneck"`` takes depths 9n+2; ``block="basic"`` takes 6n+2. ``width`` is the first
stage's width (16 in the paper; the stages are width, 2 width, 4 width): a narrow network for a CPU.

Dropout slots, per block:

* bottleneck, BN1-ReLU-conv1x1-BN2-ReLU-conv3x3-BN3-ReLU-conv1x1: ``before_bn`` between the 3x3
  conv and BN3, ``before_conv`` between BN3-ReLU and the last 1x1 conv;
* basic, BN1-ReLU-conv3x3-BN2-ReLU-conv3x3: ``before_bn`` between conv1 and BN2, ``before_conv``
  between BN2-ReLU and conv2;
* ``head``: after the final BN-ReLU and global pooling, in front of the classifier;
* ``residual``: on each block's residual branch, in front of the add (DropPath's place).
"""

from __future__ import annotations

from torch import nn

from varshift.checks import one_of, whole_number
from varshift.models.slots import (
    DropoutSlots,
    PreActHead,
    blocks_per_stage,
    conv1x1,
    conv3x3,
    init_bearpaw,
    three_stages,
)


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (x4 channels), plus the shortcut."""

    expansion = 4
    layers = 3

    def __init__(self, in_planes: int, planes: int, stride: int, slot: DropoutSlots):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.drop_before_bn = slot("before_bn")
        self.bn3 = nn.BatchNorm2d(planes)
        self.drop_before_conv = slot("before_conv")
        self.conv3 = conv1x1(planes, out_planes)
        self.drop_residual = slot("residual")
        self.relu = nn.ReLU(inplace=True)
        # bearpaw's downsample is a bare 1x1 conv on the block's input, without BN.
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = conv1x1(in_planes, out_planes, stride)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.drop_before_conv(self.relu(self.bn3(self.drop_before_bn(out)))))
        return self.drop_residual(out) + (x if self.downsample is None else self.downsample(x))


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut."""

    expansion = 1
    layers = 2

    def __init__(self, in_planes: int, planes: int, stride: int, slot: DropoutSlots):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.drop_before_bn = slot("before_bn")
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop_before_conv = slot("before_conv")
        self.conv2 = conv3x3(planes, planes)
        self.drop_residual = slot("residual")
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = conv1x1(in_planes, planes, stride)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.drop_before_conv(self.relu(self.bn2(self.drop_before_bn(out)))))
        return self.drop_residual(out) + (x if self.downsample is None else self.downsample(x))


BLOCKS = {"bottleneck": PreActBottleneck, "basic": PreActBasicBlock}


class PreResNet(nn.Module):
    """bearpaw's PreResNet: conv3x3(width), three stages of pre-activation blocks, BN-ReLU, pool, FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout=None, position: str = "none",
                 *, depth: int = 164, block: str = "bottleneck", width: int = 16):
        super().__init__()
        block_cls = BLOCKS[one_of("preresnet block", block, tuple(BLOCKS))]
        n = blocks_per_stage(f"preresnet ({block} block)", depth, 2, block_cls.layers)
        slot = DropoutSlots(dropout, position)
        width = whole_number("width", width)
        self.conv1 = conv3x3(whole_number("in_channels", in_channels), width)

        def make_block(planes: int, stage: int, stride: int) -> tuple[nn.Module, int]:
            return block_cls(planes, width * 2**stage, stride, slot), width * 2**stage * block_cls.expansion

        (self.layer1, self.layer2, self.layer3), planes = three_stages(n, width, make_block)
        self.head = PreActHead(planes, num_classes, slot)
        init_bearpaw(self)

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
