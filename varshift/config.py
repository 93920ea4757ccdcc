"""The schema of ``varshift-train``'s configuration, and the checks run before any training.

Hydra merges ``varshift/conf/`` onto these dataclasses, so a misspelt key or a value outside an enum
(``dropout.position=befor_bn``) fails while the config is composed, listing the allowed values.
What a type cannot express is checked by :func:`validate`, which names the key, the value and what
is allowed: keys added with ``+`` that the schema does not know, ranges (a negative rate, a learning
rate of 0, infinity), settings that contradict each other (a dropout kind without a position, a
dataset's class count) and settings that would only fail after training (a network without BN).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from varshift import theory
from varshift.vocabulary import DATASET_NAMES, DROPOUT_KINDS, MODEL_NAMES, POSITIONS, SCALES

DropoutKind = Enum("DropoutKind", {kind: kind for kind in DROPOUT_KINDS})
Position = Enum("Position", {position: position for position in POSITIONS})


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
    # The axes the experiment presets sweep at this scale (``model: ${sweep:${scale.models}}``): the paper's
    # networks and datasets at paper (a GPU per run), small stand-ins at smoke and demo.
    datasets: list[str] = MISSING
    models: list[str] = MISSING
    fig5_models: list[str] = MISSING  # Figure 5 shows two of the paper's four networks
    wrn_depth: int = MISSING  # the width preset's Wide ResNet: WRN-<wrn_depth>-<widen factor>
    widen_factors: list[int] = MISSING


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


def sweep_values(values: list) -> str:
    """A list as a sweep of Hydra's basic sweeper (``a,b``): what ``${sweep:${scale.models}}`` resolves to."""
    return ",".join(str(value) for value in values)


def register_schema() -> None:
    """The schema, and the ``sweep`` resolver the presets use; call before composing ``varshift/conf/``."""
    ConfigStore.instance().store(name="schema", node=Config)
    if not OmegaConf.has_resolver("sweep"):
        OmegaConf.register_new_resolver("sweep", sweep_values)


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (enums as their names), for the trainer and for logging."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)


def _schema_fields(schema: type) -> dict[str, Any]:
    """The fields of a schema dataclass with their resolved types, in order."""
    return typing.get_type_hints(schema)


