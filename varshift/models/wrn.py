"""Wide ResNet for 32x32 and 28x28 images, as bearpaw's WideResNet.

WRN-28-10: ``depth=28`` (4 blocks per stage, depths 6n+4), ``widen_factor=10``: widths
16/160/320/640, 25 BN layers. Where a block changes width or stride, both its conv1 and its 1x1
shortcut conv read the pre-activated input BN1-ReLU(x); otherwise the shortcut is x itself.

Dropout slots, per pre-activation block BN1-ReLU-conv3x3-BN2-ReLU-conv3x3: ``before_bn`` between
conv1 and BN2, ``before_conv`` between BN2-ReLU and conv2 (Wide ResNet's own dropout position);
``head`` after the final BN-ReLU and global pooling, in front of the classifier; ``residual`` on each
block's residual branch, in front of the add (DropPath's place).
"""

from __future__ import annotations

from torch import nn

from varshift.checks import whole_number
from varshift.models.slots import (
    DropoutSlots,
    PreActHead,
    blocks_per_stage,
    conv1x1,
    conv3x3,
    init_bearpaw,
    three_stages,
)

STEM_WIDTH = 16


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, slot: DropoutSlots):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.drop_before_bn = slot("before_bn")
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.drop_before_conv = slot("before_conv")
        self.conv2 = conv3x3(out_planes, out_planes)
        self.drop_residual = slot("residual")
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = conv1x1(in_planes, out_planes, stride)

    def forward(self, x):
        activated = self.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.drop_before_conv(self.relu(self.bn2(self.drop_before_bn(out)))))
        return self.drop_residual(out) + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """bearpaw's WideResNet: conv3x3(16), three stages of wide blocks, BN-ReLU, pool, FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout=None, position: str = "none",
                 *, depth: int = 28, widen_factor: int = 10):
        super().__init__()
        n = blocks_per_stage("wrn", depth, 4, 2)
        widen_factor = whole_number("wrn widen_factor", widen_factor)
        slot = DropoutSlots(dropout, position)
        self.conv1 = conv3x3(whole_number("in_channels", in_channels), STEM_WIDTH)

        def make_block(planes: int, stage: int, stride: int) -> tuple[nn.Module, int]:
            width = STEM_WIDTH * widen_factor * 2**stage
            return WideBasicBlock(planes, width, stride, slot), width

        (self.block1, self.block2, self.block3), planes = three_stages(n, STEM_WIDTH, make_block)
        self.head = PreActHead(planes, num_classes, slot)
        init_bearpaw(self)
        nn.init.zeros_(self.head.fc.bias)  # as bearpaw

    def forward(self, x):
        return self.head(self.block3(self.block2(self.block1(self.conv1(x)))))
