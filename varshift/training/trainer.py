"""One run of ``varshift-train``: from a validated config to a complete run directory.

A run trains with SGD, records every epoch, probes the variance shift of every BN layer, then recalibrates BN
and measures again (the run directory described in the README). After every epoch it writes ``checkpoint.pt``;
rerunning in the same directory resumes from it (the data order and augmentation depend only on the seed and
the epoch, and the RNG state is in the checkpoint, so the resumed run ends with the same numbers as an
uninterrupted one). A finished run is not repeated.

A run directory belongs to one process and one config: :func:`run` locks it for its whole length
(``varshift.rundir``), writes the config once to ``config.yaml`` before the first epoch, and refuses a rerun
whose config differs in a key that is not neutral (``varshift.training.checkpoint``). Nothing non-finite is kept
(``varshift.training.guards``).

Data-parallel training (``varshift.training.distributed``: torchrun, or a SLURM job of one task per GPU): every
process builds the same network and data, trains on its slice of every batch (DDP averages the gradients) and measures
its share of every other pass, and the numbers it records are those of all processes together. Rank 0 alone holds
the run directory, decides whether the run trains (the others follow its decision), and writes the checkpoints, the
records and wandb; every process resumes from the same checkpoint, which keeps every process's RNG state. A stop
(divergence, an orphaned process) is agreed by all processes, so they stop together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from varshift import theory
from varshift.bn import recalibrate_bn
from varshift.data import DatasetInfo, Loaders, build_loaders
from varshift.data.folder_loader import default_workers
from varshift.data.seeds import Stream, derived_seed
from varshift.errors import ParentExited, RunInterrupted, TrainingDiverged, as_echo
from varshift.identity import CONFIG_FILE, SUMMARY_FILE
from varshift.models import build_model
from varshift.probes import TrainingPass, layer_table, measure_variance_shift, training_pass
from varshift.progress import console_fallback, epoch_line, summary_table
from varshift.rundir import locked, read_run_file, remove_stale_temporary_files
from varshift.tracking import RunRecorder
from varshift.training import checkpoint, distributed, guards, reuse
from varshift.training.interrupts import Interrupts
from varshift.training.loop import CountedPasses, Evaluation, autocast, evaluate, progress_bar, train_one_epoch
from varshift.training.optim import build_optimizer, build_scheduler
from varshift.training.setup import (
    describe_hardware,
    device_name,
    memory_format,
    rng_state,
    seed_everything,
    set_rng_state,
    switch_on,
    versions,
)
from varshift.training.sync_batchnorm import per_process_statistics, synchronise

log = logging.getLogger(__name__)
STATE_KEYS = ("epoch", "best_val_acc", "epochs_without_improvement", "stopped_early", "best_test_acc", "wall_time")


def alignment_table(model: nn.Module) -> pd.DataFrame:
    """cos^2 and d cos^2 of every conv layer (the paper's Table 1), in definition order."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            result = theory.weight_alignment(module.weight)
            rows.append({"layer": len(rows), "name": name, "d": result.d, "cos2": result.cos2,
                         "d_cos2": result.d_cos2})
    return pd.DataFrame(rows, columns=["layer", "name", "d", "cos2", "d_cos2"])


def top5_record(key: str, evaluation: Evaluation) -> dict:
    """``{key: top-5 accuracy}``, or nothing for a network of 5 classes or fewer."""
    return {} if evaluation.top5_acc is None else {key: evaluation.top5_acc}


class Trainer:
    """Trains one model from a plain, validated config (``varshift.config.to_plain`` + ``validate``)."""

    def __init__(self, cfg: dict, run_dir: Path, loaders: Loaders | None = None, *, parent_pid: int | None = None,
                 group: distributed.Group | None = None):
        """``loaders`` replaces the dataset of ``cfg`` (benchmarks pass synthetic data, in the memory format they
        train in); with ``parent_pid`` training stops (``ParentExited``) once this process is no longer that
        process's child. ``group``: the processes that train the run (by default those the launcher's environment
        names, :func:`varshift.training.distributed.start`)."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        trainer = cfg["trainer"]
        self.group = group or distributed.start(trainer)
        self.gather = self.group.gather if self.group.distributed else None
        self.device = self.group.device
        self.bf16 = switch_on(trainer["bf16"], self.device)
        self.channels_last = switch_on(trainer["channels_last"], self.device)
        layout = memory_format(trainer, self.device)
        if trainer["threads"] is not None:
            torch.set_num_threads(trainer["threads"])
        # what the config leaves open ("auto", the default thread count) and may differ on a resumption
        self.hardware = {"device": device_name(self.device), "threads": torch.get_num_threads()}
        ranks = self.group.ranks
        if ranks.distributed:
            self.hardware["processes"] = ranks.world_size
        self.parent_pid = parent_pid
        seed_everything(cfg["seed"], trainer["deterministic"])
        data = cfg["dataset"]
        shard = self.group.shard()
        check_batch_size(trainer["batch_size"], shard)
        self.loaders = loaders or build_loaders(
            data["name"], data["root"], batch_size=trainer["batch_size"],
            test_batch_size=trainer["test_batch_size"], device=self.device, seed=cfg["seed"],
            subset=data["subset"], test_subset=data["test_subset"], val_split=data["val_split"],
            download=data["download"], verify=data["verify"], info=DatasetInfo.from_config(data),
            memory_format=layout, shard=shard,
            workers=default_workers(ranks.local_world_size) if data["workers"] is None else data["workers"])
        info = self.loaders.info
        self.model = build_model(cfg["model"]["name"], num_classes=info.num_classes, in_channels=info.channels,
                                 dropout=cfg["dropout"], position=cfg["dropout"]["position"],
                                 **cfg["model"]["kwargs"]).to(self.device, memory_format=layout)
        self.forward = self.model
        if ranks.distributed:
            # every process holds the same BN statistics after each epoch (Group.broadcast_buffers), not at each step
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=device_ids, forward_sync_buffers=False)
            if trainer["sync_bn"]:
                synchronise(self.model)  # in place, once wrapped (sync_batchnorm.synchronise: CPU processes)
        if trainer["compile"]:
            self.forward = torch.compile(self.forward)
        if not ranks.main:  # dropout noise of its own (rank 0's is that of a run of one process)
            # numpy's global generator takes a 32-bit seed
            seed_everything(derived_seed(cfg["seed"], Stream.PROCESS, ranks.rank) % 2**32, trainer["deterministic"])
        self.optimizer = build_optimizer(self.model, cfg["optim"], self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg["optim"], trainer["epochs"])
        self.recorder = RunRecorder(self.run_dir, cfg, writes=ranks.main)
        self.epoch = 0
        self.best_val_acc = -1.0
        self.epochs_without_improvement = 0
        self.stopped_early = False
        self.best_test_acc = 0.0
        self.wall_time = 0.0
        self.saved_epoch = 0
        self.interrupts = Interrupts()  # SIGINT and SIGTERM, while run() runs

    # -- checkpoints --
    def state_dict(self, process_rngs: list[dict] | None = None) -> dict:
        """The run's state; ``process_rngs``: the RNG state of every process of a data-parallel run, in rank order."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "recorder": self.recorder.state_dict(),
                 **{key: getattr(self, key) for key in STATE_KEYS}, "config": self.cfg, "hardware": self.hardware}
        return state if process_rngs is None else {**state, "process_rng": process_rngs}

    def keep_epoch(self, row: dict) -> None:
        """Record the epoch's ``row`` (files, wandb) and checkpoint it: all of it, or, when an interrupt comes first,
        none of it (an interrupt that comes meanwhile waits until it is kept). Rank 0 writes; every process keeps."""
        process_rngs = self.gather(rng_state()) if self.gather else None
        with self.interrupts.deferred():
            self.recorder.log_epoch(row)
            if self.group.main:
                checkpoint.save_checkpoint(self.run_dir / checkpoint.CHECKPOINT, self.state_dict(process_rngs))
            self.saved_epoch = self.epoch
            self.recorder.write_files()

    def resume(self) -> bool:
        path = self.run_dir / checkpoint.CHECKPOINT
        if not path.exists():
            return False
        state = checkpoint.load_checkpoint(path)
        checkpoint.check_same_config(state["config"], self.cfg, path)
        if state["hardware"] != self.hardware and self.group.main:
            print(f"WARNING: {self.run_dir} ran until epoch {state['epoch']} on {describe_hardware(state['hardware'])} "
                  f"and resumes on {describe_hardware(self.hardware)}: other kernels round differently, so its "
                  "results may differ from an uninterrupted run's", file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # a process that the checkpoint has no RNG state for (it was written by fewer) keeps its own
        rngs = state.get("process_rng") or [state["rng"]]
        if self.group.ranks.rank < len(rngs):
            set_rng_state(rngs[self.group.ranks.rank])
        self.recorder.load_state_dict(state["recorder"])
        for key in STATE_KEYS:
            setattr(self, key, state[key])
        self.saved_epoch = self.epoch
        return True

    # -- stopping (every process together) --
    def told(self, error: BaseException) -> BaseException:
        """``error`` as this process raises it when every process raises it: rank 0 reports it."""
        return error if self.group.main else as_echo(error)

    def stop_if_diverged(self, problems: list[str]) -> None:
        """Stop when some process found ``problems``, naming those of every process."""
        if self.gather:
            problems = list(dict.fromkeys(problem for found in self.gather(problems) for problem in found))
        try:
            guards.stop_if_diverged(problems, epoch=self.epoch, saved_epoch=self.saved_epoch, run_dir=self.run_dir,
                                    lr=self.optimizer.param_groups[0]["lr"])
        except TrainingDiverged as error:
            raise self.told(error) from None

    def stop_if_orphaned(self) -> None:
        if self.parent_pid is None:
            return
        try:
            guards.stop_if_orphaned(self.group.any(guards.is_orphaned(self.parent_pid)), parent_pid=self.parent_pid,
                                    epoch=self.epoch, saved_epoch=self.saved_epoch, run_dir=self.run_dir)
        except ParentExited as error:
            raise self.told(error) from None

    # -- passes --
    @property
    def progress(self) -> bool:
        return self.cfg["trainer"]["progress"] and self.group.main

    def train_epoch(self) -> dict:
        self.loaders.train.set_epoch(self.epoch)
        row = train_one_epoch(self.forward, self.loaders.train, self.optimizer,
                              label=f"epoch {self.epoch}/{self.cfg['trainer']['epochs']}",
                              l1=self.cfg["optim"]["l1"], bf16=self.bf16, progress=self.progress,
                              before_step=self.stop_if_orphaned, gather=self.gather)
        self.group.broadcast_buffers(self.model)
        return row

    def evaluate(self, loader, label: str) -> Evaluation:
        """Loss, accuracy (%) and top-5 accuracy (%, more than 5 classes) in eval mode."""
        return evaluate(self.forward, loader, label=label, bf16=self.bf16, progress=self.progress,
                        gather=self.gather)

    def evaluate_test_per_class(self, label: str) -> Evaluation:
        """The test data in eval mode, with the accuracy (%) of each class (a list indexed by label)."""
        return evaluate(self.forward, self.loaders.test, label=label, bf16=self.bf16, progress=self.progress,
                        per_class=True, gather=self.gather)

    def training_pass(self, max_batches: int | None = None):
        """The training images with their augmentation, unshuffled, as the model sees them in training: the
        paper's data for measuring the shift and for BN recalibration; its first ``max_batches`` batches (None:
        all), of which this process passes its share."""
        self.loaders.train_eval.set_epoch(self.epoch)
        self.loaders.train_eval.set_limit(max_batches)
        return self.loaders.train_eval

    def batch_statistics_pass(self, label: str, passes: int, max_batches: int | None):
        """The passes of a probe or of BN recalibration: their data (:meth:`training_pass`) counted by a progress bar,
        autocast, and synchronised BN layers normalising per process (each holds whole batches of its own)."""
        data = self.training_pass(max_batches)
        stack = contextlib.ExitStack()
        bar = stack.enter_context(progress_bar(label, total=passes * len(data), enabled=self.progress))
        stack.enter_context(autocast(self.model, self.bf16))
        stack.enter_context(per_process_statistics(self.model))
        return stack, CountedPasses(data, bar)

    def measure_shift(self, stage: str, training: TrainingPass | None = None) -> tuple[pd.DataFrame, TrainingPass]:
        """The per-layer variance table (recorded under ``stage``, per channel too with ``probe.per_channel``) and its
        training-mode pass, which a probe after BN recalibration reuses (``training``: it does not depend on the BN
        running statistics); ``TrainingDiverged`` if the table is not finite."""
        # a pass over the data in eval mode, and one in train mode unless given
        stack, batches = self.batch_statistics_pass(f"variance probe ({stage})", 1 if training else 2,
                                                    self.cfg["probe"]["batches"])
        with stack:
            training = training or training_pass(self.model, batches, gather=self.gather)
            channels = measure_variance_shift(self.model, batches, per_channel=True, training=training,
                                              gather=self.gather)
        table = layer_table(channels)
        self.stop_if_diverged(guards.non_finite_probe(table, stage))
        self.recorder.log_variance(table, stage, self.epoch, channels if self.cfg["probe"]["per_channel"] else None)
        return table, training

    def recalibrate(self) -> None:
        stack, batches = self.batch_statistics_pass("BN recalibration", 1, self.cfg["probe"]["recalibrate_batches"])
        with stack:
            recalibrate_bn(self.model, batches, gather=self.gather)

    def train_eval_accuracy(self) -> float:
        return self.evaluate(self.training_pass(), "training data, eval mode").acc

    # -- the run --
    def run_epoch(self) -> None:
        """Train one epoch, check it is finite, record it, checkpoint (with the early-stopping decision)."""
        self.epoch += 1
        start = time.perf_counter()
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **self.train_epoch()}
        seconds = time.perf_counter() - start
        test = self.evaluate(self.loaders.test, "test")
        row.update(test_loss=test.loss, test_acc=test.acc, **top5_record("test_top5_acc", test))
        if self.loaders.val is not None:
            val = self.evaluate(self.loaders.val, "validation")
            row.update(val_loss=val.loss, val_acc=val.acc, **top5_record("val_top5_acc", val))
        self.stop_if_diverged(guards.non_finite_losses(row) + guards.non_finite_tensors(self.model))
        self.scheduler.step()
        row["seconds"] = seconds
        row["images_per_s"] = self.loaders.train.num_samples / seconds
        self.best_test_acc = max(self.best_test_acc, row["test_acc"])
        if self.loaders.val is not None:
            self.stopped_early = not self.update_early_stopping(row["val_acc"])
        every = self.cfg["probe"]["every"]
        if every and self.epoch % every == 0 and self.epoch < self.cfg["trainer"]["epochs"]:
            row["train_eval_acc"] = self.train_eval_accuracy()
            row["mean_shift"] = float(self.measure_shift("probe")[0]["shift"].mean())
        self.wall_time += time.perf_counter() - start
        self.keep_epoch(row)
        if self.group.main:
            log.info(epoch_line(row, self.cfg["trainer"]["epochs"]))

    def training_images_per_s(self) -> float:
        """Over every epoch the run has trained (its checkpoint keeps them across resumptions)."""
        epochs = self.recorder.epochs
        return self.loaders.train.num_samples * len(epochs) / sum(row["seconds"] for row in epochs)

    def update_early_stopping(self, val_acc: float) -> bool:
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.epochs_without_improvement = val_acc, 0
        else:
            self.epochs_without_improvement += 1
        patience = self.cfg["trainer"]["early_stopping"]["patience"]
        return patience is None or self.epochs_without_improvement < patience

    def finish(self) -> dict:
        """Final probes, BN recalibration and the summary."""
        start = time.perf_counter()
        test_acc = self.recorder.epochs[-1]["test_acc"]
        train_eval_acc = self.train_eval_accuracy()
        table, training = self.measure_shift("final")
        final = table["shift"]
        summary = {"status": "complete", "epochs": self.epoch, "stopped_early": self.stopped_early,
                   "test_acc": test_acc, "test_error": 100.0 - test_acc, "best_test_acc": self.best_test_acc,
                   "train_eval_acc": train_eval_acc, "train_acc": self.recorder.epochs[-1]["train_acc"],
                   "mean_shift": float(final.mean()), "max_shift": float(final.max())}
        final_test = self.evaluate_test_per_class("test, per class")
        summary["test_acc_per_class"] = final_test.per_class
        if final_test.top5_acc is not None:
            summary.update(test_top5_acc=final_test.top5_acc, test_top5_error=100.0 - final_test.top5_acc)
        if self.cfg["probe"]["recalibrate"]:
            self.recalibrate()
            recal = self.evaluate_test_per_class("test, BN recalibrated")
            summary.update(test_acc_recalibrated=recal.acc, test_error_recalibrated=100.0 - recal.acc,
                           test_acc_recalibrated_per_class=recal.per_class,
                           mean_shift_recalibrated=float(
                               self.measure_shift("recalibrated", training)[0]["shift"].mean()))
            if recal.top5_acc is not None:
                summary.update(test_top5_acc_recalibrated=recal.top5_acc,
                               test_top5_error_recalibrated=100.0 - recal.top5_acc)
        self.recorder.write_alignment(alignment_table(self.model))
        self.recorder.write_files()
        self.wall_time += time.perf_counter() - start
        summary.update(wall_time_s=self.wall_time, **self.hardware, bf16=self.bf16,
                       channels_last=self.channels_last, versions=versions())
        self.recorder.write_summary(summary)
        return summary

    def interrupted(self, stop: RunInterrupted) -> RunInterrupted:
        """``stop`` with what the run keeps: the checkpoint of its last complete epoch."""
        epochs, path = self.cfg["trainer"]["epochs"], self.run_dir / checkpoint.CHECKPOINT
        kept_all = self.saved_epoch == self.epoch
        if kept_all and self.epoch and (self.stopped_early or self.epoch >= epochs):
            kept = f"after its {self.epoch} epochs, before its summary; {path} keeps them all"
        elif self.saved_epoch:
            where = f"after epoch {self.epoch}/{epochs}" if kept_all else f"in epoch {self.epoch}/{epochs}"
            kept = f"{where}; {path} keeps epoch {self.saved_epoch}, the last complete one"
        else:
            where = f"in epoch {self.epoch}/{epochs}" if self.epoch else "before epoch 1"
            kept = f"{where}, before any checkpoint; {self.run_dir} keeps no epoch yet"
        restated = RunInterrupted(f"{stop} {kept}")
        restated.signum = stop.signum
        return restated

    def run(self) -> dict:
        with self.interrupts:
            resumed = self.resume()
            if self.group.main:
                print(f"resuming {self.run_dir} after epoch {self.epoch}" if resumed else f"training in {self.run_dir}",
                      flush=True)
                checkpoint.write_config(self.run_dir, self.cfg)
            self.recorder.start_wandb()
            exit_code = 1
            try:
                while not self.stopped_early and self.epoch < self.cfg["trainer"]["epochs"]:
                    self.run_epoch()
                summary = self.finish()
                exit_code = 0
                if self.group.main:
                    log.info(f"{self.run_dir} complete:\n{summary_table(summary, self.training_images_per_s())}")
                return summary
            except RunInterrupted as stop:
                self.recorder.mark_interrupted()
                raise self.told(self.interrupted(stop)) from None
            finally:
                self.recorder.finish_wandb(exit_code)


