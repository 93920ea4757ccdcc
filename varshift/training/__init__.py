"""Training, one concern per module: the run (:mod:`trainer`: ``Trainer``, ``run``), one pass (:mod:`loop`:
``train_one_epoch``, ``evaluate``), checkpoint and resume (:mod:`checkpoint`), what stops a run (:mod:`guards`),
device and seeds (:mod:`setup`), optimiser and schedule (:mod:`optim`).

>>> from varshift.training import run
>>> summary = run(cfg, "outputs/mine")   # cfg: a validated plain config (varshift.config)
"""

from varshift.errors import ParentExited, TrainingDiverged
from varshift.training.checkpoint import CHECKPOINT, CONFIG_FILE, load_checkpoint
from varshift.training.loop import evaluate, train_one_epoch
from varshift.training.trainer import Trainer, run

__all__ = ["CHECKPOINT", "CONFIG_FILE", "ParentExited", "Trainer", "TrainingDiverged", "evaluate", "load_checkpoint",
           "run", "train_one_epoch"]
