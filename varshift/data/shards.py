"""Which part of a pass over the data each of several processes reads, so that together they read it once.

Every process draws the same epoch's order (from the seed and the epoch alone) and takes its part of it, so the
data a run sees does not depend on how many processes read it or who launched them:

* ``split_batches`` (training): each batch of the epoch is cut into ``processes`` equal contiguous slices, and
  process ``rank`` reads slice ``rank``. Averaging the processes' gradients (DDP) then gives the gradient of the
  batch's mean loss, as one process computes it, and synchronised BN sees the statistics of the whole batch. A last
  batch that does not split into equal slices (of two images or more, where BN trains) is dropped.
* otherwise (the passes of the variance probe, of BN recalibration, of evaluation): whole batches, process
  ``rank`` reading batches ``rank``, ``rank + processes``, ...: a batch's own statistics (the probe's per-batch
  variances) are then those one process computes, and the processes add up what they measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from varshift.checks import refuse, require, whole_number


@dataclass(frozen=True)
class Shard:
    """The part of each pass that process ``rank`` of ``processes`` reads (see the module's docstring)."""

    rank: int = 0
    processes: int = 1
    split_batches: bool = False

    def __post_init__(self):
        whole_number("processes", self.processes, 1)
        require(0 <= whole_number("rank", self.rank, 0) < self.processes, "rank", self.rank,
                f"a whole number below processes ({self.processes})")

    def check_batch_size(self, batch_size: int, min_images: int) -> None:
        """A batch split among the processes needs an equal slice of at least ``min_images`` for each."""
        if self.split_batches and not self.keeps(batch_size, min_images):
            refuse("batch_size", batch_size,
                   f"a multiple of the {self.processes} processes that train together, at least {min_images} "
                   "images each (each takes an equal slice of every batch)")

    def keeps(self, size: int, min_images: int) -> bool:
        """Whether a batch of ``size`` images gives this process at least ``min_images`` (in equal slices)."""
        if not self.split_batches:
            return size >= min_images
        return size % self.processes == 0 and size // self.processes >= min_images

    def batches(self, count: int) -> range:
        """The indices of the batches, among the pass's first ``count``, that this process reads."""
        return range(count) if self.split_batches else range(self.rank, count, self.processes)

    def positions(self, start: int, size: int) -> slice:
        """The positions in the epoch's order that this process reads of the batch at ``start`` with ``size``
        images."""
        if not self.split_batches:
            return slice(start, start + size)
        share = size // self.processes
        return slice(start + self.rank * share, start + (self.rank + 1) * share)
