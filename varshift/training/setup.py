"""Where and how a run computes: the device, the GPU speed-ups, torch's threads, the seeds and RNG states."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config trainer.device={name!r} is not allowed: no CUDA device here (use auto or cpu)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """``cuda:0`` rather than ``cuda``: the device the run really uses."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def switch_on(value: str, device: torch.device) -> bool:
    """``auto`` switches a GPU speed-up on for CUDA devices only."""
    return device.type == "cuda" if value == "auto" else value == "on"


def memory_format(trainer: dict, device: torch.device) -> torch.memory_format:
    """The layout the batches and the network's weights have in training (``trainer.channels_last``)."""
    return torch.channels_last if switch_on(trainer["channels_last"], device) else torch.contiguous_format


def describe_hardware(hardware: dict) -> str:
    return f"{hardware['device']} with {hardware['threads']} torch threads"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict:
    import hydra
    import torchvision

    import varshift

    return {"varshift": varshift.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "hydra": hydra.__version__, "python": platform.python_version()}
