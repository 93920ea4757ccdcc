"""Where a run's records go: files in the run directory always, wandb when enabled.

The files are the source of truth (the run directory described in the README): ``metrics.jsonl`` (one object
per epoch), ``variance.csv`` (the per-layer variance shift at every probe, with the theory's terms of
:mod:`varshift.probes`), ``variance_channels.csv`` (the same per channel, with ``probe.per_channel``),
``alignment.csv`` (cos^2 and d cos^2 of every conv layer) and ``summary.json``. Each is rewritten atomically from the
history held in memory, so a run killed at any moment leaves complete files, and a resumed run
rewrites them from the history stored in its checkpoint. JSON is strict: a missing or non-finite number is
``null``.

wandb, when enabled, gets one wandb run per varshift run: grouped by the setting without the seed (so the seeds
of one setting are one group), its experiment as the job type, tags ``experiment=``, ``scale=``, ``kind=`` and
``position=`` (and ``logger.wandb.tags``), the flattened config once, when the wandb run is created. Metrics are
namespaced (``train/``, ``val/``, ``test/``, ``shift/<BN layer>``, ``recalibrated/``) and plotted against
``epoch``; the per-layer shift after training (and after BN recalibration) is also a table and a line chart.
The summary is ``summary.json``'s, with its own flat keys. The wandb run's id is drawn when a run starts from
scratch and kept in the run's checkpoint: a resumed run continues its wandb run, a run restarted from scratch
gets a new one (a wandb run that starts on a resumption is first given the epochs recorded before).

wandb never stops a run: ``WANDB_MODE`` (when set) overrides ``logger.wandb.mode``; ``wandb.init`` and the
final upload wait at most ``WANDB_TIMEOUT_S`` for the server (``WANDB_INIT_TIMEOUT``, ``WANDB_LOGIN_TIMEOUT``
and ``WANDB_FINISH_TIMEOUT`` override it); when wandb cannot start, the run says so and records to its
local files only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import pandas as pd

from varshift.io import atomic_write_json, atomic_write_text, strict_json
from varshift.probe_columns import CHANNEL_COLUMNS, LAYER_COLUMNS
from varshift.vocabulary import flatten, setting_keys

VARIANCE_COLUMNS = ["stage", "epoch", *LAYER_COLUMNS]
CHANNEL_VARIANCE_COLUMNS = ["stage", "epoch", *CHANNEL_COLUMNS]
CHANNELS_FILE = "variance_channels.csv"
# Seconds wandb may wait for its server: to log in, to start the run, to upload at the end. Without a bound an
# unreachable server holds a job for minutes, then kills it.
WANDB_TIMEOUT_S = 60.0
WANDB_TIMEOUTS = ("login_timeout", "init_timeout", "finish_timeout")
# metrics.jsonl key -> its wandb name; every one is plotted against "epoch"
WANDB_METRICS = {"lr": "train/lr", "train_loss": "train/loss", "train_acc": "train/acc",
                 "train_eval_acc": "train/acc_eval_mode", "seconds": "train/seconds",
                 "images_per_s": "train/images_per_s", "val_loss": "val/loss", "val_acc": "val/acc",
                 "test_loss": "test/loss", "test_acc": "test/acc", "mean_shift": "shift/mean"}
WANDB_NAMESPACES = ("train", "val", "test", "shift", "recalibrated")
# variance.csv stage -> the wandb prefix of its per-layer shift
WANDB_SHIFT_PREFIX = {"probe": "shift", "final": "shift", "recalibrated": "recalibrated/shift"}


def wandb_mode(logger: dict) -> str:
    """``WANDB_MODE`` when set, else ``logger.wandb.mode``."""
    return os.environ.get("WANDB_MODE") or logger["wandb"]["mode"]


def wandb_timeouts() -> dict:
    """Our bound for each wandb timeout that its own environment variable (``WANDB_INIT_TIMEOUT``, ...) leaves unset."""
    return {name: WANDB_TIMEOUT_S for name in WANDB_TIMEOUTS if f"WANDB_{name.upper()}" not in os.environ}


def wandb_group(config: dict) -> str:
    """The setting without the seed, as a wandb group: experiment, network, dataset and dropout in words, then a
    digest of every setting key (:func:`varshift.vocabulary.setting_keys`), so that runs which differ in any other
    key (``optim.lr``) are never one group. ``fig4 small_cnn fashion_mnist bernoulli 0.1 before_bn 3f09c2a1``."""
    flat = flatten(config)
    setting = json.dumps({key: flat[key] for key in setting_keys(flat)}, sort_keys=True, default=str)
    dropout = config["dropout"]
    words = "no dropout" if dropout["kind"] == "none" or dropout["rate"] == 0 else (
        f"{dropout['kind']} {dropout['rate']:g} {dropout['position']}" + (" channel-wise" if dropout["channelwise"]
                                                                           else ""))
    return " ".join([config["experiment_name"], config["model"]["name"], config["dataset"]["name"], words,
                     hashlib.sha1(setting.encode()).hexdigest()[:8]])


def wandb_tags(config: dict) -> list[str]:
    """``experiment=``, ``scale=``, ``kind=``, ``position=`` of the run, then the user's ``logger.wandb.tags``."""
    own = [f"experiment={config['experiment_name']}", f"scale={config['scale']['name']}",
           f"kind={config['dropout']['kind']}", f"position={config['dropout']['position']}"]
    return own + [tag for tag in config["logger"]["wandb"]["tags"] if tag not in own]


