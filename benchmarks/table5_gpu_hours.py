"""What Table 5 costs on GPUs: each network's forward FLOPs (counted by torch) and the GPU-hours of its runs.

The speed is stated, not measured here: ``--resnet50-images-per-s`` images/s of ResNet-50 training on one GPU
(default 2470: NVIDIA's DeepLearningExamples, PyTorch ResNet-50 v1.5, one A100 80 GB, mixed precision,
github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/Classification/ConvNets/resnet50v1.5). Every network is
assumed to run at the FLOPs per second ResNet-50 reaches: an estimate, optimistic for the grouped convolutions of
ResNeXt and SENet, which use a GPU less well than dense ones.

    python benchmarks/table5_gpu_hours.py [--resnet50-images-per-s 2470] [--epochs 90] [--seeds 5]
"""

from __future__ import annotations

import argparse

from tabulate import tabulate

from varshift.models.flops import TrainingCost, forward_flops

NETWORKS = ("resnet200", "resnext101_64x4d", "senet154")
RATIOS = (0.0, 0.2)  # dropout before the classifier: none, 0.2
TRAIN_IMAGES, TEST_IMAGES = 1_281_167, 50_000  # ImageNet-1k (ILSVRC-2012)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resnet50-images-per-s", type=float, default=2470.0,
                        help="training images/s of ResNet-50 on one GPU (2470: NVIDIA's A100 80GB, mixed precision)")
    parser.add_argument("--epochs", type=int, default=90, help="epochs of the recipe (90: conf/recipe/resnet50.yaml)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per network and ratio (5, the paper's)")
    args = parser.parse_args(argv)
    for name in ("resnet50_images_per_s", "epochs", "seeds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    reference = forward_flops("resnet50")
    rows = []
    for network in NETWORKS:
        cost = TrainingCost(forward_flops(network), args.epochs, TRAIN_IMAGES, TEST_IMAGES, reference,
                            args.resnet50_images_per_s)
        runs = len(RATIOS) * args.seeds
        rows.append({"network": network, "GFLOPs/image": cost.flops / 1e9, "images/s": cost.images_per_s,
                     "GPU-hours/run": cost.gpu_hours, "runs": runs, "GPU-hours": runs * cost.gpu_hours})
    total = sum(row["GPU-hours"] for row in rows)
    print(f"ResNet-50: {reference / 1e9:.2f} GFLOPs/image at {args.resnet50_images_per_s:,.0f} training images/s "
          f"per GPU; {args.epochs} epochs of {TRAIN_IMAGES:,} images, a test pass of {TEST_IMAGES:,} after each")
    print(tabulate(rows, headers="keys", floatfmt=(None, ".2f", ".0f", ".1f", None, ".0f")))
    print(f"Table 5: {total:,.0f} GPU-hours ({total / 24:,.0f} GPU-days)")
    return rows


if __name__ == "__main__":
    main()
