"""Table 5's networks (timm's): their sizes pinned to the published ones, their dropout slots, their FLOPs, and the
variance probe and BN recalibration on one of them."""

from __future__ import annotations

import pytest
import torch
import torchvision
from test_probes import train_statistics
from torch import nn

from varshift.bn import batchnorm_layers, recalibrate_bn
from varshift.dropout import MultiplicativeNoise
from varshift.models import build_model
from varshift.models.flops import TrainingCost, forward_flops
from varshift.models.registry import build_on_meta
from varshift.probes import measure_variance_shift

NETWORKS = ("resnet200", "resnext101_64x4d", "senet154", "resnet50")
SMALL = {"resnet200": {"layers": [1, 2, 1, 1], "width": 4}, "resnet50": {"layers": [1, 2, 1, 1], "width": 4},
         "resnext101_64x4d": {"layers": [1, 2, 1, 1], "width": 4, "cardinality": 2, "base_width": 32},
         "senet154": {"layers": [1, 2, 1, 1], "width": 4, "cardinality": 2, "base_width": 32}}
BLOCKS = 5  # bottleneck blocks of the SMALL networks


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_are_the_published_ones():
    """On 1000 classes. Exact where the source is exact: torchvision's model docs (num_params) and torchvision's own
    networks; else to the digits published: 64.7 M for fb.resnet.torch's pre-ResNet-200 (github.com/szagoruyko/
    wide-residual-networks, pretrained/README.md), 115.09 M for the SENet authors' SENet-154 (timm's
    results/results-imagenet.csv, legacy_senet154.in1k; their Caffe model is 440 MiB of float32,
    github.com/hujie-frank/SENet)."""
    counts = {name: parameters(build_on_meta(name, num_classes=1000)) for name in NETWORKS}
    assert counts["resnet50"] == 25_557_032
    assert counts["resnext101_64x4d"] == 83_455_272
    assert round(counts["resnet200"] / 1e6, 1) == 64.7
    assert round(counts["senet154"] / 1e6, 2) == 115.09
    with torch.device("meta"):
        assert counts["resnet50"] == parameters(torchvision.models.resnet50())
        assert counts["resnext101_64x4d"] == parameters(torchvision.models.resnext101_64x4d())


def test_forward_flops_are_the_published_multiply_adds_times_two():
    """torchvision's model docs: ResNet-50 4.09 and ResNeXt-101 64x4d 15.46 GFLOPS (multiply-adds) at 224x224."""
    assert round(forward_flops("resnet50") / 2e9, 2) == 4.09
    assert round(forward_flops("resnext101_64x4d") / 2e9, 2) == 15.46


def test_the_gpu_hours_of_a_hand_built_run():
    """A network of twice ResNet-50's FLOPs on a GPU that trains 1000 ResNet-50 images/s: 500 images/s. 10 epochs
    of 900 images (3 forward passes a step) plus 6 final forward passes over them and 11 test passes of 100 images:
    (30 + 6) * 900 + 11 * 100 = 33,500 forward passes of 2 F FLOPs at 3 * 1000 * F FLOP/s."""
    cost = TrainingCost(flops=2_000, epochs=10, train_images=900, test_images=100, reference_flops=1_000,
                        reference_images_per_s=1000.0)
    assert cost.images_per_s == pytest.approx(500.0)
    assert cost.forward_passes == 33_500
    assert cost.gpu_hours == pytest.approx(33_500 * 2 / 3000 / 3600)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_slot_in_every_bottleneck_before_its_last_bn_and_conv_and_one_at_the_head(name):
    last_bn = "norm3" if name == "resnet200" else "bn3"
    keys = None
    for position, count, layer in (("none", 0, None), ("before_bn", BLOCKS, last_bn), ("before_conv", BLOCKS, "conv3"),
                                   ("head", 1, None)):
        model = build_on_meta(name, dropout={"kind": "bernoulli", "rate": 0.2}, position=position, num_classes=10,
                              **SMALL[name])
        slots = [slot for slot, module in model.named_modules() if isinstance(module, MultiplicativeNoise)]
        assert len(slots) == count, position
        if layer is not None:
            assert all(slot.endswith(f".{layer}.slot") for slot in slots), slots
        if position == "head":
            assert slots == ["drop_head"]
            assert [type(module) for module in model.modules() if isinstance(module, nn.Dropout)] == []
        keys = keys or model.state_dict().keys()
        assert model.state_dict().keys() == keys  # the same checkpoint layout at every position


def test_the_probe_sees_the_shift_of_the_bns_fed_by_dropout_and_recalibration_removes_it():
    """ResNet-50 (one block per stage, width 8) at 64x64 with dropout 0.5 before every bottleneck's last BN; BN
    statistics are cumulative averages over 8 batches of 16 random images in train mode, then measured on the same
    batches. Bernoulli 0.5 doubles the variance of a zero-mean unit (1 + q/p = 2) and more for a unit of nonzero
    mean (c^2 + 2v against v), so each BN fed by a dropout has a shift of 2 or more: 1.8 leaves 10% for the eval-mode
    normalisation of the layers before it, by pooled instead of per-batch statistics (the per-channel variance
    estimates pool at least 8 x 16 x 2 x 2 = 512 values). Recalibrated on the same batches with dropout off, the
    statistics are the eval-mode ones up to that same difference: within 10% of 1 for every BN layer."""
    torch.manual_seed(0)
    model = build_model("resnet50", num_classes=10, dropout={"kind": "bernoulli", "rate": 0.5}, position="before_bn",
                        layers=[1, 1, 1, 1], width=8)
    layers = batchnorm_layers(model)
    for _, bn in layers:
        bn.momentum = None
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, 64, 64, generator=generator) for _ in range(8)]
    train_statistics(model, batches)
    table = measure_variance_shift(model, batches)
    assert table["name"].tolist() == [name for name, _ in layers]
    fed = table[table["fed_by_dropout"]]
    assert fed["name"].tolist() == [f"body.layer{stage}.0.bn3.layer" for stage in (1, 2, 3, 4)]
    assert (fed["shift"] >= 1.8).all(), fed
    recalibrate_bn(model, batches)
    assert (measure_variance_shift(model, batches)["shift"] < 1.1).all()
