"""The batches of ``varshift-audit --data DATASET``: real training images, for the prediction's statistics and for
measuring the shift before and after BN recalibration.

* a varshift dataset (cifar10, cifar100, fashion_mnist, mnist): its training images as varshift-train feeds them
  (normalised, augmented, shuffled with ``seed``), found where varshift-train finds them (``VARSHIFT_DATA``, else
  ``data/`` and the system's copies; nothing is downloaded);
* a folder of class folders of images (torchvision's ``ImageFolder``, e.g. ImageNet's ``train/``): resized and
  centre-cropped to the input's height and width, RGB, normalised with ImageNet's mean and standard deviation
  (what torchvision's models expect), shuffled with ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from varshift.data import DATASET_NAMES, build_loaders, dataset_config
from varshift.errors import DatasetCorruptedError, DatasetNotFoundError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_SIDE = 224


class DataError(ValueError):
    """``--data`` names no dataset or folder that can be read; the message says which and why."""


def varshift_batches(name: str, batch_size: int, num_batches: int, seed: int) -> list[Tensor]:
    try:
        loaders = build_loaders(name, dataset_config(name)["root"], batch_size=batch_size, test_batch_size=batch_size,
                                seed=seed)
    except (DatasetNotFoundError, DatasetCorruptedError) as error:
        raise DataError(str(error)) from None
    loaders.train.set_epoch(0)
    return [x for (x, _), _ in zip(loaders.train, range(num_batches), strict=False)]


def folder_batches(root: Path, input_shape: tuple[int, ...] | None, batch_size: int, num_batches: int,
                   seed: int) -> list[Tensor]:
    from torchvision import datasets, transforms

    side = tuple(input_shape[1:]) if input_shape else (DEFAULT_SIDE, DEFAULT_SIDE)
    preparation = transforms.Compose([transforms.Resize(min(side)), transforms.CenterCrop(side),
                                      transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        images = datasets.ImageFolder(str(root), transform=preparation)  # its loader converts to RGB
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"--data {root}: not a folder of class folders of images ({error})") from None
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    picked = order[:batch_size * num_batches].tolist()
    try:
        stacked = [torch.stack([images[i][0] for i in picked[start:start + batch_size]])
                   for start in range(0, len(picked), batch_size)]
    except OSError as error:
        raise DataError(f"--data {root}: an image cannot be read ({error})") from None
    return stacked


def data_batches(data: str, *, input_shape: tuple[int, ...] | None, batch_size: int, num_batches: int,
                 seed: int) -> list[Tensor]:
    """Up to ``num_batches`` batches of ``batch_size`` training images of ``data`` (see the module)."""
    if data in DATASET_NAMES:
        return varshift_batches(data, batch_size, num_batches, seed)
    if Path(data).is_dir():
        return folder_batches(Path(data), input_shape, batch_size, num_batches, seed)
    raise DataError(f"--data {data!r} is neither a varshift dataset ({', '.join(DATASET_NAMES)}) nor a folder "
                    "of class folders of images")
