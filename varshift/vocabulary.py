"""The words of varshift's configuration: kinds, positions, scales, dataset and model names, neutral keys.

One module, imported by the config schema (which derives ``conf/config.yaml``'s ``exclude_keys`` from it), the
models, the trainer's resume check and the analysis, so that a name is spelt in one place. It imports nothing
heavy (no torch), so ``varshift.analysis`` and the command lines' start-up can use it.

A run's *setting* is every key of its flattened config except ``seed`` and the neutral keys: runs
that differ only in their seed are repetitions of one setting; runs that differ in any other key
(``optim.lr`` included) are different settings.
"""

from __future__ import annotations

from collections.abc import Iterable

DROPOUT_KINDS = ("none", "bernoulli", "gaussian", "uniform", "droppath", "dropblock")
# residual: on a residual branch, in front of the add (DropPath's place in residual networks)
POSITIONS = ("none", "before_bn", "before_conv", "head", "residual")
# the positions where each kind that has its own place fits; the other kinds fit every position but residual
KIND_POSITIONS = {"droppath": ("residual",), "dropblock": ("before_bn", "before_conv")}
SCALES = ("smoke", "demo", "laptop", "paper")
DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "mnist", "imagenet")
# Datasets read from image folders by worker processes (the others are held in memory, on the training device).
FOLDER_DATASETS = ("imagenet",)
MODEL_NAMES = ("preresnet110", "resnext29_8x64d", "wrn28_10", "densenet_bc100", "small_cnn", "mlp", "preresnet14_w8",
               "resnet200", "resnext101_64x4d", "senet154", "resnet50")

SEED_KEY = "seed"
# Keys (or key prefixes, "logger" covers "logger.wandb.mode") that cannot change a run's numbers: where the
# data is read from and how many processes decode it, how progress and records are shown, what the probe writes
# besides (the per-channel rows), whether a diverged run is tried again. A run may resume with other values of them,
# and analysis ignores them when it groups runs into settings. trainer.device and trainer.threads are not neutral:
# other kernels round differently. dataset.workers is: each image's augmentation is drawn from the seed, the epoch
# and the image alone, whichever process decodes it.
NEUTRAL_KEYS = ("logger", "trainer.progress", "dataset.root", "dataset.download", "dataset.verify", "dataset.workers",
                "probe.per_channel", "retry_diverged", "trainer.collective_timeout_s")
# Command-line overrides that only pick config groups whose values are in the config themselves, so they
# add nothing to a sweep folder's name (hydra.job.config.override_dirname.exclude_keys).
GROUP_SELECTORS = ("experiment", "scale", "logger", "hydra/launcher")
# Which epoch's test error the analysis reports (``varshift-analysis ... --epoch``).
EPOCHS = {"final": "final epoch", "best": "best epoch (lowest test error during training)"}


def is_neutral(key: str) -> bool:
    """Whether the flattened config key ``key`` (``trainer.progress``) is a neutral key or under one."""
    return any(key == neutral or key.startswith(f"{neutral}.") for neutral in NEUTRAL_KEYS)


def setting_keys(keys: Iterable[str]) -> list[str]:
    """The keys among ``keys`` that define a setting: all but the seed and the neutral keys, in order."""
    return [key for key in keys if key != SEED_KEY and not is_neutral(key)]



def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values): a config's keys as the setting speaks of them."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
