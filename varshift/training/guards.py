"""What stops a run before its end: a non-finite number anywhere it would be kept, or the loss of the process
that started it. Nothing non-finite is ever checkpointed: the run stops with its last good checkpoint (and
``varshift.training.trainer.run`` records the divergence in its summary.json)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from varshift.errors import ParentExited, TrainingDiverged
from varshift.probe_columns import QUANTITIES

LOSS_NAMES = {"train_loss": "the training loss", "test_loss": "the test loss", "val_loss": "the validation loss"}
SHOWN_PROBLEMS = 5


def non_finite_losses(row: dict) -> list[str]:
    return [f"{name} became {row[key]}" for key, name in LOSS_NAMES.items()
            if key in row and not math.isfinite(row[key])]


def non_finite_tensors(model: nn.Module) -> list[str]:
    """The parameters and buffers (BN running_mean, running_var, ...) of ``model`` that hold a NaN or inf."""
    tensors = {name: t for name, t in model.state_dict().items() if t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()  # one device sync
    return [f"{name} holds NaN or inf" for name, ok in zip(tensors, finite, strict=True) if not ok]


def non_finite_probe(table: pd.DataFrame, stage: str) -> list[str]:
    """The BN layers whose measured variances are not finite (the theory's terms are NaN where it has none)."""
    rows = ~np.isfinite(table[QUANTITIES].astype(float)).all(axis=1)
    return [f"the variance probe ({stage}) of BN layer {name} holds NaN or inf" for name in table.loc[rows, "name"]]


def stop_if_diverged(problems: list[str], *, epoch: int, saved_epoch: int, run_dir: Path, lr: float) -> None:
    """Raise ``TrainingDiverged`` naming ``problems`` (nothing when empty), what was kept and what to try."""
    if not problems:
        return
    more = len(problems) - SHOWN_PROBLEMS
    named = "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    kept = f"keeps its last good checkpoint (epoch {saved_epoch})" if saved_epoch else "has no checkpoint yet"
    raise TrainingDiverged(
        f"training diverged in epoch {epoch}: {named}. The run stops and {kept} in {run_dir}. "
        f"Lower optim.lr (now {lr}) or the dropout rate, or switch trainer.bf16=off. Its summary.json records "
        "the divergence: a rerun skips it unless retry_diverged=true.")


def is_orphaned(parent_pid: int | None) -> bool:
    """Whether this process is no longer the child of ``parent_pid`` (None: never)."""
    return parent_pid is not None and os.getppid() != parent_pid


def stop_if_orphaned(orphaned: bool, *, parent_pid: int | None, epoch: int, saved_epoch: int, run_dir: Path) -> None:
    """Raise ``ParentExited`` when ``orphaned``: the process that started the run, ``parent_pid`` (in data-parallel
    training: that started one of its processes), has exited."""
    if orphaned:
        raise ParentExited(
            f"the process that started this run (pid {parent_pid}) has exited; {run_dir} stops in "
            f"epoch {epoch} and keeps its checkpoint of epoch {saved_epoch}: rerun it to resume")
