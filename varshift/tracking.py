"""Where a run's records go: files in the run directory always, wandb when enabled.

The files are the source of truth (the run directory described in the README): ``metrics.jsonl`` (one object
per epoch), ``variance.csv`` (the per-layer variance shift at every probe, with the theory's terms of
:mod:`varshift.probes`), ``variance_channels.csv`` (the same per channel, with ``probe.per_channel``),
``alignment.csv`` (cos^2 and d cos^2 of every conv layer) and ``summary.json``. Each is rewritten atomically from the
history held in memory, so a run killed at any moment leaves complete files, and a resumed run
rewrites them from the history stored in its checkpoint. JSON is strict: a missing or non-finite number is
``null``.

wandb never stops a run: ``WANDB_MODE`` (when set) overrides ``logger.wandb.mode``; ``wandb.init`` and the
final upload wait at most ``WANDB_TIMEOUT_S`` for the server (``WANDB_INIT_TIMEOUT``, ``WANDB_LOGIN_TIMEOUT``
and ``WANDB_FINISH_TIMEOUT`` override it); when wandb cannot start, the run says so and records to its
local files only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from varshift.io import atomic_write_json, atomic_write_text, strict_json
from varshift.probe_columns import CHANNEL_COLUMNS, LAYER_COLUMNS
from varshift.vocabulary import flatten

VARIANCE_COLUMNS = ["stage", "epoch", *LAYER_COLUMNS]
CHANNEL_VARIANCE_COLUMNS = ["stage", "epoch", *CHANNEL_COLUMNS]
CHANNELS_FILE = "variance_channels.csv"
# Seconds wandb may wait for its server: to log in, to start the run, to upload at the end. Without a bound an
# unreachable server holds a job for minutes, then kills it.
WANDB_TIMEOUT_S = 60.0
WANDB_TIMEOUTS = ("login_timeout", "init_timeout", "finish_timeout")


def wandb_mode(logger: dict) -> str:
    """``WANDB_MODE`` when set, else ``logger.wandb.mode``."""
    return os.environ.get("WANDB_MODE") or logger["wandb"]["mode"]


def wandb_timeouts() -> dict:
    """Our bound for each wandb timeout that its own environment variable (``WANDB_INIT_TIMEOUT``, ...) leaves unset."""
    return {name: WANDB_TIMEOUT_S for name in WANDB_TIMEOUTS if f"WANDB_{name.upper()}" not in os.environ}


class RunRecorder:
    """Collects a run's epochs and variance tables, writes them to ``run_dir`` and to wandb."""

    def __init__(self, run_dir: Path, config: dict):
        self.run_dir = Path(run_dir)
        self.config = config
        self.epochs: list[dict] = []
        self.variance: list[dict] = []
        self.channels: list[dict] = []
        self._wandb_run = None

    # -- history (stored in checkpoints so a resumed run continues the same files) --
    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "variance": self.variance, "channels": self.channels}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state["epochs"])
        self.variance = list(state["variance"])
        self.channels = list(state.get("channels", []))  # a checkpoint of an older varshift has none
        self.write_files()

    # -- wandb --
    def start_wandb(self) -> None:
        settings = self.config["logger"]["wandb"]
        mode = wandb_mode(self.config["logger"])
        if mode == "disabled":
            return
        import wandb  # imported only when enabled: wandb is never needed for a run to work

        run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
        try:
            self._wandb_run = wandb.init(
                project=settings["project"], entity=settings["entity"], mode=mode,
                tags=settings["tags"], group=self.config["experiment_name"], dir=str(self.run_dir),
                name=self.run_dir.name, id=run_id, resume="allow", config=flatten(self.config), reinit=True,
                settings=wandb.Settings(**wandb_timeouts()))
        except Exception as error:  # wandb fails in many ways (no network, no login, server errors): none stops a run
            print(f"wandb could not start ({type(error).__name__}: {error}); this run records to its local files "
                  f"only ({self.run_dir})", file=sys.stderr)

    def finish_wandb(self, exit_code: int) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=exit_code)
            self._wandb_run = None

    # -- records --
    def log_epoch(self, row: dict) -> None:
        self.epochs.append(row)
        if self._wandb_run is not None:
            self._wandb_run.log(row, step=row["epoch"])

    def log_variance(self, table: pd.DataFrame, stage: str, epoch: int, channels: pd.DataFrame | None = None) -> None:
        """The per-layer ``table`` of a probe (and its per-channel rows, if given) at ``stage`` after ``epoch``."""
        rows = table.assign(stage=stage, epoch=epoch)[VARIANCE_COLUMNS].to_dict("records")
        self.variance.extend(rows)
        if channels is not None:
            self.channels.extend(channels.assign(stage=stage, epoch=epoch)[CHANNEL_VARIANCE_COLUMNS].to_dict("records"))
        if self._wandb_run is not None:
            import wandb

            frame = pd.DataFrame(rows)
            self._wandb_run.log({f"variance/{stage}": wandb.Table(dataframe=frame),
                                 f"mean_shift/{stage}": float(frame["shift"].mean())}, step=epoch)

    def write_files(self) -> None:
        lines = "".join(strict_json(row, sort_keys=True) + "\n" for row in self.epochs)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        frame = pd.DataFrame(self.variance, columns=VARIANCE_COLUMNS)
        atomic_write_text(self.run_dir / "variance.csv", frame.to_csv(index=False))
        if self.channels:
            frame = pd.DataFrame(self.channels, columns=CHANNEL_VARIANCE_COLUMNS)
            atomic_write_text(self.run_dir / CHANNELS_FILE, frame.to_csv(index=False))

    def write_alignment(self, table: pd.DataFrame) -> None:
        atomic_write_text(self.run_dir / "alignment.csv", table.to_csv(index=False))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)
        if self._wandb_run is not None:
            self._wandb_run.summary.update(flatten(summary))


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
