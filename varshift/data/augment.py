"""Batched augmentation and normalisation of uint8 images, on whatever device they live."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def crop_and_flip(
    images: torch.Tensor, padding: int, offsets: torch.Tensor | None, flips: torch.Tensor | None
) -> torch.Tensor:
    """Random crops of the zero-padded images, then horizontal mirrors, in one gather.

    ``images``: uint8 ``[B, C, H, W]``. ``offsets``: long ``[2, B]``, the top-left corner (row, column)
    of each ``H x W`` crop in the image padded by ``padding`` zeros per side, each in ``[0, 2 * padding]``,
    or None for no crop (``padding`` 0).
    ``flips``: bool ``[B]`` (mirror the crop) or None. Same result as torchvision's
    ``RandomCrop(size, padding)`` followed by ``RandomHorizontalFlip`` with these draws.
    """
    if padding and offsets is None:
        raise ValueError(f"padding={padding} needs crop offsets; offsets=None is for padding 0")
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4) if padding else images
    padded_width = width + 2 * padding
    rows = torch.arange(height, device=images.device).expand(batch, height)
    cols = torch.arange(width, device=images.device).expand(batch, width)
    if offsets is not None:
        rows, cols = rows + offsets[0, :, None], cols + offsets[1, :, None]
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, height * width)
    out = padded.flatten(2).gather(2, index.expand(batch, channels, height * width))
    return out.view(batch, channels, height, width)


def normaliser(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each ``[1, C, 1, 1]``: ``uint8 * scale + shift == (x / 255 - mean) / std``."""
    mean64 = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std64 = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    scale, shift = 1.0 / (255.0 * std64), -mean64 / std64
    return scale.to(device, torch.float32), shift.to(device, torch.float32)


def normalise(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32, normalised by the channel mean and std."""
    return images.float().mul_(scale).add_(shift)
