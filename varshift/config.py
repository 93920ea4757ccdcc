"""The schema of ``varshift-train``'s configuration, and the checks run before any training.

Hydra merges ``conf/`` onto these dataclasses, so a misspelt key or a value outside an enum
(``dropout.position=befor_bn``) fails while the config is composed, listing the allowed values.
Ranges that a type cannot express (a negative rate, a learning rate of 0) are checked by
:func:`validate`, which names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from varshift import theory

SCALES = ("smoke", "demo", "paper")


class DropoutKind(Enum):
    none = "none"
    bernoulli = "bernoulli"
    gaussian = "gaussian"
    uniform = "uniform"


class Position(Enum):
    none = "none"
    before_bn = "before_bn"
    before_conv = "before_conv"
    head = "head"


class Schedule(Enum):
    multistep = "multistep"
    cosine = "cosine"
    constant = "constant"


class WandbMode(Enum):
    disabled = "disabled"
    offline = "offline"
    online = "online"


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "data"
    download: bool = True
    verify: bool = True  # check archive checksums where the format has them
    num_classes: int = MISSING
    channels: int = MISSING
    size: int = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    crop_padding: int = 0
    flip: bool = False
    subset: Any = None  # a fraction in (0, 1] or a count of training images
    test_subset: Any = None
    val_split: float = 0.0


@dataclass
class ModelConfig:
    name: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DropoutConfig:
    kind: DropoutKind = DropoutKind.none
    rate: float = 0.0
    channelwise: bool = False
    position: Position = Position.none


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    l1: float = 0.0
    schedule: Schedule = Schedule.multistep
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of trainer.epochs
    gamma: float = 0.1


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # epochs without a better validation accuracy; None: off


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    test_batch_size: int = 500
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    bf16: str = "auto"  # auto (on CUDA), on, off
    channels_last: str = "auto"  # auto (on CUDA), on, off
    compile: bool = False
    threads: int | None = None  # torch CPU threads (None: torch's default)
    deterministic: bool = False
    progress: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.disabled
    project: str = "varshift"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ProbeConfig:
    every: int = 0  # probe the variance shift every N epochs during training (0: only at the end)
    batches: int | None = None  # training batches per probe pass (None: the whole training set)
    recalibrate: bool = True
    recalibrate_batches: int | None = None


@dataclass
class ScaleConfig:
    name: str = "demo"  # a plain string: it names the sweep folder (an enum would print as ScaleName.demo)
    # what experiment recipes sweep at this scale (the paper's networks need a GPU)
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


@dataclass
class Config:
    experiment_name: str = "default"
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


def register_schema() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (enums as their names), for the trainer and for logging."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"config {key}={value!r} is not allowed: {allowed}")


def _check_amount(key: str, value) -> None:
    """subset-like values: None, a fraction in (0, 1], or a whole count >= 1."""
    if value is None:
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _require(is_number and (0 < value <= 1 or (value > 1 and float(value).is_integer())), key, value,
             "null, a fraction in (0, 1] or a whole number of images")


def _check_switch(key: str, value) -> None:
    _require(value in ("auto", "on", "off"), key, value, "one of auto, on, off")


def validate(cfg: dict) -> dict:
    """Check the ranges of a plain config (from :func:`to_plain`); return it unchanged."""
    from varshift.data import DATASET_NAMES
    from varshift.models import MODEL_NAMES

    data, model, drop, optim, trainer, probe = (cfg[k] for k in ("dataset", "model", "dropout", "optim",
                                                                 "trainer", "probe"))
    _require(cfg["scale"]["name"] in SCALES, "scale.name", cfg["scale"]["name"], f"one of {', '.join(SCALES)}")
    _require(data["name"] in DATASET_NAMES, "dataset.name", data["name"], f"one of {', '.join(DATASET_NAMES)}")
    _require(model["name"] in MODEL_NAMES, "model.name", model["name"], f"one of {', '.join(MODEL_NAMES)}")
    try:
        theory.check_rate(drop["kind"], drop["rate"])
    except ValueError as err:
        raise ValueError(f"config dropout.rate={drop['rate']!r} is not allowed: {err}") from None
    _check_amount("dataset.subset", data["subset"])
    _check_amount("dataset.test_subset", data["test_subset"])
    _require(0.0 <= data["val_split"] < 1.0, "dataset.val_split", data["val_split"], "a fraction in [0, 1)")
    _require(optim["lr"] > 0, "optim.lr", optim["lr"], "a number > 0")
    _require(0.0 <= optim["momentum"] < 1.0, "optim.momentum", optim["momentum"], "a number in [0, 1)")
    _require(not optim["nesterov"] or optim["momentum"] > 0, "optim.nesterov", True, "false when momentum is 0")
    _require(optim["weight_decay"] >= 0, "optim.weight_decay", optim["weight_decay"], "a number >= 0")
    _require(optim["l1"] >= 0, "optim.l1", optim["l1"], "a number >= 0")
    _require(0.0 < optim["gamma"] <= 1.0, "optim.gamma", optim["gamma"], "a number in (0, 1]")
    milestones = optim["milestones"]
    _require(all(0 < m < 1 for m in milestones) and milestones == sorted(milestones), "optim.milestones",
             milestones, "increasing fractions of trainer.epochs, each in (0, 1)")
    _require(trainer["epochs"] >= 1, "trainer.epochs", trainer["epochs"], "a whole number >= 1")
    _require(trainer["batch_size"] >= 1, "trainer.batch_size", trainer["batch_size"], "a whole number >= 1")
    _require(trainer["test_batch_size"] >= 1, "trainer.test_batch_size", trainer["test_batch_size"],
             "a whole number >= 1")
    device = trainer["device"]
    _require(device in ("auto", "cpu", "cuda") or device.startswith("cuda:"), "trainer.device", device,
             "auto, cpu, cuda or cuda:N")
    _require(trainer["threads"] is None or trainer["threads"] >= 1, "trainer.threads", trainer["threads"],
             "null (torch's default) or >= 1")
    _check_switch("trainer.bf16", trainer["bf16"])
    _check_switch("trainer.channels_last", trainer["channels_last"])
    patience = trainer["early_stopping"]["patience"]
    _require(patience is None or patience >= 1, "trainer.early_stopping.patience", patience, "null or >= 1")
    _require(patience is None or data["val_split"] > 0, "trainer.early_stopping.patience", patience,
             "null unless dataset.val_split > 0 (early stopping watches the validation accuracy)")
    _require(probe["every"] >= 0, "probe.every", probe["every"], "a whole number >= 0 (0: only at the end)")
    for key in ("batches", "recalibrate_batches"):
        _require(probe[key] is None or probe[key] >= 1, f"probe.{key}", probe[key], "null (all) or >= 1")
    return cfg
