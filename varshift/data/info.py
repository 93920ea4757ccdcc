"""Dataset metadata (classes, channels, size, normalisation, augmentation).

A dataset held in memory (CIFAR, MNIST, Fashion-MNIST) has fixed facts: its classes, channels and image size are
its files'. A folder dataset (ImageNet, :data:`varshift.vocabulary.FOLDER_DATASETS`) is the folders a user gives:
its classes are the class folders found (``num_classes`` must match them), and ``size`` (the side of the crops
the network sees) and ``resize`` (the shorter side of a test image before its centre crop) are a protocol's
choice, not facts of the files.

The YAML files of the Hydra group ``conf/dataset/`` are the one source of these numbers: models, loaders and the
trainer all read them through :func:`dataset_info` (or :meth:`DatasetInfo.from_config` on an already composed,
possibly overridden ``cfg.dataset``, which :func:`check_dataset_config` checks before training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from varshift.checks import one_of, require, whole_number
from varshift.paths import conf_file
from varshift.vocabulary import DATASET_NAMES, FOLDER_DATASETS


def check_dataset_name(name: str) -> str:
    return one_of("dataset", name, DATASET_NAMES)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a loader need to know about a dataset."""

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    resize: int | None = None  # folder datasets: the shorter side of a test image before the centre crop of size

    @property
    def reads_folders(self) -> bool:
        """Whether the images are files in class folders, decoded while training (else held in memory)."""
        return self.name in FOLDER_DATASETS

    def __post_init__(self):
        check_dataset_name(self.name)
        for field, minimum in (("num_classes", 2), ("channels", 1), ("size", 1), ("crop_padding", 0)):
            whole_number(f"{self.name} {field}", getattr(self, field), minimum)
        if self.reads_folders:
            whole_number(f"{self.name} resize", self.resize, self.size)
            require(self.crop_padding == 0, f"{self.name} crop_padding", self.crop_padding,
                    "0: folder images are cropped by a random-resized crop, not from a padded image")
        else:
            require(self.resize is None, f"{self.name} resize", self.resize,
                    f"null: {self.name}'s images are {self.size}x{self.size} already")
        if len(self.mean) != self.channels or len(self.std) != self.channels or min(self.std) <= 0:
            raise ValueError(
                f"{self.name}: mean {self.mean} and std {self.std} need one value per channel "
                f"({self.channels}), std > 0"
            )
        if not isinstance(self.flip, bool):
            raise ValueError(f"{self.name}: flip must be true or false, got {self.flip!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DatasetInfo:
        """Build from a dataset config (a ``conf/dataset`` YAML, or the trainer's ``cfg.dataset``)."""
        return cls(
            name=cfg["name"],
            num_classes=cfg["num_classes"],
            channels=cfg["channels"],
            size=cfg["size"],
            mean=tuple(float(m) for m in cfg["mean"]),
            std=tuple(float(s) for s in cfg["std"]),
            crop_padding=cfg["crop_padding"],
            flip=cfg["flip"],
            resize=cfg.get("resize"),
        )


def dataset_config(name: str) -> dict[str, Any]:
    """The resolved ``conf/dataset/<name>.yaml`` as a plain dict (no Hydra needed)."""
    path = conf_file("dataset", check_dataset_name(name))
    cfg = OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=True)
    if cfg.get("name") != name:
        raise ValueError(f"{path} says name: {cfg.get('name')!r}; it must be {name!r}")
    return cfg


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of dataset ``name`` (one of :data:`DATASET_NAMES`), read from its YAML."""
    return DatasetInfo.from_config(dataset_config(name))


def check_amount(key: str, value) -> None:
    """A subset-like value: None, a fraction in (0, 1], or a whole count >= 1."""
    if value is None:
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    require(is_number and (0 < value <= 1 or (value > 1 and float(value).is_integer())), key, value,
            "null, a fraction in (0, 1] or a whole number of images")


def check_dataset_config(data: Mapping[str, Any]) -> None:
    """A composed ``cfg.dataset``: a known dataset with its own facts, and subsets and a split that make sense."""
    name = one_of("dataset.name", data["name"], DATASET_NAMES)
    own = dataset_config(name)
    folders = name in FOLDER_DATASETS
    # a folder dataset's classes are checked against its folders when they are read
    for key in ("channels",) if folders else ("num_classes", "channels", "size"):
        require(data[key] == own[key], f"dataset.{key}", data[key],
                f"{own[key]}, {name}'s own (choose another dataset for another)")
    DatasetInfo.from_config(data)  # mean and std: one positive value per channel; a folder's sizes
    if folders:
        require(not data["download"], "dataset.download", data["download"],
                f"false: {name} is read from the folders in dataset.root, never downloaded")
        require(data["workers"] is None or data["workers"] >= 0, "dataset.workers", data["workers"],
                "null (one per CPU core) or a whole number >= 0 (0: decode in the training process)")
    else:
        require(data["workers"] is None, "dataset.workers", data["workers"],
                f"null: {name} is held in memory; workers decode the image folders of {', '.join(FOLDER_DATASETS)}")
    check_amount("dataset.subset", data["subset"])
    check_amount("dataset.test_subset", data["test_subset"])
    require(0.0 <= data["val_split"] < 1.0, "dataset.val_split", data["val_split"], "a fraction in [0, 1)")
