"""Independent random streams derived from one run seed, so each draw depends only on its keys."""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch

from varshift.checks import whole_number


class Stream(IntEnum):
    """What a random stream is for; part of its key, so streams never coincide."""

    EPOCH = 0
    TRAIN_SUBSET = 1
    VAL_SPLIT = 2
    TEST_SUBSET = 3
    AUGMENT = 4  # keys: epoch, image index (the augmentation of one image of an image folder)
    PROCESS = 5  # keys: rank (the dropout noise of a data-parallel run's process of rank > 0)


def derived_seed(seed: int, stream: Stream, *keys: int) -> int:
    """A 64-bit seed derived from ``(seed, stream, *keys)`` alone."""
    entropy = [whole_number("seed", seed, 0), int(stream), *keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def generator(seed: int, stream: Stream, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, stream, *keys)`` alone (the same on every device)."""
    return torch.Generator().manual_seed(derived_seed(seed, stream, *keys))
