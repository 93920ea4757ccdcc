"""Dataset metadata (classes, channels, size, normalisation, augmentation).

The YAML files of the Hydra group ``varshift/conf/dataset/`` are the one source of these numbers: models,
loaders and the trainer all read them through :func:`dataset_info` (or :meth:`DatasetInfo.from_config`
on an already composed, possibly overridden ``cfg.dataset``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from varshift.data.checks import check_int
from varshift.paths import CONF_DIR
from varshift.vocabulary import DATASET_NAMES


def check_dataset_name(name: str) -> str:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASET_NAMES)}")
    return name


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

    def __post_init__(self):
        check_dataset_name(self.name)
        for field, minimum in (("num_classes", 2), ("channels", 1), ("size", 1), ("crop_padding", 0)):
            check_int(getattr(self, field), f"{self.name}: {field}", minimum)
        if len(self.mean) != self.channels or len(self.std) != self.channels or min(self.std) <= 0:
            raise ValueError(
                f"{self.name}: mean {self.mean} and std {self.std} need one value per channel "
                f"({self.channels}), std > 0"
            )
        if not isinstance(self.flip, bool):
            raise ValueError(f"{self.name}: flip must be true or false, got {self.flip!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DatasetInfo:
        """Build from a dataset config (a ``varshift/conf/dataset`` YAML, or the trainer's ``cfg.dataset``)."""
        return cls(
            name=cfg["name"],
            num_classes=cfg["num_classes"],
            channels=cfg["channels"],
            size=cfg["size"],
            mean=tuple(float(m) for m in cfg["mean"]),
            std=tuple(float(s) for s in cfg["std"]),
            crop_padding=cfg["crop_padding"],
            flip=cfg["flip"],
        )


def dataset_config(name: str) -> dict[str, Any]:
    """The resolved ``varshift/conf/dataset/<name>.yaml`` as a plain dict (no Hydra needed)."""
    path = CONF_DIR / "dataset" / f"{check_dataset_name(name)}.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if cfg.get("name") != name:
        raise ValueError(f"{path} says name: {cfg.get('name')!r}; it must be {name!r}")
    return cfg


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of dataset ``name`` (one of :data:`DATASET_NAMES`), read from its YAML."""
    return DatasetInfo.from_config(dataset_config(name))
