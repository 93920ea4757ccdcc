"""The schema of ``varshift-train``'s configuration: the one home of every default.

Hydra merges ``conf/`` (the package ``varshift.conf``) onto these dataclasses, so a misspelt key or a value outside
an enum (``dropout.position=befor_bn``) fails while the config is composed, listing the allowed values. A field
is either defaulted here or ``MISSING`` here and set by exactly the group whose business it is: the dataset's
facts by ``dataset/``, the network's by ``model/``, its training schedule by ``recipe/`` (chosen by the model),
sizes (images, epochs, probe batches) by ``scale/``. No group's default option repeats a default of this file
with another value (a test checks it).

This module imports no torch, so that ``varshift-train --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from varshift.processes import launch_time
from varshift.vocabulary import DROPOUT_KINDS, GROUP_SELECTORS, POSITIONS, flatten, is_neutral

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
    root: str = MISSING  # each dataset option: $VARSHIFT_DATA, else data/
    download: bool = True  # download into root when the files are missing (needs internet access)
    verify: bool = True  # check archive checksums where the format has them (CIFAR's md5)
    num_classes: int = MISSING
    channels: int = MISSING
    size: int = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    crop_padding: int = MISSING  # random crop of the image zero-padded by this many pixels per side
    flip: bool = MISSING  # random horizontal flip, probability 1/2
    resize: int | None = None  # image folders: the shorter side of a test image before its centre crop of size
    workers: int | None = None  # image folders: decoding processes (null: one per CPU core; 0: in the trainer)
    subset: Any = MISSING  # set by the scale: a fraction in (0, 1], a count of training images, or null (all)
    test_subset: Any = MISSING
    val_split: float = 0.0  # fraction of the training images held out as a validation set


@dataclass
class ModelConfig:
    name: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DropoutConfig:
    """The paper's Dropout-(a) at drop ratio 0.5: an option of the dropout group (``dropout=uniform``) sets the
    kind only; ``dropout=none`` also sets rate 0 and position none."""

    kind: DropoutKind = DropoutKind.bernoulli
    rate: float = 0.5  # drop ratio q; beta for uniform
    channelwise: bool = False
    position: Position = Position.before_bn


@dataclass
class OptimConfig:
    """SGD; the model's recipe (``recipe/``) sets the learning rate, weight decay and schedule."""

    lr: float = MISSING
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = MISSING
    l1: float = 0.0  # L1 penalty on conv and linear weights, added to the loss
    schedule: Schedule = MISSING
    milestones: list[float] = MISSING  # fractions of trainer.epochs where the lr is multiplied by gamma
    gamma: float = MISSING


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # epochs without a better validation accuracy (needs dataset.val_split > 0)


@dataclass
class TrainerConfig:
    epochs: int = MISSING  # the recipe's, or the scale's
    batch_size: int = MISSING
    test_batch_size: int = 500
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    bf16: str = "auto"  # bf16 autocast: auto (on CUDA), on, off
    channels_last: str = "auto"  # auto (on CUDA), on, off
    compile: bool = False  # torch.compile the forward pass
    threads: int | None = None  # torch CPU threads (None: torch's default; 1 avoids spinning on a busy CPU)
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    progress: bool = True  # progress bars of every pass
    # data-parallel training (torchrun, hydra/launcher=slurm_ddp): BN statistics of the global batch (SyncBatchNorm)
    # rather than of each process's slice of it
    sync_bn: bool = False
    collective_timeout_s: int = 600  # data-parallel training: how long a process waits for the others before it stops
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
    every: int = 0  # probe the variance shift every N epochs during training (0: only after the last)
    batches: int | None = MISSING  # set by the scale: training batches per probe pass (null: all, augmented)
    recalibrate: bool = True  # re-estimate the BN statistics with dropout off after training, then test again
    recalibrate_batches: int | None = MISSING
    per_channel: bool = False  # also write every probe per BN channel (variance_channels.csv)


@dataclass
class ImageNetScaleConfig:
    """Table 5 at a scale: its networks, and the classes and image sizes of the ImageNet-layout folder it reads."""

    models: list[str] = MISSING
    num_classes: int = MISSING
    size: int = MISSING
    resize: int = MISSING


@dataclass
class ScaleConfig:
    name: str = MISSING  # a plain string: it names the sweep folder (an enum would print as ScaleName.demo)
    # The axes the experiment presets sweep at this scale (``model: ${sweep:${scale.models}}``): the paper's
    # networks and datasets at paper (a GPU per run), small stand-ins at smoke, demo and laptop.
    datasets: list[str] = MISSING
    models: list[str] = MISSING
    fig5_models: list[str] = MISSING  # Figure 5 shows two of the paper's four networks
    wrn_depth: int = MISSING  # the width preset's Wide ResNet: WRN-<wrn_depth>-<widen factor>
    widen_factors: list[int] = MISSING
    imagenet: ImageNetScaleConfig = field(default_factory=ImageNetScaleConfig)


@dataclass
class Config:
    experiment_name: str = "default"
    seed: int = 0
    retry_diverged: bool = False  # train a run whose summary.json says it diverged again (else it is skipped)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


def schema_fields(schema: type) -> dict[str, Any]:
    """The fields of a schema dataclass with their resolved types, in order."""
    return typing.get_type_hints(schema)


def schema_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys of the schema's leaves, in order: ``experiment_name``, ..., ``logger.wandb.mode``, ..."""
    keys = []
    for name, kind in schema_fields(schema).items():
        keys += schema_keys(kind, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else [prefix + name]
    return keys


@functools.cache
def schema_defaults() -> dict[str, Any]:
    """Every schema key (flattened) with its default, enums as names, and None where a group sets it (MISSING)."""
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(Config), enum_to_str=True))
    return {key: None if value == MISSING else value for key, value in defaults.items()}


def sweep_values(values: list) -> str:
    """A list as a sweep of Hydra's basic sweeper (``a,b``): what ``${sweep:${scale.models}}`` resolves to."""
    return ",".join(str(value) for value in values)


def folder_name_exclusions() -> list[str]:
    """What a sweep folder's name leaves out: the group selectors and every neutral key (``conf/config.yaml``'s
    ``exclude_keys``), so that runs differing only in those share one folder and a relaunch finds it."""
    return [*GROUP_SELECTORS, *(key for key in schema_keys() if is_neutral(key))]


RESOLVERS = {"sweep": sweep_values, "folder_name_exclusions": folder_name_exclusions}
CACHED_RESOLVERS = {"launch_time": launch_time}  # resolved once per config, as Hydra's own ${now:...}


def register_schema() -> None:
    """The schema and the resolvers ``conf/`` uses; call before composing it."""
    ConfigStore.instance().store(name="schema", node=Config)
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    for name, resolver in CACHED_RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (enums as their names), for the trainer and for logging."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True)