def finished_summary(cfg: dict, run_dir: Path) -> dict | None:
    """The summary of the run in ``run_dir`` if it needs no training: complete (printed as skipped) or diverged
    (``TrainingDiverged`` unless ``cfg["retry_diverged"]``); None when it has to train. Reads, never writes.

    Refuses a config that differs from the directory's ``config.yaml``, and a damaged ``config.yaml`` or
    ``summary.json`` (one line naming it and how to recover).
    """
    saved = read_run_file(run_dir, CONFIG_FILE)
    if saved is not None:
        checkpoint.check_same_config(saved, cfg, run_dir / CONFIG_FILE)
    summary = read_run_file(run_dir, SUMMARY_FILE)
    status = None if summary is None else summary.get("status")
    if status == "complete":
        print(f"{run_dir} is complete; skipping it (delete {SUMMARY_FILE} to run it again)")
        return summary
    if status == "diverged" and not cfg.get("retry_diverged"):
        kept = summary.get("checkpoint_epoch")
        raise TrainingDiverged(f"{run_dir} diverged in epoch {summary.get('epoch')} (see its {SUMMARY_FILE}); "
                               "skipping it: retry_diverged=true trains it again from "
                               + (f"its checkpoint of epoch {kept}" if kept else "the start"))
    return None


