"""Datasets from disk (or the network) into uint8 CPU tensors, through torchvision's own parsers.

Where each dataset is looked for, in order:

* CIFAR-10 / CIFAR-100: ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python`` (torchvision's
  layout: the pickled batches of the official release), then a download into ``root``.
* MNIST / Fashion-MNIST: ``<root>/MNIST/raw`` / ``<root>/FashionMNIST/raw`` (torchvision's layout: the
  uncompressed IDX files); for Fashion-MNIST then Debian's ``dataset-fashion-mnist`` package (the gzipped
  IDX files in ``/usr/share/datasets/fashion-mnist``, unpacked to a temporary copy of torchvision's layout
  so they go through the same parser); then a download into ``root``.

CIFAR's integrity check: torchvision compares the md5 of every file with the official release's. With
``verify=False`` the files are read through the same torchvision classes with their md5 entries set to
None, which torchvision's ``check_integrity`` defines as "the file exists": for a copy that is known to be
good, or a dataset written in the same format (varshift's tests do this). torchvision checks no md5 when
it reads IDX files, so ``verify`` changes nothing for MNIST and Fashion-MNIST.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST

from varshift.data.info import check_dataset_name


class Splits(NamedTuple):
    """A dataset's two splits as CPU tensors: images uint8 ``[N, C, H, W]``, labels int64 ``[N]``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the places searched and could not be downloaded."""


class DatasetCorruptedError(OSError):
    """A dataset's files are there but do not match the official release's checksums."""


def _without_checksums(cls: type[CIFAR10]) -> type[CIFAR10]:
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[file, None] for file, _ in cls.train_list],
            "test_list": [[file, None] for file, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


_CIFAR = {"cifar10": CIFAR10, "cifar100": CIFAR100}
_CIFAR_UNVERIFIED = {name: _without_checksums(cls) for name, cls in _CIFAR.items()}
_IDX = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
# How to put a copy in place by hand; {folder} is the first place searched.
_MANUAL_COPIES = {
    "cifar10": "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into {folder.parent}",
    "cifar100": "extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz into {folder.parent}",
    "mnist": "put MNIST's four IDX files, gunzipped (train-images-idx3-ubyte, ...), in {folder}",
    "fashion_mnist": "put Fashion-MNIST's four IDX files (github.com/zalandoresearch/fashion-mnist), "
    "gunzipped, in {folder}",
}
# Folders of gzipped IDX files installed by system packages (Debian), searched after the data root.
SYSTEM_COPIES = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
_SYSTEM_PACKAGES = {"fashion_mnist": "apt-get install dataset-fashion-mnist (Debian, Ubuntu)"}


def load_dataset(name: str, root: str | Path, download: bool = False, verify: bool = True) -> Splits:
    """Load dataset ``name`` (one of ``DATASET_NAMES``) from ``root``, downloading it there if allowed.

    Raises :class:`DatasetNotFoundError` naming the dataset, the places searched and the ways to get it
    when it is nowhere and cannot be downloaded, and :class:`DatasetCorruptedError` when CIFAR files fail
    the checksum (``verify=True``).
    """
    check_dataset_name(name)
    root = Path(root).expanduser()
    if name in _CIFAR:
        return _load_cifar(name, root, download, verify)
    return _load_idx(name, root, download)


def _load_cifar(name: str, root: Path, download: bool, verify: bool) -> Splits:
    cls = _CIFAR[name] if verify else _CIFAR_UNVERIFIED[name]
    folder = root / cls.base_folder
    files = [file for file, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    present = all((folder / file).is_file() for file in files)
    if not present and not download:
        raise DatasetNotFoundError(_not_found(name, root, [folder], download_error=None))
    try:
        train = cls(root, train=True, download=not present)
    except (OSError, RuntimeError) as err:
        if not present:
            raise DatasetNotFoundError(_not_found(name, root, [folder], download_error=err)) from err
        if isinstance(err, RuntimeError):  # torchvision's answer to a failed md5
            raise DatasetCorruptedError(
                f"dataset {name!r}: the files in {folder} do not match the official release's md5 ({err}). "
                f"Delete {folder} and download it again, or pass verify=False (dataset.verify=false) "
                "to read them unchecked"
            ) from err
        raise
    test = cls(root, train=False)
    return Splits(*_cifar_tensors(train), *_cifar_tensors(test))


def _cifar_tensors(dataset: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # torchvision keeps NHWC
    return images, torch.tensor(dataset.targets, dtype=torch.int64)


def _load_idx(name: str, root: Path, download: bool) -> Splits:
    cls = _IDX[name]
    gz_files = [file for file, _ in cls.resources]
    raw = root / cls.__name__ / "raw"
    if all((raw / file.removesuffix(".gz")).is_file() for file in gz_files):
        return _idx_splits(cls, root)
    system_folders = SYSTEM_COPIES.get(name, ())
    for folder in system_folders:
        if all((folder / file).is_file() for file in gz_files):
            return _idx_splits_from_gzipped(cls, folder)
    searched = [raw, *system_folders]
    if not download:
        raise DatasetNotFoundError(_not_found(name, root, searched, download_error=None))
    try:
        cls(root, train=True, download=True)
    except (OSError, RuntimeError) as err:
        raise DatasetNotFoundError(_not_found(name, root, searched, download_error=err)) from err
    return _idx_splits(cls, root)


def _idx_splits(cls: type[MNIST], root: Path) -> Splits:
    train, test = cls(root, train=True), cls(root, train=False)
    return Splits(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets)


def _idx_splits_from_gzipped(cls: type[MNIST], folder: Path) -> Splits:
    with tempfile.TemporaryDirectory(prefix="varshift-idx-") as tmp:
        raw = Path(tmp, cls.__name__, "raw")
        raw.mkdir(parents=True)
        for file, _ in cls.resources:
            with gzip.open(folder / file, "rb") as src, open(raw / file.removesuffix(".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        return _idx_splits(cls, Path(tmp))


def _not_found(name: str, root: Path, searched: list[Path], download_error: BaseException | None) -> str:
    cause = (
        f"could not be downloaded ({type(download_error).__name__}: {download_error})"
        if download_error is not None
        else "download is off"
    )
    ways = [
        f"download it: download=True (dataset.download=true) with internet access saves it under {root}",
        _MANUAL_COPIES[name].format(folder=searched[0]),
        "point root (dataset.root, or the VARSHIFT_DATA environment variable) at a folder that holds it",
    ]
    if name in _SYSTEM_PACKAGES:
        ways.append(f"install the system package: {_SYSTEM_PACKAGES[name]}")
    return "\n".join(
        [f"dataset {name!r} not found ({cause}). Searched:"]
        + [f"  {path}" for path in searched]
        + ["Ways to get it:"]
        + [f"  - {way}" for way in ways]
    )