def schema_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys of the schema's leaves, in order: ``experiment_name``, ..., ``logger.wandb.mode``, ..."""
    keys = []
    for name, kind in _schema_fields(schema).items():
        keys += schema_keys(kind, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else [prefix + name]
    return keys


def milestone_epochs(optim: dict, epochs: int) -> list[int]:
    """The epochs (0-based, as ``LambdaLR`` counts) from which the learning rate is multiplied once more by
    ``optim.gamma``: the fractions ``optim.milestones`` of ``epochs``, rounded."""
    return [round(fraction * epochs) for fraction in optim["milestones"]]


def _refuse(key: str, value, allowed: str) -> typing.NoReturn:
    raise ValueError(f"config {key}={value!r} is not allowed: {allowed}")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        _refuse(key, value, allowed)


def _check_known_keys(tree: dict, schema: type, prefix: str = "") -> None:
    """Keys that ``+key=value`` added but the schema does not have (``+trainer.epoch=2``)."""
    fields = _schema_fields(schema)
    for key, value in tree.items():
        if key not in fields:
            _refuse(prefix + key, value, f"{prefix.rstrip('.') or 'the config'} has no key {key!r}; "
                                         f"its keys: {', '.join(fields)}")
        if dataclasses.is_dataclass(fields[key]):
            _check_known_keys(value, fields[key], f"{prefix}{key}.")


def _check_finite(cfg: dict) -> None:
    from varshift.tracking import flatten

    for key, value in flatten(cfg).items():
        numbers = value if isinstance(value, list) else [value]
        _require(all(math.isfinite(n) for n in numbers if isinstance(n, float)), key, value, "finite numbers only")


def _check_amount(key: str, value) -> None:
    """subset-like values: None, a fraction in (0, 1], or a whole count >= 1."""
    if value is None:
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    _require(is_number and (0 < value <= 1 or (value > 1 and float(value).is_integer())), key, value,
             "null, a fraction in (0, 1] or a whole number of images")


def _check_switch(key: str, value) -> None:
    _require(value in ("auto", "on", "off"), key, value, "one of auto, on, off")


def _check_dataset(data: dict) -> None:
    from varshift.data import DatasetInfo, dataset_config

    _require(data["name"] in DATASET_NAMES, "dataset.name", data["name"], f"one of {', '.join(DATASET_NAMES)}")
    own = dataset_config(data["name"])
    for key in ("num_classes", "channels", "size"):
        _require(data[key] == own[key], f"dataset.{key}", data[key],
                 f"{own[key]}, {data['name']}'s own (choose another dataset for another)")
    DatasetInfo.from_config(data)  # mean and std: one positive value per channel
    _check_amount("dataset.subset", data["subset"])
    _check_amount("dataset.test_subset", data["test_subset"])
    _require(0.0 <= data["val_split"] < 1.0, "dataset.val_split", data["val_split"], "a fraction in [0, 1)")


def _check_dropout(drop: dict) -> None:
    try:
        theory.check_rate(drop["kind"], drop["rate"])
    except ValueError as err:
        raise ValueError(f"config dropout.rate={drop['rate']!r} is not allowed: {err}") from None
    places = ", ".join(POSITIONS[1:])
    if drop["kind"] == "none":
        _require(drop["position"] == "none", "dropout.position", drop["position"],
                 f"none with dropout.kind='none'; pick a kind (dropout=bernoulli, ...) to put dropout at {places}")
    else:
        _require(drop["position"] != "none", "dropout.position", "none",
                 f"one of {places} with dropout.kind={drop['kind']!r}; use dropout=none for no dropout")


def _check_model_kwargs(model: dict, data: dict) -> None:
    from varshift.models import family_parameters

    name, kwargs = model["name"], model["kwargs"]
    _require(name in MODEL_NAMES, "model.name", name, f"one of {', '.join(MODEL_NAMES)}")
    parameters = family_parameters(name)
    for key, value in kwargs.items():
        _require(key in parameters, f"model.kwargs.{key}", value,
                 f"model {name} has no parameter {key!r}; its parameters: {', '.join(parameters)}")
    if "image_size" in parameters:
        image_size = kwargs.get("image_size", parameters["image_size"])
        _require(image_size == data["size"], "model.kwargs.image_size", image_size,
                 f"{data['size']}, the side of {data['name']}'s images")


@functools.lru_cache(maxsize=256)
def _layer_counts(name: str, position: str, num_classes: int, in_channels: int,
                  kwargs: tuple[tuple[str, Any], ...]) -> tuple[int, int]:
    """(dropout layers, BN layers) of the network, built on the meta device (a sweep asks for few networks)."""
    from torch import nn

    from varshift.dropout import MultiplicativeNoise
    from varshift.models.registry import build_on_meta

    network = build_on_meta(name, position, num_classes=num_classes, in_channels=in_channels, **dict(kwargs))
    modules = list(network.modules())
    return (sum(isinstance(module, MultiplicativeNoise) for module in modules),
            sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in modules))


