"""Readers of the datasets' on-disk formats that check every file before training starts.

* IDX (MNIST, Fashion-MNIST), plain or gzipped: the magic number (``0x00000803`` images, ``0x00000801``
  labels, unsigned bytes), a size that matches the dimensions in the header (no truncated, empty or
  padded file), as many labels as images, labels below the number of classes.
* CIFAR's pickled batches: a dict that unpickles, with ``data`` (uint8 rows of 3 x 32 x 32 values) and
  its labels entry, one label per row, each below the number of classes.

Every problem raises :class:`DatasetCorruptedError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from varshift.errors import DatasetCorruptedError

IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension
IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
CIFAR_IMAGE = (3, 32, 32)


def corrupted(file: Path, problem: str) -> DatasetCorruptedError:
    return DatasetCorruptedError(f"{file}: {problem}; replace it with a good copy")


def check_labels(labels: torch.Tensor, num_classes: int, file: Path) -> None:
    """Every label in ``[0, num_classes)``."""
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        first = int(bad[0])
        raise corrupted(file, f"{len(bad)} labels are outside 0..{num_classes - 1} ({num_classes} classes), "
                              f"the first is {int(labels[first])} at index {first}")


def file_bytes(file: Path) -> bytes:
    """The content of ``file``, gunzipped when its name ends in ``.gz``."""
    data = file.read_bytes()
    if file.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # a bad header, a cut-off stream, a bad block
        raise corrupted(file, f"is not a complete gzip file ({type(err).__name__}: {err})") from err


def idx_tensor(data: bytes, magic: int, file: Path) -> torch.Tensor:
    """The uint8 array an IDX file holds, shaped by its header, after checking the magic and the size."""
    what = "labels" if magic == IDX_LABELS else "images"
    ndim = magic & 0xFF
    if len(data) < 4:
        raise corrupted(file, "is empty" if not data else f"is truncated: {len(data)} bytes, no IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise corrupted(file, f"starts with 0x{found:08x}, not the magic number 0x{magic:08x} of IDX {what} "
                              f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupted(file, f"is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has bytes beyond its data"
        shape = " x ".join(map(str, dims))
        raise corrupted(file, f"{problem}: {len(data)} bytes, its header ({shape} {what}) says {expected}")
    if dims[0] == 0:
        raise corrupted(file, f"holds no {what}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(dims)


def read_idx_split(images_file: Path, labels_file: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, 1, H, W]`` and labels int64 ``[N]`` from a pair of IDX files (``.gz`` or not)."""
    images = idx_tensor(file_bytes(images_file), IDX_IMAGES, images_file)
    labels = idx_tensor(file_bytes(labels_file), IDX_LABELS, labels_file).long()
    if len(labels) != len(images):
        raise corrupted(labels_file, f"holds {len(labels)} labels for the {len(images)} images of {images_file}")
    check_labels(labels, num_classes, labels_file)
    return images.unsqueeze(1), labels


def read_cifar_batch(file: Path, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]`` from one of CIFAR's pickled batches."""
    try:
        with open(file, "rb") as stream:
            entry = pickle.load(stream, encoding="latin1")  # the official batches were pickled by Python 2
    except Exception as err:  # a damaged pickle fails with any of a dozen exception types
        raise corrupted(file, f"cannot be unpickled ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict):
        raise corrupted(file, f"holds a {type(entry).__name__}, not a CIFAR batch (a dict)")
    missing = [key for key in ("data", label_key) if key not in entry]
    if missing:
        raise corrupted(file, f"lacks the entries {', '.join(map(repr, missing))} of a CIFAR batch")
    data, row = entry["data"], math.prod(CIFAR_IMAGE)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == row):
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupted(file, f"'data' is {found}, not uint8 rows of {row} values (3 x 32 x 32)")
    try:
        labels = np.asarray(entry[label_key])
    except ValueError as err:  # ragged nesting
        raise corrupted(file, f"{label_key!r} is not a list of integers ({err})") from err
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise corrupted(file, f"{label_key!r} is not a list of integers ({labels.dtype} {list(labels.shape)})")
    if len(labels) != len(data):
        raise corrupted(file, f"holds {len(labels)} labels ({label_key!r}) for {len(data)} images")
    labels = torch.from_numpy(labels.astype(np.int64))
    check_labels(labels, num_classes, file)
    return torch.from_numpy(data.reshape(-1, *CIFAR_IMAGE)), labels


def read_cifar_batches(files: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batches of ``files``, checked one by one, concatenated in order."""
    images, labels = zip(*(read_cifar_batch(file, label_key, num_classes) for file in files), strict=True)
    return torch.cat(images), torch.cat(labels)
