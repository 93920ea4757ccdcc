"""The four loaders a training run uses, built from a dataset's name and its YAML metadata: device-resident
loaders of the datasets held in memory, worker-decoded loaders of the image folders (ImageNet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch

from varshift.data.device_loader import UNSHARDED, DeviceLoader
from varshift.data.folder_loader import FolderLoader
from varshift.data.folders import ImageFiles, scan_image_folders
from varshift.data.info import DatasetInfo, dataset_info
from varshift.data.seeds import Stream, generator
from varshift.data.shards import Shard
from varshift.data.sources import load_dataset
from varshift.data.subsets import balanced_indices, held_out_split, subset_size


class Loaders(NamedTuple):
    """``train``: shuffled, augmented. ``train_eval``: the same images, augmented, in order, in batches of
    the training size (for the variance probes and BN recalibration, which run BN in training mode as
    training does). ``val``: held-out training images, plain (None without ``val_split``). ``test``: plain,
    in order.

    ``train`` and ``train_eval`` drop a last batch of exactly one image (``drop_single_last``): BN in
    training mode cannot normalise a single image. ``val`` and ``test`` keep every image: eval-mode BN
    handles a batch of one.

    With several processes (a ``shard`` of each): ``train`` splits every batch among them, the others hand out whole
    batches in turn (:mod:`varshift.data.shards`)."""

    info: DatasetInfo
    train: DeviceLoader | FolderLoader
    test: DeviceLoader | FolderLoader
    val: DeviceLoader | FolderLoader | None
    train_eval: DeviceLoader | FolderLoader


def build_loaders(
    name: str,
    root: str | Path,
    *,
    batch_size: int,
    test_batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    subset: float | int | None = None,
    test_subset: float | int | None = None,
    val_split: float = 0.0,
    download: bool = False,
    augment: bool = True,
    verify: bool = True,
    info: DatasetInfo | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    workers: int | None = None,
    shard: Shard = UNSHARDED,
) -> Loaders:
    """Load dataset ``name`` from ``root`` and build its loaders on ``device``.

    ``subset`` / ``test_subset``: a fraction (float) in (0, 1] or a count (int) of the training / test
    images, class-balanced, chosen with ``seed``. ``val_split``: the fraction of the (subset of the)
    training images held out, class-balanced, as ``val``. ``augment=False`` turns crop and flip off.
    ``info``: the metadata to use (e.g. from an overridden ``cfg.dataset``); by default the YAML's.
    ``test_batch_size`` is the batch size of ``test`` and ``val``; ``train`` and ``train_eval`` use
    ``batch_size``. ``memory_format``: the layout of the batches of every loader. Every file is checked, and
    labels must be below ``info.num_classes``. An image folder (``info.reads_folders``) is checked for its layout
    and its number of classes; its files are decoded while training, by ``workers`` processes (None: one per CPU
    core; 0: in this process), and ``download`` and ``verify`` do not apply to it. ``shard``: this process's rank
    among the processes that read the data together (:class:`Loaders`).
    """
    info = dataset_info(name) if info is None else info
    if info.name != name:
        raise ValueError(f"info is for dataset {info.name!r}, not {name!r}")
    check_val_split(val_split)  # before the load, which takes a while
    if info.reads_folders:
        splits = scan_image_folders(name, root, info.num_classes)
        train = _balanced_files(splits.train, subset, seed, Stream.TRAIN_SUBSET, "subset")
        test = _balanced_files(splits.test, test_subset, seed, Stream.TEST_SUBSET, "test_subset")
        return folder_loaders(info, train, test, batch_size=batch_size, test_batch_size=test_batch_size,
                              device=device, seed=seed, val_split=val_split, augment=augment,
                              memory_format=memory_format, workers=workers, shard=shard)
    splits = load_dataset(name, root, download=download, verify=verify, num_classes=info.num_classes)
    expected = [info.channels, info.size, info.size]
    if list(splits.train_images.shape[1:]) != expected:
        raise ValueError(
            f"{name} images at {root} are {list(splits.train_images.shape[1:])}, the metadata says {expected}"
        )
    train_images, train_labels = _balanced_subset(
        splits.train_images, splits.train_labels, subset, seed, Stream.TRAIN_SUBSET, "subset"
    )
    test_images, test_labels = _balanced_subset(
        splits.test_images, splits.test_labels, test_subset, seed, Stream.TEST_SUBSET, "test_subset"
    )
    return loaders_over(info, (train_images, train_labels), (test_images, test_labels), batch_size=batch_size,
                        test_batch_size=test_batch_size, device=device, seed=seed, val_split=val_split,
                        augment=augment, memory_format=memory_format, shard=shard)


def check_val_split(val_split: float) -> None:
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0 <= val_split < 1:
        raise ValueError(f"val_split={val_split!r} is not allowed: give a fraction in [0, 1)")


def loaders_over(
    info: DatasetInfo,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    test_batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    val_split: float = 0.0,
    augment: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
    shard: Shard = UNSHARDED,
) -> Loaders:
    """The loaders of ``build_loaders`` over images already in memory: ``train`` and ``test`` are (uint8
    images ``[N, C, H, W]``, int64 labels ``[N]``) of dataset ``info``."""
    check_val_split(val_split)
    (train_images, train_labels), (test_images, test_labels) = train, test
    device = torch.device(device)
    common = dict(mean=info.mean, std=info.std, device=device, seed=seed, memory_format=memory_format, shard=shard)
    evaluation = dict(batch_size=test_batch_size, **common)
    val = None
    if val_split:
        kept, held_out = held_out_split(train_labels, float(val_split), generator(seed, Stream.VAL_SPLIT))
        val = DeviceLoader(train_images[held_out], train_labels[held_out], **evaluation)
        train_images, train_labels = train_images[kept], train_labels[kept]
    train_images, train_labels = train_images.to(device), train_labels.to(device)  # one copy for two loaders
    augmentation = dict(crop_padding=info.crop_padding, flip=info.flip) if augment else {}
    bn_training = dict(batch_size=batch_size, drop_single_last=True, **augmentation, **common)
    return Loaders(
        info=info,
        train=DeviceLoader(train_images, train_labels, shuffle=True, **split(bn_training)),
        test=DeviceLoader(test_images, test_labels, **evaluation),
        val=val,
        train_eval=DeviceLoader(train_images, train_labels, **bn_training),
    )


def folder_loaders(info: DatasetInfo, train: ImageFiles, test: ImageFiles, *, batch_size: int, test_batch_size: int,
                   device: str | torch.device = "cpu", seed: int = 0, val_split: float = 0.0, augment: bool = True,
                   memory_format: torch.memory_format = torch.contiguous_format,
                   workers: int | None = None, shard: Shard = UNSHARDED) -> Loaders:
    """The loaders of ``build_loaders`` over the image files ``train`` and ``test`` of image-folder dataset ``info``;
    ``val`` holds out ``val_split`` of the training images, seen as test images are."""
    check_val_split(val_split)
    common = dict(size=info.size, resize=info.resize, mean=info.mean, std=info.std, device=device, seed=seed,
                  memory_format=memory_format, workers=workers, shard=shard)
    evaluation = dict(batch_size=test_batch_size, **common)
    val = None
    if val_split:
        kept, held_out = held_out_split(train.labels, float(val_split), generator(seed, Stream.VAL_SPLIT))
        val, train = FolderLoader(train.subset(held_out), **evaluation), train.subset(kept)
    bn_training = dict(batch_size=batch_size, drop_single_last=True, augment=augment, flip=info.flip, **common)
    return Loaders(
        info=info,
        train=FolderLoader(train, shuffle=True, **split(bn_training)),
        test=FolderLoader(test, **evaluation),
        val=val,
        train_eval=FolderLoader(train, **bn_training),
    )


def split(arguments: dict) -> dict:
    """A loader's ``arguments`` with its shard splitting every batch among the processes (the training loader's)."""
    return {**arguments, "shard": dataclasses.replace(arguments["shard"], split_batches=True)}


def _subset_index(labels: torch.Tensor, subset, seed: int, stream: Stream, what: str) -> torch.Tensor | None:
    """The sorted indices of the class-balanced ``subset`` of ``labels``; None when it asks for all of them."""
    count = subset_size(subset, len(labels), what)
    return None if count == len(labels) else balanced_indices(labels, count, generator(seed, stream))


def _balanced_subset(
    images: torch.Tensor, labels: torch.Tensor, subset, seed: int, stream: Stream, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    index = _subset_index(labels, subset, seed, stream, what)
    return (images, labels) if index is None else (images[index], labels[index])


def _balanced_files(files: ImageFiles, subset, seed: int, stream: Stream, what: str) -> ImageFiles:
    index = _subset_index(files.labels, subset, seed, stream, what)
    return files if index is None else files.subset(index)
