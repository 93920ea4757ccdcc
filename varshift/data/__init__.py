"""Datasets (CIFAR-10/100, Fashion-MNIST, MNIST) and fast loaders that keep them on the training device.

>>> from varshift.data import build_loaders
>>> loaders = build_loaders("cifar10", "data", batch_size=128, test_batch_size=100, device="cuda")
>>> for epoch in range(epochs):
...     loaders.train.set_epoch(epoch)
...     for x, y in loaders.train: ...
"""

from varshift.data.device_loader import DeviceLoader
from varshift.data.info import DATASET_NAMES, DatasetInfo, check_dataset_config, dataset_config, dataset_info
from varshift.data.loaders import Loaders, build_loaders, loaders_over
from varshift.data.sources import Splits, load_dataset
from varshift.errors import DatasetCorruptedError, DatasetNotFoundError

__all__ = [
    "DATASET_NAMES",
    "DatasetCorruptedError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DeviceLoader",
    "Loaders",
    "Splits",
    "build_loaders",
    "check_dataset_config",
    "dataset_config",
    "dataset_info",
    "load_dataset",
    "loaders_over",
]