def check_batch_size(batch_size: int, shard) -> None:
    """The batch is split among the processes that train together: refused where they cannot split it."""
    try:
        dataclasses.replace(shard, split_batches=True).check_batch_size(batch_size, 2)
    except ValueError as error:
        raise ValueError(f"config trainer.{error}") from None


def record_divergence(trainer: Trainer, error: TrainingDiverged) -> None:
    """``summary.json`` with status ``diverged``: the epoch, the epoch of the checkpoint kept and why."""
    summary = {"status": "diverged", "epoch": trainer.epoch, "checkpoint_epoch": trainer.saved_epoch,
               "error": str(error)}
    try:
        trainer.recorder.write_summary(summary)
    except OSError as write_error:  # the divergence is the news; a rerun then trains (and diverges) again
        print(f"WARNING: {trainer.run_dir} diverged but its status could not be recorded ({write_error})",
              file=sys.stderr)


def run(cfg: dict, run_dir: Path, *, stop_with_parent: bool = False) -> dict:
    """Train (or resume, or skip if complete) the run in ``run_dir``; return its summary.

    A run that diverges records ``status: diverged`` in ``summary.json`` (with the epoch and the epoch of the last
    good checkpoint) and raises ``TrainingDiverged``; a rerun skips it the same way unless ``cfg`` has
    ``retry_diverged`` true. The run holds ``run_dir`` while it trains (``RunDirInUse`` for a second process). A
    config that differs from the directory's ``config.yaml`` is refused; a refusal or a skip changes no file, and
    a complete run is recognised without writing anything (even on a read-only file system).
    ``stop_with_parent``: stop (``ParentExited``, keeping the last checkpoint) once the process that called this
    one has exited, so that the workers of a killed multirun do not train on.
    A sweep's job whose training is complete in a sweep beside it starts from that run's last checkpoint
    (:mod:`varshift.training.reuse`).
    """
    run_dir = Path(run_dir)
    parent_pid = os.getppid() if stop_with_parent else None
    group = distributed.start(cfg["trainer"])
    with contextlib.ExitStack() as held:
        summary = group.shared(lambda: prepare(cfg, run_dir, held))
        if summary is not None:
            return summary
        with console_fallback(logging.getLogger("varshift")):
            trainer = Trainer(cfg, run_dir, parent_pid=parent_pid, group=group)
            try:
                return trainer.run()
            except TrainingDiverged as error:
                if group.main:
                    record_divergence(trainer, error)
                raise


def prepare(cfg: dict, run_dir: Path, held: contextlib.ExitStack) -> dict | None:
    """The summary of the run in ``run_dir`` if it needs no training; else None, with ``run_dir`` locked (until
    ``held`` closes) and ready to train in."""
    summary = finished_summary(cfg, run_dir)
    if summary is not None:
        return summary
    held.enter_context(locked(run_dir))
    summary = finished_summary(cfg, run_dir)  # another process may have finished it in the meantime
    if summary is not None:
        return summary
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)  # a diverged run's, retried: the run is in progress
    remove_stale_temporary_files(run_dir)
    reuse.start_from_same_computation(cfg, run_dir)
    return None
