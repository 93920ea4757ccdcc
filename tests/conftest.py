"""Shared fixtures: a small Fashion-MNIST in the real IDX layout, a small ImageNet-layout folder of JPEGs, and
composed trainer configs."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from varshift.config import register_schema, to_plain, validate
from varshift.data.sample import write_imagenet_sample
from varshift.paths import CONF_PACKAGE

# One torch thread: on a 2-core CI machine two spinning OpenMP threads make small ops many times slower
# whenever anything else runs.
torch.set_num_threads(1)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def learnable_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28x28 noisy stripes: the class sets the period (2-6 pixels) and the orientation (vertical or not)."""
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    coords = np.arange(28)
    images = rng.integers(0, 80, size=(count, 28, 28))
    for i, label in enumerate(labels):
        stripes = (coords % (2 + label % 5)) == 0
        images[i] += 150 * (stripes[None, :] if label < 5 else stripes[:, None])
    return images.clip(0, 255), labels


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 1000), ("t10k", 300)):
        images, labels = learnable_images(count, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    """The 10-class sample of ``python -m varshift.data.sample``: 520 training and 260 test JPEGs."""
    return write_imagenet_sample(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture
def make_config(fashion_root):
    """Compose ``conf/`` like ``varshift-train`` does, at smoke scale on the small dataset."""
    register_schema()

    def make(*overrides: str) -> dict:
        base = ["scale=smoke", f"dataset.root={fashion_root}", "dataset.download=false", "trainer.device=cpu"]
        with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
            cfg = compose("config", overrides=[*base, *overrides])
        return validate(to_plain(cfg))

    return make
