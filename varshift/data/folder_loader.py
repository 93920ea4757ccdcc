"""Loaders of image-folder datasets (ImageNet): files decoded and augmented by worker processes, batches on the device.

:class:`FolderLoader` has :class:`~varshift.data.DeviceLoader`'s interface (``set_epoch``, ``num_samples``,
``len``, ``(x, y)`` batches on the device in the requested memory format), so the trainer, the variance probe and
BN recalibration use either without knowing which.

* Decoding: ``torchvision.io.decode_image`` into uint8 tensors and torchvision's tensor resize (antialiased),
  in ``workers`` processes of a ``torch.utils.data.DataLoader``: on ImageNet-sized JPEGs about 1.4x faster than
  PIL's decoder and resize (``benchmarks/imagenet_loader.py`` compares it with ``ImageFolder`` and PIL
  transforms). The uint8 batch goes to the device, pinned on CUDA, and is normalised there: a quarter of the
  bytes of a float batch cross the bus.
* Training view (torchvision's classification reference, the one behind the networks of Table 5): a random crop
  of 8% to 100% of the image's area with an aspect ratio in [3/4, 4/3], resized to ``size`` x ``size``, mirrored
  with probability 1/2 (``flip``).
* Test view (the paper's protocol): the shorter side resized to ``resize``, the centre ``size`` x ``size`` crop.

Reproducible whatever decodes it: an epoch's order is drawn from ``(seed, epoch)`` in one place
(:meth:`EpochBatches.order`), and each image's crop and flip from ``(seed, epoch, image index)`` alone, so the
number of workers, the launcher and a resumption change no batch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from varshift.checks import whole_number
from varshift.data.augment import normalise, normaliser
from varshift.data.device_loader import UNSHARDED, PassBatches
from varshift.data.folders import ImageFiles
from varshift.data.seeds import Stream, derived_seed, generator
from varshift.data.shards import Shard
from varshift.errors import DatasetCorruptedError

CROP_AREA = (0.08, 1.0)  # RandomResizedCrop's defaults, those of torchvision's classification reference
CROP_ASPECT = (3 / 4, 4 / 3)
PREFETCH_BATCHES = 4  # per worker


def default_workers(processes: int = 1) -> int:
    """One decoding process per CPU core this process may run on; when ``processes`` training processes share this
    machine, per core of its share: SLURM's CPUs per task in a SLURM job, else the cores divided among them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if processes == 1:
        return cores
    share = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or cores // processes
    return max(1, min(cores, share))


class FolderImages(Dataset):
    """One image per key ``(epoch, index)``: uint8 ``[3, size, size]``, its label, and ``""`` or, for a file that
    cannot be read or decoded, what is wrong with it (raised by the loader in the training process, in one line)."""

    def __init__(self, files: ImageFiles, *, size: int, resize: int, augment: bool, flip: bool, seed: int):
        self.files, self.size, self.resize = files, size, resize
        self.augment, self.flip, self.seed = augment, flip, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, str]:
        epoch, index = key
        label = int(self.files.labels[index])
        path = self.files.paths[index].decode()
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders for TorchCodec's; they are still the fastest here
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as error:
            problem = f"{path}: cannot be read as an image ({type(error).__name__}: {error})"
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), label, problem
        view = self.training_view(image, epoch, index) if self.augment else self.test_view(image)
        return view, label, ""

    def training_view(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator: seed it, then restore
            torch.default_generator.manual_seed(derived_seed(self.seed, Stream.AUGMENT, epoch, index))
            top, left, height, width = RandomResizedCrop.get_params(image, list(CROP_AREA), list(CROP_ASPECT))
            mirror = self.flip and bool(torch.rand(()) < 0.5)
        view = F.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        return F.horizontal_flip(view) if mirror else view

    def test_view(self, image: torch.Tensor) -> torch.Tensor:
        return F.center_crop(F.resize(image, [self.resize], antialias=True), [self.size, self.size])


class EpochBatches:
    """The keys ``(epoch, index)`` of each batch of an epoch: the epoch's order cut into batches (a batch sampler), of
    which a ``shard`` reads its part, in passes cut to the epoch's first batches or not (:class:`PassBatches`).

    ``order`` is the one place an epoch's order is drawn: a permutation from ``(seed, epoch)`` when shuffling (the
    permutation :class:`~varshift.data.DeviceLoader` draws for as many images), else the images in order.
    """

    def __init__(self, images: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool,
                 drop_single_last: bool, shard: Shard = UNSHARDED):
        self.images, self.shuffle, self.seed = images, shuffle, seed
        self.passes = PassBatches(images, batch_size, drop_last, drop_single_last, shard)
        self.epoch = 0

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.images)
        return torch.randperm(self.images, generator=generator(self.seed, Stream.EPOCH, epoch))

    def __len__(self) -> int:
        return len(self.passes.indices())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = self.epoch, self.order(self.epoch).tolist()
        for batch in self.passes.indices():
            yield [(epoch, index) for index in order[self.passes.positions(batch)]]