def _check_model_layers(model: dict, data: dict, position: str) -> None:
    """The network builds for this dataset, has BN layers, and has a dropout layer at ``position``."""
    name, kwargs = model["name"], model["kwargs"]
    frozen = tuple((key, tuple(value) if isinstance(value, list) else value) for key, value in kwargs.items())

    def counts(at: str) -> tuple[int, int]:
        try:
            return _layer_counts(name, at, data["num_classes"], data["channels"], frozen)
        except ValueError as err:
            raise ValueError(f"config model.kwargs={kwargs!r} is not allowed for model {name}: {err}") from None

    dropout_layers, bn_layers = counts(position)
    if bn_layers == 0:
        switched_off = [key for key, value in kwargs.items() if value is False]
        key, value = (f"model.kwargs.{switched_off[0]}", False) if len(switched_off) == 1 else ("model.kwargs", kwargs)
        _refuse(key, value, f"model {name} has no BN layer with it, and varshift measures the variance shift of "
                            "BN layers")
    if position != "none" and dropout_layers == 0:
        supported = [at for at in POSITIONS[1:] if counts(at)[0] > 0]
        _refuse("dropout.position", position, f"model {name} with model.kwargs={kwargs} has no dropout slot at "
                                              f"{position}; its slots: {', '.join(supported) or 'none'}")


def _check_optim(optim: dict, epochs: int) -> None:
    _require(optim["lr"] > 0, "optim.lr", optim["lr"], "a number > 0")
    _require(0.0 <= optim["momentum"] < 1.0, "optim.momentum", optim["momentum"], "a number in [0, 1)")
    _require(not optim["nesterov"] or optim["momentum"] > 0, "optim.nesterov", True, "false when momentum is 0")
    _require(optim["weight_decay"] >= 0, "optim.weight_decay", optim["weight_decay"], "a number >= 0")
    _require(optim["l1"] >= 0, "optim.l1", optim["l1"], "a number >= 0")
    _require(0.0 < optim["gamma"] <= 1.0, "optim.gamma", optim["gamma"], "a number in (0, 1]")
    milestones = optim["milestones"]
    _require(all(0 < m < 1 for m in milestones) and milestones == sorted(milestones), "optim.milestones",
             milestones, "increasing fractions of trainer.epochs, each in (0, 1)")
    if optim["schedule"] == "multistep":
        at = milestone_epochs(optim, epochs)
        bounds = [0, *at, epochs]
        _require(all(a < b for a, b in itertools.pairwise(bounds)), "optim.milestones", milestones,
                 f"with trainer.epochs={epochs} they fall on epochs {at}, which must be strictly increasing and "
                 f"inside (0, {epochs}); give fewer or other fractions (optim.milestones=[] for none), more epochs, "
                 "or optim.schedule=constant")


def _check_trainer(trainer: dict, val_split: float) -> None:
    _require(trainer["epochs"] >= 1, "trainer.epochs", trainer["epochs"], "a whole number >= 1")
    _require(trainer["batch_size"] >= 2, "trainer.batch_size", trainer["batch_size"],
             "a whole number >= 2 (BN cannot train on one image)")
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
    _require(patience is None or val_split > 0, "trainer.early_stopping.patience", patience,
             "null unless dataset.val_split > 0 (early stopping watches the validation accuracy)")


def _check_probe(probe: dict) -> None:
    _require(probe["every"] >= 0, "probe.every", probe["every"], "a whole number >= 0 (0: only at the end)")
    for key in ("batches", "recalibrate_batches"):
        _require(probe[key] is None or probe[key] >= 1, f"probe.{key}", probe[key], "null (all) or >= 1")


def validate(cfg: dict) -> dict:
    """Check a plain config (from :func:`to_plain`) before any training; return it unchanged.

    Raises ValueError naming the key, the value and what is allowed.
    """
    _check_known_keys(cfg, Config)
    _check_finite(cfg)
    _require(cfg["scale"]["name"] in SCALES, "scale.name", cfg["scale"]["name"], f"one of {', '.join(SCALES)}")
    _check_dataset(cfg["dataset"])
    _check_dropout(cfg["dropout"])
    _check_model_kwargs(cfg["model"], cfg["dataset"])
    _check_model_layers(cfg["model"], cfg["dataset"], cfg["dropout"]["position"])
    _check_trainer(cfg["trainer"], cfg["dataset"]["val_split"])
    _check_optim(cfg["optim"], cfg["trainer"]["epochs"])
    _check_probe(cfg["probe"])
    return cfg
