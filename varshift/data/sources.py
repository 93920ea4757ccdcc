"""Datasets from disk (or the network) into uint8 CPU tensors, every file checked before training.

Where each dataset is looked for (torchvision's layouts):

* CIFAR-10 / CIFAR-100: ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``, the pickled batches of
  the official release.
* MNIST / Fashion-MNIST: ``<root>/MNIST/raw`` / ``<root>/FashionMNIST/raw``, the four uncompressed IDX files.
* ImageNet: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``, never downloaded and not held in
  memory: :func:`load_dataset` lists its files (:mod:`varshift.data.folders`).

Only the default root ``data`` (``dataset.root`` left alone and ``VARSHIFT_DATA`` unset) falls back to other
copies when it does not hold the whole dataset: for Fashion-MNIST Debian's ``dataset-fashion-mnist`` package
(the gzipped IDX files in ``/usr/share/datasets/fashion-mnist``), then a download into ``data`` through
torchvision (``download=True``). A root chosen on purpose must hold every file of the dataset, else
:class:`DatasetNotFoundError`: a mistyped path never trains silently on another copy. A printed line says
which copy is used.

Checks (:mod:`varshift.data.formats`): every file's format, sizes and labels; with ``verify`` also CIFAR's
md5 sums, those of the official release (IDX files have none to compare with).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST
from torchvision.datasets.utils import check_integrity

from varshift.data.folders import FolderSplits, scan_image_folders
from varshift.data.formats import read_cifar_batches, read_idx_split
from varshift.data.info import check_dataset_name, dataset_info
from varshift.errors import DatasetCorruptedError, DatasetNotFoundError
from varshift.vocabulary import FOLDER_DATASETS

DEFAULT_ROOT = Path("data")  # conf/dataset/*.yaml: root: ${oc.env:VARSHIFT_DATA,data}
ROOT_VARIABLE = "VARSHIFT_DATA"


class Splits(NamedTuple):
    """A dataset's two splits as CPU tensors: images uint8 ``[N, C, H, W]``, labels int64 ``[N]``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


_TORCHVISION = {"cifar10": CIFAR10, "cifar100": CIFAR100, "mnist": MNIST, "fashion_mnist": FashionMNIST}
_IDX_SPLITS = {  # (images, labels) of each split, the same names for MNIST and Fashion-MNIST
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# How to put a copy in place by hand; {folder} is where the dataset is looked for in the root.
_MANUAL_COPIES = {
    "cifar10": "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into {folder.parent}",
    "cifar100": "extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz into {folder.parent}",
    "mnist": "put MNIST's four IDX files, gunzipped (train-images-idx3-ubyte, ...), in {folder}",
    "fashion_mnist": "put Fashion-MNIST's four IDX files (github.com/zalandoresearch/fashion-mnist), "
    "gunzipped, in {folder}",
}
# Folders of gzipped IDX files installed by system packages (Debian), searched after the default root.
SYSTEM_COPIES = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
_SYSTEM_PACKAGES = {"fashion_mnist": "apt-get install dataset-fashion-mnist (Debian, Ubuntu)"}


def load_dataset(
    name: str, root: str | Path, download: bool = False, verify: bool = True, num_classes: int | None = None
) -> Splits | FolderSplits:
    """Load dataset ``name`` (one of ``DATASET_NAMES``) from ``root``, or where the module docstring says.

    ``num_classes``: the labels allowed are ``0 .. num_classes - 1`` (default: the dataset's YAML).
    Raises :class:`DatasetNotFoundError` naming the root, the missing files and the places searched, and
    :class:`DatasetCorruptedError` naming a file that is damaged or fails CIFAR's md5 (``verify``).

    An image folder (ImageNet) gives its file lists (:class:`FolderSplits`), after checking its layout and, when
    ``num_classes`` is given, its number of class folders; ``download`` and ``verify`` do not apply to it.
    """
    check_dataset_name(name)
    if name in FOLDER_DATASETS:
        return scan_image_folders(name, root, num_classes)
    root = Path(root).expanduser()
    num_classes = dataset_info(name).num_classes if num_classes is None else num_classes
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, download, verify, num_classes)
    return _load_idx(name, root, download, num_classes)


