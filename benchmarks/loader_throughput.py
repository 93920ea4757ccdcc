"""Images per second of varshift's DeviceLoader against torchvision's DataLoader, on the same data.

Both loaders do the paper's CIFAR recipe on CIFAR-shaped random uint8 images: a random 32x32 crop of
the image zero-padded by 4 pixels, a random horizontal flip, normalisation by the CIFAR-10 mean and std,
a shuffled order, batches delivered on ``--device``. The baseline is the usual pipeline (bearpaw's
``cifar.py``): a dataset of HWC uint8 arrays turned into PIL images, ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)``, a ``DataLoader`` with worker
processes, each batch then moved to the device.

Each loader is timed over one epoch. The DataLoader's epoch includes starting its workers, as every
epoch of a DataLoader without persistent workers does; the DeviceLoader's timed epoch follows an untimed
one (its data moved to the device once, kernels warmed up).

On a CPU shared with other busy processes, pass ``--threads 1`` (or set ``OMP_WAIT_POLICY=PASSIVE``):
torch's spinning OpenMP threads otherwise wait at every operation for a peer the OS has descheduled,
which slows small tensor operations by an order of magnitude or more.

    python benchmarks/loader_throughput.py --images 10000 --device cpu --json results/loader.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from varshift.data import DeviceLoader, dataset_info
from varshift.io import atomic_write_json


class PilImages(Dataset):
    """HWC uint8 images served as PIL images through a transform, as torchvision's CIFAR10 does."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images_hwc, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.images_hwc)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images_hwc[index])), int(self.labels[index])


def images_per_second(batches: Iterable, device: torch.device) -> float:
    """Time one pass over ``batches``, each moved to ``device``, until the device has finished."""
    start, seen = time.perf_counter(), 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="number of CIFAR-shaped images (10000)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch (128)")
    parser.add_argument("--device", default="cpu", help="where batches go: cpu, cuda, ... (cpu)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of both loaders (0)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = dataset_info("cifar10")
    rng = np.random.default_rng(args.seed)
    images_hwc = rng.integers(0, 256, (args.images, info.size, info.size, info.channels), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, args.images)

    device_loader = DeviceLoader(
        torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        batch_size=args.batch_size,
        mean=info.mean,
        std=info.std,
        crop_padding=info.crop_padding,
        flip=info.flip,
        shuffle=True,
        seed=args.seed,
        device=device,
    )
    images_per_second(device_loader, device)  # untimed warm-up epoch
    device_loader.set_epoch(1)
    device_rate = images_per_second(device_loader, device)

    transform = transforms.Compose(
        [
            transforms.RandomCrop(info.size, padding=info.crop_padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(info.mean, info.std),
        ]
    )
    torch.manual_seed(args.seed)
    torchvision_loader = DataLoader(
        PilImages(images_hwc, labels, transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    torchvision_rate = images_per_second(torchvision_loader, device)

    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "device_loader_images_per_s": device_rate,
        "torchvision_images_per_s": torchvision_rate,
        "ratio": device_rate / torchvision_rate,
    }
    print(f"{args.images} CIFAR-shaped images, batch {args.batch_size}, device {result['device_name']}")
    print(f"varshift DeviceLoader:                     {device_rate:12,.0f} images/s")
    print(f"torchvision DataLoader, {args.workers} workers, PIL: {torchvision_rate:12,.0f} images/s")
    print(f"ratio: {result['ratio']:.1f}x")
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
