"""The checks of a composed config before any training: :func:`validate`.

What a type cannot express is checked here, naming the key, the value and what is allowed: keys added with
``+`` that the schema does not know, non-finite numbers, the trainer's, optimiser's and probe's ranges, and the
settings that contradict each other across groups. Each domain checks its own group in its own module: the
dataset (:func:`varshift.data.check_dataset_config`), the dropout (:func:`varshift.dropout.check_dropout_config`)
and the network, which is built on the meta device with the config's dropout, so that a network without BN or
without a slot at the chosen position fails now, not after training.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from varshift.checks import one_of, refuse, require, whole_number
from varshift.config.schema import Config, schema_fields
from varshift.vocabulary import SCALES, flatten

MAX_SEED = 2**32 - 1


def check_known_keys(tree: dict, schema: type, prefix: str = "") -> None:
    """Keys that ``+key=value`` added but the schema does not have (``+trainer.epoch=2``)."""
    fields = schema_fields(schema)
    for key, value in tree.items():
        if key not in fields:
            refuse(prefix + key, value, f"{prefix.rstrip('.') or 'the config'} has no key {key!r}; "
                                        f"its keys: {', '.join(fields)}")
        if dataclasses.is_dataclass(fields[key]):
            check_known_keys(value, fields[key], f"{prefix}{key}.")


def check_finite(cfg: dict) -> None:
    for key, value in flatten(cfg).items():
        numbers = value if isinstance(value, list) else [value]
        require(all(math.isfinite(n) for n in numbers if isinstance(n, float)), key, value, "finite numbers only")


def check_seed(seed) -> None:
    """numpy takes seeds in [0, 2**32 - 1] (torch and Python more): one range for all three."""
    require(whole_number("seed", seed, 0) <= MAX_SEED, "seed", seed, f"a whole number in [0, {MAX_SEED}]")


def check_switch(key: str, value) -> None:
    one_of(key, value, ("auto", "on", "off"))


def check_optim(optim: dict, epochs: int) -> None:
    from varshift.training.optim import milestone_epochs

    require(optim["lr"] > 0, "optim.lr", optim["lr"], "a number > 0")
    require(0.0 <= optim["momentum"] < 1.0, "optim.momentum", optim["momentum"], "a number in [0, 1)")
    require(not optim["nesterov"] or optim["momentum"] > 0, "optim.nesterov", True, "false when momentum is 0")
    require(optim["weight_decay"] >= 0, "optim.weight_decay", optim["weight_decay"], "a number >= 0")
    require(optim["l1"] >= 0, "optim.l1", optim["l1"], "a number >= 0")
    require(0.0 < optim["gamma"] <= 1.0, "optim.gamma", optim["gamma"], "a number in (0, 1]")
    milestones = optim["milestones"]
    require(all(0 < m < 1 for m in milestones) and milestones == sorted(milestones), "optim.milestones",
            milestones, "increasing fractions of trainer.epochs, each in (0, 1)")
    if optim["schedule"] == "multistep":
        at = milestone_epochs(optim, epochs)
        bounds = [0, *at, epochs]
        require(all(a < b for a, b in itertools.pairwise(bounds)), "optim.milestones", milestones,
                f"with trainer.epochs={epochs} they fall on epochs {at}, which must be strictly increasing and "
                f"inside (0, {epochs}); give fewer or other fractions (optim.milestones=[] for none), more epochs, "
                "or optim.schedule=constant")


def check_trainer(trainer: dict, val_split: float) -> None:
    require(trainer["epochs"] >= 1, "trainer.epochs", trainer["epochs"], "a whole number >= 1")
    require(trainer["batch_size"] >= 2, "trainer.batch_size", trainer["batch_size"],
            "a whole number >= 2 (BN cannot train on one image)")
    require(trainer["test_batch_size"] >= 1, "trainer.test_batch_size", trainer["test_batch_size"],
            "a whole number >= 1")
    device = trainer["device"]
    require(device in ("auto", "cpu", "cuda") or device.startswith("cuda:"), "trainer.device", device,
            "auto, cpu, cuda or cuda:N")
    require(trainer["threads"] is None or trainer["threads"] >= 1, "trainer.threads", trainer["threads"],
            "null (torch's default) or >= 1")
    require(trainer["collective_timeout_s"] >= 1, "trainer.collective_timeout_s", trainer["collective_timeout_s"],
            "a whole number of seconds >= 1")
    check_switch("trainer.bf16", trainer["bf16"])
    check_switch("trainer.channels_last", trainer["channels_last"])
    patience = trainer["early_stopping"]["patience"]
    require(patience is None or patience >= 1, "trainer.early_stopping.patience", patience, "null or >= 1")
    require(patience is None or val_split > 0, "trainer.early_stopping.patience", patience,
            "null unless dataset.val_split > 0 (early stopping watches the validation accuracy)")


def check_probe(probe: dict) -> None:
    require(probe["every"] >= 0, "probe.every", probe["every"], "a whole number >= 0 (0: only at the end)")
    for key in ("batches", "recalibrate_batches"):
        require(probe[key] is None or probe[key] >= 1, f"probe.{key}", probe[key], "null (all) or >= 1")


def validate(cfg: dict) -> dict:
    """Check a plain config (from :func:`varshift.config.to_plain`) before any training; return it unchanged.

    Raises ValueError ``config <key>=<value> is not allowed: <what is>``.
    """
    from varshift.data import check_dataset_config
    from varshift.dropout import check_dropout_config
    from varshift.models import check_model_config

    try:
        check_known_keys(cfg, Config)
        check_finite(cfg)
        check_seed(cfg["seed"])
        one_of("scale.name", cfg["scale"]["name"], SCALES)
        check_dataset_config(cfg["dataset"])
        check_dropout_config(cfg["dropout"])
        check_model_config(cfg["model"], cfg["dataset"], cfg["dropout"])
        check_trainer(cfg["trainer"], cfg["dataset"]["val_split"])
        check_optim(cfg["optim"], cfg["trainer"]["epochs"])
        check_probe(cfg["probe"])
    except ValueError as error:
        raise ValueError(f"config {error}") from None
    return cfg
