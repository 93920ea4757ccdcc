"""Class-balanced subsets and held-out splits, chosen with a seeded generator."""

from __future__ import annotations

import torch


def subset_size(subset: float | int | None, total: int, what: str = "subset") -> int:
    """Number of items that ``subset`` asks for out of ``total``.

    ``subset`` is None (all), a fraction (float) in ``(0, 1]`` or a whole count in ``[1, total]``
    (an int, or a whole float above 1 such as ``1e4``).
    """
    if subset is None:
        return total
    if isinstance(subset, float) and 0.0 < subset <= 1.0:
        count = round(subset * total)
        if count < 1:
            raise ValueError(f"{what}={subset!r} selects no item out of {total}; use a larger fraction")
        return count
    whole = isinstance(subset, int) or (isinstance(subset, float) and subset.is_integer())
    if whole and not isinstance(subset, bool) and 1 <= subset <= total:
        return int(subset)
    raise ValueError(
        f"{what}={subset!r} is not allowed: give a fraction (float) in (0, 1] "
        f"or a whole count in [1, {total}]"
    )


def class_quotas(sizes: list[int], count: int, generator: torch.Generator) -> list[int]:
    """How many items to take from each class so that ``count`` items are as class-balanced as possible.

    Classes smaller than their fair share give all they have; the others give equal numbers, the
    remainder going one each to classes picked at random.
    """
    if not 0 <= count <= sum(sizes):
        raise ValueError(f"count={count} must be in [0, {sum(sizes)}]")
    quotas = [0] * len(sizes)
    open_classes = sorted(range(len(sizes)), key=sizes.__getitem__)
    remaining = count
    while open_classes and sizes[open_classes[0]] <= remaining // len(open_classes):
        smallest = open_classes.pop(0)
        quotas[smallest] = sizes[smallest]
        remaining -= sizes[smallest]
    if open_classes:
        level, extra = divmod(remaining, len(open_classes))
        lucky = set(torch.randperm(len(open_classes), generator=generator)[:extra].tolist())
        for position, cls in enumerate(open_classes):
            quotas[cls] = level + (position in lucky)
    return quotas


def balanced_indices(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``count`` items of ``labels``, class-balanced, drawn at random within each class."""
    classes, sizes = labels.unique(return_counts=True)
    quotas = class_quotas(sizes.tolist(), count, generator)
    chosen = []
    for cls, quota in zip(classes.tolist(), quotas, strict=True):
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def held_out_split(
    labels: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_out)`` sorted indices; ``held_out`` is a class-balanced ``fraction`` in ``(0, 1)``."""
    total = len(labels)
    count = round(fraction * total) if isinstance(fraction, float) and 0.0 < fraction < 1.0 else 0
    if not 1 <= count < total:
        raise ValueError(
            f"val_split={fraction!r} is not allowed for {total} training images: give a fraction in (0, 1) "
            "that holds out at least one image and keeps at least one"
        )
    held_out = balanced_indices(labels, count, generator)
    kept = torch.ones(total, dtype=torch.bool)
    kept[held_out] = False
    return kept.nonzero().flatten(), held_out
