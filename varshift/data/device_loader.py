"""A loader that keeps a whole dataset on the training device and augments it there, batched."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from varshift.checks import whole_number
from varshift.data.augment import crop_and_flip, normalise, normaliser
from varshift.data.seeds import Stream, generator
from varshift.data.shards import Shard

UNSHARDED = Shard()


def batch_count(images: int, batch_size: int, drop_last: bool, drop_single_last: bool,
                shard: Shard = UNSHARDED) -> int:
    """Batches of ``batch_size`` over ``images``, without a smaller last batch (``drop_last``), a last batch of one
    image (``drop_single_last``) or, for a ``shard`` that splits batches, a last batch that gives some process fewer
    images than the others (or one image, with ``drop_single_last``)."""
    full, rest = divmod(images, batch_size)
    kept = rest > 0 and not drop_last and shard.keeps(rest, 2 if drop_single_last else 1)
    return full + int(kept)


def require_a_batch(images: int, batch_size: int, drop_last: bool, drop_single_last: bool,
                    shard: Shard = UNSHARDED) -> None:
    """ValueError when the images give no batch, or (``shard``) a batch that its processes cannot split."""
    shard.check_batch_size(batch_size, 2 if drop_single_last else 1)
    if batch_count(images, batch_size, drop_last, drop_single_last, shard) == 0:
        dropped = "a last batch smaller than that" if drop_last else "a last batch of one image"
        raise ValueError(f"{images} image(s) in batches of {batch_size} give no batch once {dropped} "
                         "is dropped; use more images or a smaller batch_size")


class PassBatches:
    """The batches a loader yields in a pass: the epoch's batches, or the first ``limit`` of them (:meth:`set_limit`),
    of which a ``shard`` reads its part (:mod:`varshift.data.shards`)."""

    def __init__(self, images: int, batch_size: int, drop_last: bool, drop_single_last: bool, shard: Shard):
        require_a_batch(images, batch_size, drop_last, drop_single_last, shard)
        self.images, self.batch_size, self.shard = images, batch_size, shard
        self.count = batch_count(images, batch_size, drop_last, drop_single_last, shard)
        self.limit: int | None = None

    def set_limit(self, limit: int | None) -> None:
        self.limit = None if limit is None else whole_number("limit", limit, 1)

    def indices(self) -> range:
        """The indices (in the epoch) of the batches this process reads in the pass."""
        return self.shard.batches(self.count if self.limit is None else min(self.count, self.limit))

    def positions(self, batch: int) -> slice:
        """The positions in the epoch's order of the images of batch ``batch`` that this process reads."""
        start = batch * self.batch_size
        return self.shard.positions(start, min(self.batch_size, self.images - start))


class DeviceLoader:
    """Iterate ``(x, y)`` batches of uint8 images held on ``device``.

    The images are moved to ``device`` once (a tensor already there is shared, not copied). Each batch
    is gathered, randomly cropped from the image zero-padded by ``crop_padding`` pixels, mirrored with
    probability 1/2 when ``flip``, and normalised by ``mean`` and ``std`` (per channel, for pixel values
    in [0, 1]), all on ``device`` and for the whole batch at once. ``x`` is float32 ``[B, C, H, W]``,
    ``y`` int64 ``[B]``.

    The order (a fresh permutation when ``shuffle``) and the augmentation depend only on ``seed`` and
    the epoch given to :meth:`set_epoch`, and are drawn on the CPU: the same seed and epoch give the same
    batches on every device, and a run resumed at epoch ``e`` sees what an uninterrupted run sees. Call
    :meth:`set_epoch` before each epoch; iterating twice without it repeats the epoch.

    ``memory_format`` is the layout of ``x`` (``torch.channels_last`` for a network trained in that format).

    ``drop_last`` drops a last batch smaller than ``batch_size``; ``drop_single_last`` drops it only when it
    holds exactly one image (with ``batch_size`` > 1), for passes that run BN in training mode: BN cannot
    take batch statistics of one image (``Expected more than 1 value per channel when training``), and a
    variance probe cannot take an unbiased variance of one.

    ``shard``: the part of each pass this process reads when several processes read the data together
    (:mod:`varshift.data.shards`); :meth:`set_limit` cuts the passes to the epoch's first batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        flip: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        drop_single_last: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        shard: Shard = UNSHARDED,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be int64 [{images.shape[0]}] (one per image), "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        if len(images) == 0:
            raise ValueError("images is empty; a loader needs at least one image")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"mean {tuple(mean)} and std {tuple(std)} need one value per channel ({channels}), std > 0"
            )
        self.batch_size = whole_number("batch_size", batch_size, 1)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.crop_padding = whole_number("crop_padding", crop_padding, 0)
        self.flip = bool(flip)
        self.shuffle = bool(shuffle)
        self.seed = whole_number("seed", seed, 0)
        self.batches = PassBatches(len(images), self.batch_size, bool(drop_last), bool(drop_single_last), shard)
        self.memory_format = memory_format
        self.epoch = 0
        self._scale, self._shift = normaliser(mean, std, self.device)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return len(self.batches.indices())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = whole_number("epoch", epoch, 0)

    def set_limit(self, limit: int | None) -> None:
        """Passes over only the epoch's first ``limit`` batches (None: all of them)."""
        self.batches.set_limit(limit)

    def _draws(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """This epoch's order, crop offsets ``[2, N]`` and flips ``[N]`` (None where unused), on device."""
        rng = generator(self.seed, Stream.EPOCH, self.epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=rng) if self.shuffle else None
        offsets = None
        if self.crop_padding:
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (2, n), generator=rng)
        flips = torch.rand(n, generator=rng) < 0.5 if self.flip else None
        return tuple(None if t is None else t.to(self.device) for t in (order, offsets, flips))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self._draws()
        for batch in self.batches.indices():
            span = self.batches.positions(batch)
            index = span if order is None else order[span]
            x, y = self.images[index], self.labels[index]
            if offsets is not None or flips is not None:
                x = crop_and_flip(
                    x,
                    self.crop_padding,
                    None if offsets is None else offsets[:, span],
                    None if flips is None else flips[span],
                )
            yield normalise(x, self._scale, self._shift).contiguous(memory_format=self.memory_format), y