class FolderLoader:
    """Iterate ``(x, y)`` batches of an image folder's ``files`` on ``device``: ``x`` float32 ``[B, 3, size, size]``
    normalised by ``mean`` and ``std`` in ``memory_format``, ``y`` int64 ``[B]``.

    ``augment``: the training view (random-resized crop, and a flip when ``flip``), else the test view (``resize``,
    centre crop). ``shuffle``, ``seed``, ``drop_last``, ``drop_single_last``, ``shard``, :meth:`set_epoch` and
    :meth:`set_limit` as for :class:`~varshift.data.DeviceLoader`. ``workers``: decoding processes (None: one per CPU
    core; 0: in this process); they start with each pass and end with it.
    """

    def __init__(self, files: ImageFiles, *, batch_size: int, size: int, resize: int, mean: Sequence[float],
                 std: Sequence[float], augment: bool = False, flip: bool = False, shuffle: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False, drop_single_last: bool = False,
                 memory_format: torch.memory_format = torch.contiguous_format, workers: int | None = None,
                 shard: Shard = UNSHARDED):
        if len(files) == 0:
            raise ValueError("files is empty; a loader needs at least one image")
        batch_size = whole_number("batch_size", batch_size, 1)
        self.device = torch.device(device)
        self.memory_format = memory_format
        self.batches = EpochBatches(len(files), batch_size, shuffle=bool(shuffle), seed=whole_number("seed", seed, 0),
                                    drop_last=bool(drop_last), drop_single_last=bool(drop_single_last), shard=shard)
        images = FolderImages(files, size=whole_number("size", size), resize=whole_number("resize", resize, size),
                              augment=bool(augment), flip=bool(flip), seed=seed)
        workers = default_workers() if workers is None else whole_number("workers", workers, 0)
        # the DataLoader draws a seed for its workers at every pass: from a generator of its own, not from torch's
        # global one, which gives the trainer its dropout masks (the images' draws never use it)
        self.loader = DataLoader(images, batch_sampler=self.batches, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                                 prefetch_factor=PREFETCH_BATCHES if workers else None)
        self._scale, self._shift = normaliser(mean, std, self.device)

    @property
    def num_samples(self) -> int:
        return self.batches.images

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.batches.epoch = whole_number("epoch", epoch, 0)

    def set_limit(self, limit: int | None) -> None:
        """Passes over only the epoch's first ``limit`` batches (None: all of them)."""
        self.batches.passes.set_limit(limit)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, problems in self.loader:
            problem = next(filter(None, problems), None)
            if problem is not None:
                raise DatasetCorruptedError(f"{problem}; replace the file with a good copy or delete it")
            x = images.to(self.device, non_blocking=True)
            yield (normalise(x, self._scale, self._shift).contiguous(memory_format=self.memory_format),
                   labels.to(self.device, non_blocking=True))
