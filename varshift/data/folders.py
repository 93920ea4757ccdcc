"""Image-folder datasets (ImageNet's layout): the list of every image file and its class, checked before training.

The layout, the one torchvision's ``ImageFolder`` reads::

    <root>/train/<class>/*.JPEG      the training images, one folder per class
    <root>/val/<class>/*.JPEG        the test images, sorted into the same class folders

Classes are numbered in the sorted order of their folder names (ImageNet's WordNet ids), as ``ImageFolder`` does.
A root that is missing or does not have this layout raises :class:`DatasetNotFoundError` in one line naming the
layout; a class count other than ``num_classes`` raises ValueError. The files themselves are decoded, and so
checked, while training (:mod:`varshift.data.folder_loader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torchvision.datasets.folder import find_classes, make_dataset

from varshift.checks import refuse
from varshift.errors import DatasetNotFoundError

SPLITS = ("train", "val")  # the training and the test images
LAYOUT = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG, the same class folders in both"
# What torchvision's decode_image reads: ImageNet's JPEGs (and the one PNG among them, named .JPEG), PNG, WebP.
EXTENSIONS = (".jpeg", ".jpg", ".png", ".webp")


@dataclass(frozen=True)
class ImageFiles:
    """Image files and their labels. The paths are one numpy array of bytes, not a list of Python strings: the
    worker processes that decode them share its memory instead of copying every string they touch."""

    paths: np.ndarray  # bytes, one file path per image
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageFiles:
        """The images at ``index`` (a long tensor), in that order."""
        return ImageFiles(self.paths[index.numpy()], self.labels[index])


class FolderSplits(NamedTuple):
    """A folder dataset: its class names (label ``i`` is ``classes[i]``), training and test images."""

    classes: tuple[str, ...]
    train: ImageFiles
    test: ImageFiles


def not_the_layout(name: str, root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"dataset {name!r}: {root} does not hold {LAYOUT} ({problem}); point dataset.root "
                                "at the folder that holds train/ and val/")


def scan_image_folders(name: str, root: str | Path, num_classes: int | None = None) -> FolderSplits:
    """Every image of ``root``'s ``train`` and ``val`` folders with its label, after checking the layout and, when
    ``num_classes`` is given, that there are that many class folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise not_the_layout(name, root, "it is not a folder")
    classes = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise not_the_layout(name, root, f"it has no {split}/ folder")
        try:
            classes[split] = tuple(find_classes(str(folder))[0])
        except FileNotFoundError:
            raise not_the_layout(name, root, f"{split}/ holds no class folder") from None
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        differ = "; ".join(f"only in {split}/: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                           for split, names in (("train", only_train), ("val", only_val)) if names)
        raise not_the_layout(name, root, f"train/ has {len(classes['train'])} class folders and val/ "
                                         f"{len(classes['val'])}, not the same ones ({differ})")
    names = classes["train"]
    if num_classes is not None and len(names) != num_classes:
        refuse("dataset.num_classes", num_classes, f"{len(names)}, the number of class folders in {root / 'train'} "
                                                   "(set dataset.num_classes to the classes you give)")
    index = {cls: label for label, cls in enumerate(names)}
    return FolderSplits(names, *(_image_files(name, root, split, index) for split in SPLITS))


def _image_files(name: str, root: Path, split: str, class_index: dict[str, int]) -> ImageFiles:
    samples = make_dataset(str(root / split), class_index, extensions=EXTENSIONS, allow_empty=True)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    counts = torch.bincount(labels, minlength=len(class_index))
    empty = [cls for cls, label in class_index.items() if counts[label] == 0]
    if empty:
        raise not_the_layout(name, root, f"{len(empty)} class folder(s) of {split}/ hold no image "
                                         f"({', '.join(EXTENSIONS)}), the first is {empty[0]}")
    paths = np.array([path.encode() for path, _ in samples], dtype=np.bytes_)
    return ImageFiles(paths, labels)
