"""ResNeXt for 32x32 and 28x28 images, as bearpaw's CifarResNeXt.

ResNeXt-29 8x64d: ``depth=29`` (3 bottlenecks per stage, depths 9n+2), ``cardinality=8`` groups of
``base_width=64`` channels in the first stage's grouped conv (doubling each stage), and stage
outputs ``64 * widen_factor * (1, 2, 4)`` = 256/512/1024 for ``widen_factor=4``. A 3x3 stem conv
with BN-ReLU (64 channels) comes first; 31 BN layers.

Dropout slots, per post-activation bottleneck conv_reduce-BN-ReLU-grouped conv3x3-BN-ReLU-
conv_expand-BN_expand (+ shortcut, ReLU): ``before_bn`` between conv_expand and BN_expand,
``before_conv`` between the second ReLU and conv_expand; ``residual`` between BN_expand and the add
(DropPath's place); ``head`` after global pooling, in front of the classifier.
"""

from __future__ import annotations

from torch import nn

from varshift.checks import whole_number
from varshift.models.slots import DropoutSlots, blocks_per_stage, conv1x1, conv3x3, init_bearpaw, three_stages

STEM_WIDTH = 64


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce to ``width`` channels, grouped 3x3, 1x1 expand; BN after each; ReLU after the sum."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, cardinality: int, width: int,
                 slot: DropoutSlots):
        super().__init__()
        self.conv_reduce = conv1x1(in_planes, width)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = conv3x3(width, width, stride, groups=cardinality)
        self.bn = nn.BatchNorm2d(width)
        self.drop_before_conv = slot("before_conv")
        self.conv_expand = conv1x1(width, out_planes)
        self.drop_before_bn = slot("before_bn")
        self.bn_expand = nn.BatchNorm2d(out_planes)
        self.drop_residual = slot("residual")
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = self.relu(self.bn_reduce(self.conv_reduce(x)))
        out = self.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.drop_before_bn(self.conv_expand(self.drop_before_conv(out))))
        return self.relu(self.drop_residual(out) + self.shortcut(x))


class ResNeXt(nn.Module):
    """bearpaw's CifarResNeXt: conv3x3(64)-BN-ReLU, three stages of bottlenecks, pool, FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout=None, position: str = "none",
                 *, depth: int = 29, cardinality: int = 8, base_width: int = 64, widen_factor: int = 4):
        super().__init__()
        n = blocks_per_stage("resnext", depth, 2, 3)
        cardinality = whole_number("resnext cardinality", cardinality)
        base_width = whole_number("resnext base_width", base_width)
        widen_factor = whole_number("resnext widen_factor", widen_factor)
        slot = DropoutSlots(dropout, position)
        self.conv_1_3x3 = conv3x3(whole_number("in_channels", in_channels), STEM_WIDTH)
        self.bn_1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)

        def make_block(planes: int, stage: int, stride: int) -> tuple[nn.Module, int]:
            out_planes = STEM_WIDTH * widen_factor * 2**stage
            width = cardinality * base_width * 2**stage
            return ResNeXtBottleneck(planes, out_planes, stride, cardinality, width, slot), out_planes

        (self.stage_1, self.stage_2, self.stage_3), planes = three_stages(n, STEM_WIDTH, make_block)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop_head = slot("head")
        self.classifier = nn.Linear(planes, whole_number("num_classes", num_classes))
        init_bearpaw(self)
        # bearpaw: He-normal classifier weight, zero bias.
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        x = self.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(self.drop_head(self.pool(x).flatten(1)))