def _load_cifar(name: str, root: Path, download: bool, verify: bool, num_classes: int) -> Splits:
    cls = _TORCHVISION[name]
    md5s = dict(cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])])
    files = _locate(name, root, root / cls.base_folder, list(md5s), download)
    if verify:
        _check_md5(name, files, md5s)
    by_name = {file.name: file for file in files}
    label_key = "fine_labels" if name == "cifar100" else "labels"
    train, test = (
        read_cifar_batches([by_name[file] for file, _ in batches], label_key, num_classes)
        for batches in (cls.train_list, cls.test_list)
    )
    return Splits(*train, *test)


def _load_idx(name: str, root: Path, download: bool, num_classes: int) -> Splits:
    names = [file for split in _IDX_SPLITS.values() for file in split]
    train_images, train_labels, test_images, test_labels = _locate(
        name, root, root / _TORCHVISION[name].__name__ / "raw", names, download
    )
    return Splits(*read_idx_split(train_images, train_labels, num_classes),
                  *read_idx_split(test_images, test_labels, num_classes))


def _is_default_root(root: Path) -> bool:
    """True for the root nobody chose: ``data``, with ``VARSHIFT_DATA`` unset."""
    return root == DEFAULT_ROOT and ROOT_VARIABLE not in os.environ


def _locate(name: str, root: Path, folder: Path, names: list[str], download: bool) -> list[Path]:
    """The paths of the files ``names`` of the copy to use, in the same order; prints which copy that is."""
    missing = [file for file in names if not (folder / file).is_file()]
    if missing and not _is_default_root(root):
        raise DatasetNotFoundError(_not_in_chosen_root(name, root, folder, missing))
    if missing:
        system_folders = SYSTEM_COPIES.get(name, ())
        for system in system_folders:
            gzipped = [system / f"{file}.gz" for file in names]
            if all(file.is_file() for file in gzipped):
                print(f"{name}: using Debian's copy in {system}")
                return gzipped
        searched = [folder, *system_folders]
        if not download:
            raise DatasetNotFoundError(_not_found(name, root, searched, download_error=None))
        print(f"{name}: downloading it into {root}")
        try:
            _TORCHVISION[name](root, train=True, download=True)
        except (OSError, RuntimeError) as err:
            raise DatasetNotFoundError(_not_found(name, root, searched, download_error=err)) from err
    print(f"{name}: using the copy in {folder}")
    return [folder / file for file in names]


def _check_md5(name: str, files: list[Path], md5s: dict[str, str]) -> None:
    failed = [file for file in files if not check_integrity(str(file), md5s[file.name])]
    if failed:
        folder = failed[0].parent
        raise DatasetCorruptedError(
            f"dataset {name!r}: {', '.join(file.name for file in failed)} in {folder} do not match the official "
            f"release's md5. Delete {folder} and download it again, or pass verify=False (dataset.verify=false) "
            "to read them unchecked"
        )


def _not_in_chosen_root(name: str, root: Path, folder: Path, missing: list[str]) -> str:
    problem = ("is a file, not a folder" if root.is_file() else "does not exist" if not root.is_dir()
               else "does not hold the whole dataset")
    return (
        f"dataset {name!r}: the data root {root} (chosen by dataset.root or {ROOT_VARIABLE}) {problem}: "
        f"{', '.join(missing)} not found in {folder}. A chosen root is the only place searched: correct it, "
        f"{_MANUAL_COPIES[name].format(folder=folder)}, or leave the root at its default {str(DEFAULT_ROOT)!r} "
        f"(unset {ROOT_VARIABLE}) to use " + ("Debian's copy or " if name in SYSTEM_COPIES else "") + "a download"
    )


def _not_found(name: str, root: Path, searched: list[Path], download_error: BaseException | None) -> str:
    cause = (
        f"could not be downloaded ({type(download_error).__name__}: {download_error})"
        if download_error is not None
        else "download is off"
    )
    ways = [
        f"download it: download=True (dataset.download=true) with internet access saves it under {root}",
        _MANUAL_COPIES[name].format(folder=searched[0]),
        f"point root (dataset.root, or the {ROOT_VARIABLE} environment variable) at a folder that holds it",
    ]
    if name in _SYSTEM_PACKAGES:
        ways.append(f"install the system package: {_SYSTEM_PACKAGES[name]}")
    return "\n".join(
        [f"dataset {name!r} not found ({cause}). Searched:"]
        + [f"  {path}" for path in searched]
        + ["Ways to get it:"]
        + [f"  - {way}" for way in ways]
    )
