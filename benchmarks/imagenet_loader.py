"""Images per second of varshift's ImageNet loader against torchvision's ImageFolder, on JPEGs it writes.

The benchmark writes ``--images`` JPEGs in ImageNet's layout (``train/<class>/*.JPEG``), by default of ImageNet's
typical size (500x375, quality 90, textured so that they compress as photos do, about 100 KB), and times one
epoch of each loader with the same worker processes, both doing the training view of the ImageNet recipe (a
random-resized crop to 224x224, a random flip, normalisation by ImageNet's mean and std, a shuffled order) and then
the test view (the shorter side resized to 256, the centre 224x224 crop):

* varshift's ``FolderLoader``: ``torchvision.io.decode_image`` and tensor resizing in the workers, uint8 batches
  normalised on ``--device``;
* the baseline, torchvision's classification reference: ``ImageFolder`` (PIL) with ``RandomResizedCrop(224)``,
  ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)`` (test: ``Resize(256)``,
  ``CenterCrop(224)``, ...), float batches moved to ``--device``.

Each epoch starts its workers, as an epoch of a DataLoader without persistent workers does.

    python benchmarks/imagenet_loader.py --images 512 --workers 2 --device cpu --json results/imagenet_loader.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from loader_throughput import images_per_second
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from varshift.data.folder_loader import FolderLoader
from varshift.data.folders import scan_image_folders
from varshift.data.info import dataset_info
from varshift.io import atomic_write_json

CLASSES = 8


def write_jpegs(root: Path, images: int, width: int, height: int, seed: int) -> None:
    """``images`` textured JPEGs in ``root/{train,val}/<class>/`` (the same files in both)."""
    rng = np.random.default_rng(seed)
    for index in range(images):
        coarse = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.int16)
        pixels = (smooth + rng.integers(-24, 25, smooth.shape)).clip(0, 255).astype(np.uint8)
        for split in ("train", "val"):
            folder = root / split / f"n{index % CLASSES:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{index}.JPEG", "JPEG", quality=90)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="number of JPEGs written and loaded (512)")
    parser.add_argument("--width", type=int, default=500, help="their width in pixels (500, ImageNet's typical)")
    parser.add_argument("--height", type=int, default=375, help="their height in pixels (375)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of both loaders (2)")
    parser.add_argument("--device", default="cpu", help="where batches go: cpu, cuda, ... (cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and of both loaders (0)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    for name in ("images", "width", "height", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def baseline_transform(training: bool, size: int, resize: int, mean, std) -> transforms.Compose:
    view = ([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()] if training
            else [transforms.Resize(resize), transforms.CenterCrop(size)])
    return transforms.Compose([*view, transforms.ToTensor(), transforms.Normalize(mean, std)])


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    info = dataset_info("imagenet")
    result = {"device": str(device), "images": args.images, "image_size": [args.width, args.height],
              "batch_size": args.batch_size, "workers": args.workers}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_jpegs(root, args.images, args.width, args.height, args.seed)
        files = scan_image_folders("imagenet", root).train
        print(f"{args.images} JPEGs of {args.width}x{args.height} "
              f"({sum(f.stat().st_size for f in (root / 'train').rglob('*.JPEG')) / args.images / 1e3:.0f} KB "
              f"each), batch {args.batch_size}, {args.workers} workers, device {device}")
        for view, training in (("training", True), ("test", False)):
            ours = FolderLoader(files, batch_size=args.batch_size, size=info.size, resize=info.resize, mean=info.mean,
                                std=info.std, augment=training, flip=info.flip, shuffle=training, seed=args.seed,
                                device=device, workers=args.workers)
            torch.manual_seed(args.seed)
            baseline = DataLoader(
                datasets.ImageFolder(str(root / "train"),
                                     baseline_transform(training, info.size, info.resize, info.mean, info.std)),
                batch_size=args.batch_size, shuffle=training, num_workers=args.workers,
                pin_memory=device.type == "cuda")
            start = time.perf_counter()
            ours_rate = images_per_second(ours, device)
            baseline_rate = images_per_second(baseline, device)
            result[view] = {"varshift_images_per_s": ours_rate, "imagefolder_images_per_s": baseline_rate,
                            "ratio": ours_rate / baseline_rate, "seconds": time.perf_counter() - start}
            print(f"{view} view: varshift FolderLoader {ours_rate:8,.0f} images/s | torchvision ImageFolder + PIL "
                  f"{baseline_rate:8,.0f} images/s | ratio {ours_rate / baseline_rate:.2f}x")
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