class RunRecorder:
    """Collects a run's epochs and variance tables, writes them to ``run_dir`` and to wandb; with ``writes`` false
    (the processes of a data-parallel run other than rank 0) it only collects them."""

    def __init__(self, run_dir: Path, config: dict, *, writes: bool = True):
        self.run_dir = Path(run_dir)
        self.config = config
        self.writes = writes
        self.epochs: list[dict] = []
        self.variance: list[dict] = []
        self.wandb_id: str | None = None  # the run's wandb run, once one was started
        self.channels: list[dict] = []
        self._wandb_run = None
        self._interrupted = False

    # -- history (stored in checkpoints so a resumed run continues the same files and the same wandb run) --
    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "variance": self.variance, "channels": self.channels, "wandb_id": self.wandb_id}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state["epochs"])
        self.variance = list(state["variance"])
        self.channels = list(state.get("channels", []))  # checkpoints of older varshift have none
        self.wandb_id = state.get("wandb_id")
        self.write_files()

    # -- wandb --
    def start_wandb(self) -> None:
        settings = self.config["logger"]["wandb"]
        mode = wandb_mode(self.config["logger"])
        if mode == "disabled" or not self.writes:
            return
        import wandb  # imported only when enabled: wandb is never needed for a run to work

        resuming = self.wandb_id is not None
        run_id = self.wandb_id if resuming else secrets.token_hex(8)
        try:
            self._wandb_run = wandb.init(
                project=settings["project"], entity=settings["entity"], mode=mode, dir=str(self.run_dir),
                id=run_id, resume="allow", name=self.run_dir.name, group=wandb_group(self.config),
                job_type=self.config["experiment_name"], tags=wandb_tags(self.config),
                config=None if resuming else flatten(self.config), reinit="create_new",
                settings=wandb.Settings(**wandb_timeouts()))
        except Exception as error:  # wandb fails in many ways (no network, no login, server errors): none stops a run
            print(f"wandb could not start ({type(error).__name__}: {error}); this run records to its local files "
                  f"only ({self.run_dir})", file=sys.stderr)
            return
        self.wandb_id = run_id
        self._wandb_run.define_metric("epoch", summary="none")
        for namespace in WANDB_NAMESPACES:
            self._wandb_run.define_metric(f"{namespace}/*", step_metric="epoch")
        if not resuming:  # a wandb run started on a resumption: first what the run recorded before
            for row in self.epochs:
                self._log_epoch_to_wandb(row)
            for (stage, epoch), rows in pd.DataFrame(self.variance, columns=VARIANCE_COLUMNS).groupby(
                    ["stage", "epoch"], sort=False):
                self._log_variance_to_wandb(rows, stage, epoch)

    def mark_interrupted(self) -> None:
        """The run was interrupted (SIGINT, SIGTERM): its wandb run is marked as preempted, to be resumed."""
        self._interrupted = True

    def finish_wandb(self, exit_code: int) -> None:
        if self._wandb_run is not None:
            if self._interrupted:
                self._wandb_run.mark_preempting()
            self._wandb_run.finish(exit_code=exit_code)
            self._wandb_run = None

    def _log_epoch_to_wandb(self, row: dict) -> None:
        self._wandb_run.log({"epoch": row["epoch"],
                             **{WANDB_METRICS.get(key, key): value for key, value in row.items() if key != "epoch"}})

    def _log_variance_to_wandb(self, frame: pd.DataFrame, stage: str, epoch: int) -> None:
        import wandb

        prefix = WANDB_SHIFT_PREFIX[stage]
        record = {"epoch": epoch, f"{prefix}/mean": float(frame["shift"].mean()),
                  **{f"{prefix}/{name}": float(shift) for name, shift in zip(frame["name"], frame["shift"],
                                                                            strict=True)}}
        if stage != "probe":  # the curve of the paper's Figure 4: after training, and after BN recalibration
            table = wandb.Table(dataframe=frame.drop(columns="stage").reset_index(drop=True))
            title = f"variance shift per BN layer, {'after training' if stage == 'final' else 'BN recalibrated'}"
            record[f"{prefix}/per_layer"] = table
            record[f"{prefix}/per_layer_chart"] = wandb.plot.line(table, "layer", "shift", title=title)
        self._wandb_run.log(record)

    # -- records --
    def log_epoch(self, row: dict) -> None:
        self.epochs.append(row)
        if self._wandb_run is not None:
            self._log_epoch_to_wandb(row)

    def log_variance(self, table: pd.DataFrame, stage: str, epoch: int, channels: pd.DataFrame | None = None) -> None:
        """The per-layer ``table`` of a probe (and its per-channel rows, if given) at ``stage`` after ``epoch``."""
        rows = table.assign(stage=stage, epoch=epoch)[VARIANCE_COLUMNS].to_dict("records")
        self.variance.extend(rows)
        if channels is not None:
            self.channels.extend(channels.assign(stage=stage, epoch=epoch)[CHANNEL_VARIANCE_COLUMNS].to_dict("records"))
        if self._wandb_run is not None:
            self._log_variance_to_wandb(pd.DataFrame(rows), stage, epoch)

    def write_files(self) -> None:
        if not self.writes:
            return
        lines = "".join(strict_json(row, sort_keys=True) + "\n" for row in self.epochs)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        frame = pd.DataFrame(self.variance, columns=VARIANCE_COLUMNS)
        atomic_write_text(self.run_dir / "variance.csv", frame.to_csv(index=False))
        if self.channels:
            frame = pd.DataFrame(self.channels, columns=CHANNEL_VARIANCE_COLUMNS)
            atomic_write_text(self.run_dir / CHANNELS_FILE, frame.to_csv(index=False))

    def write_alignment(self, table: pd.DataFrame) -> None:
        if self.writes:
            atomic_write_text(self.run_dir / "alignment.csv", table.to_csv(index=False))

    def write_summary(self, summary: dict) -> None:
        if not self.writes:
            return
        atomic_write_json(self.run_dir / "summary.json", summary)
        if self._wandb_run is not None:
            if "test_acc_recalibrated" in summary:
                self._wandb_run.log({"epoch": summary["epochs"],
                                     "recalibrated/test_acc": summary["test_acc_recalibrated"]})
            self._wandb_run.summary.update(flatten(summary))


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
