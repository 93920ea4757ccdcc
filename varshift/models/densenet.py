"""DenseNet-BC for 32x32 and 28x28 images, as bearpaw's DenseNet with bottleneck layers.

DenseNet-BC (L=100, k=12): ``depth=100`` (16 bottleneck layers per dense block, depths 6n+4),
``growth_rate=12``, ``compression=0.5`` (each transition keeps ``floor(channels * compression)``).
A 3x3 stem conv to 2k channels comes first, without BN; 99 BN layers.

Dropout slots, per bottleneck layer BN1-ReLU-conv1x1(4k)-BN2-ReLU-conv3x3(k), whose output is
concatenated to its input: ``before_bn`` between the 1x1 conv and BN2, ``before_conv`` between
BN2-ReLU and the 3x3 conv; transitions have none. ``head`` sits after the final BN-ReLU and global
pooling, in front of the classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from varshift.checks import fraction, refuse, whole_number
from varshift.models.slots import DropoutSlots, PreActHead, blocks_per_stage, conv1x1, conv3x3, init_bearpaw


class DenseBottleneck(nn.Module):
    """BN-ReLU-conv1x1 to 4k channels, BN-ReLU-conv3x3 to k channels, concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int, slot: DropoutSlots):
        super().__init__()
        inner = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, inner)
        self.drop_before_bn = slot("before_bn")
        self.bn2 = nn.BatchNorm2d(inner)
        self.drop_before_conv = slot("before_conv")
        self.conv2 = conv3x3(inner, growth_rate)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.drop_before_conv(self.relu(self.bn2(self.drop_before_bn(out)))))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (compression), 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)


class DenseNetBC(nn.Module):
    """bearpaw's DenseNet-BC: conv3x3(2k), three dense blocks with two transitions, BN-ReLU, pool, FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout=None, position: str = "none",
                 *, depth: int = 100, growth_rate: int = 12, compression: float = 0.5):
        super().__init__()
        n = blocks_per_stage("densenet-BC", depth, 4, 2)
        growth_rate = whole_number("densenet growth_rate", growth_rate)
        compression = fraction("densenet compression", compression)
        slot = DropoutSlots(dropout, position)
        planes = 2 * growth_rate
        self.conv1 = conv3x3(whole_number("in_channels", in_channels), planes)
        stages = []
        for index in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseBottleneck(planes, growth_rate, slot))
                planes += growth_rate
            stages.append(nn.Sequential(*layers))
            if index < 2:
                out_planes = math.floor(planes * compression)
                if out_planes < 1:
                    refuse("densenet compression", compression,
                           f"a larger value: this one leaves no channels after a transition of {planes}")
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = stages
        self.head = PreActHead(planes, num_classes, slot)
        init_bearpaw(self)

    def forward(self, x):
        return self.head(self.dense3(self.trans2(self.dense2(self.trans1(self.dense1(self.conv1(x)))))))
