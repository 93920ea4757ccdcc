"""The training loop of ``varshift-train``: one run from a plain config to a complete run directory.

A run trains with SGD, records every epoch, probes the variance shift of every BN layer, then
recalibrates BN and measures again (the run directory described in the README). After every epoch it writes
``checkpoint.pt`` atomically, behind a sha256 of its content; rerunning in the same directory resumes from
it (the data order and augmentation depend only on the seed and the epoch, and the RNG state is in the
checkpoint, so the resumed run ends with the same numbers as an uninterrupted one). A finished run is not
repeated.

A run directory belongs to one process and one config: ``run`` locks it for its whole length
(``varshift.rundir``), writes the config once to ``config.yaml`` before the first epoch, and refuses a rerun
whose config differs in a key that is not neutral (``varshift.vocabulary.is_neutral``). Nothing non-finite
is kept: a NaN or infinite loss, parameter, BN statistic or variance probe stops the run before its
checkpoint is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

import varshift
from varshift import theory
from varshift.bn import recalibrate_bn
from varshift.config import milestone_epochs
from varshift.data import DatasetInfo, Loaders, build_loaders
from varshift.io import CorruptFile, atomic_write_text, read_verified, write_verified
from varshift.models import build_model
from varshift.probes import measure_variance_shift
from varshift.progress import console_fallback, epoch_line, summary_table
from varshift.run_stops import ParentExited, TrainingDiverged
from varshift.rundir import locked, remove_stale_temporary_files
from varshift.tracking import RunRecorder, flatten, read_summary
from varshift.vocabulary import NEUTRAL_KEYS, is_neutral

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
LOSS_NAMES = {"train_loss": "the training loss", "test_loss": "the test loss", "val_loss": "the validation loss"}
SHOWN_PROBLEMS = 5

log = logging.getLogger(__name__)


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


def build_optimizer(model: nn.Module, optim: dict, device: torch.device) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                           nesterov=optim["nesterov"], weight_decay=optim["weight_decay"],
                           fused=device.type == "cuda")


def lr_factor(optim: dict, epochs: int):
    """The learning-rate multiplier of each epoch (0-based), for ``LambdaLR``."""
    milestones = milestone_epochs(optim, epochs)
    if optim["schedule"] == "multistep":
        return lambda e: optim["gamma"] ** sum(e >= m for m in milestones)
    if optim["schedule"] == "cosine":
        return lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs))
    return lambda e: 1.0


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over conv and linear weights (BN parameters and biases are left alone)."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(w.abs().sum() for w in weights)


def alignment_table(model: nn.Module):
    import pandas as pd

    rows = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            result = theory.weight_alignment(module.weight)
            rows.append({"layer": len(rows), "name": name, "d": result.d, "cos2": result.cos2,
                         "d_cos2": result.d_cos2})
    return pd.DataFrame(rows, columns=["layer", "name", "d", "cos2", "d_cos2"])


def non_finite_losses(row: dict) -> list[str]:
    return [f"{name} became {row[key]}" for key, name in LOSS_NAMES.items()
            if key in row and not math.isfinite(row[key])]


def non_finite_tensors(model: nn.Module) -> list[str]:
    """The parameters and buffers (BN running_mean, running_var, ...) of ``model`` that hold a NaN or inf."""
    tensors = {name: t for name, t in model.state_dict().items() if t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()  # one device sync
    return [f"{name} holds NaN or inf" for name, ok in zip(tensors, finite, strict=True) if not ok]


def non_finite_probe(table, stage: str) -> list[str]:
    rows = ~np.isfinite(table.select_dtypes("number")).all(axis=1)
    return [f"the variance probe ({stage}) of BN layer {name} holds NaN or inf" for name in table.loc[rows, "name"]]


def check_same_config(saved: dict, cfg: dict, source: Path) -> None:
    """Refuse ``cfg`` where it differs from the config ``saved`` in ``source`` in a key that is not neutral."""
    old, new = flatten(saved), flatten(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not is_neutral(k))
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{source} was written with another config ({details}); only {', '.join(NEUTRAL_KEYS)} "
                         "may change: resume with the same config or choose a new run directory (hydra.run.dir=...)")


def read_config(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CONFIG_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def load_checkpoint(path: Path) -> dict:
    """The state a ``Trainer`` saved in ``path``, after checking its content hash, with its tensors on the CPU
    (where the RNG states must be; ``load_state_dict`` moves the model's and the optimizer's to their device)."""
    try:
        payload = read_verified(path)
    except CorruptFile as error:
        raise CorruptFile(f"checkpoint {error}; delete it to start the run again") from None
    return torch.load(BytesIO(payload), map_location="cpu", weights_only=False)


def describe_hardware(hardware: dict) -> str:
    return f"{hardware['device']} with {hardware['threads']} torch threads"


class PreparedBatches:
    """A re-iterable view of a loader whose inputs are put in the training memory format; ``bar`` (a tqdm bar,
    optional) advances once for each batch a pass has used."""

    def __init__(self, loader, prepare, bar: tqdm | None = None):
        self.loader, self.prepare, self.bar = loader, prepare, bar

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield self.prepare(x), y
            # after the yield: a pass cut short by max_batches draws one batch more than it uses
            if self.bar is not None:
                self.bar.update()


class Trainer:
    """Trains one model from a plain, validated config (``varshift.config.to_plain`` + ``validate``)."""

    def __init__(self, cfg: dict, run_dir: Path, loaders: Loaders | None = None, *, parent_pid: int | None = None):
        """``loaders`` replaces the dataset of ``cfg`` (benchmarks pass synthetic data); with ``parent_pid``
        training stops (``ParentExited``) once this process is no longer that process's child."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        trainer = cfg["trainer"]
        self.device = resolve_device(trainer["device"])
        self.bf16 = switch_on(trainer["bf16"], self.device)
        self.channels_last = switch_on(trainer["channels_last"], self.device)
        if trainer["threads"] is not None:
            torch.set_num_threads(trainer["threads"])
        # what the config leaves open ("auto", the default thread count) and may differ on a resumption
        self.hardware = {"device": device_name(self.device), "threads": torch.get_num_threads()}
        self.parent_pid = parent_pid
        seed_everything(cfg["seed"], trainer["deterministic"])
        data = cfg["dataset"]
        self.loaders = loaders or build_loaders(
            data["name"], data["root"], batch_size=trainer["batch_size"],
            test_batch_size=trainer["test_batch_size"], device=self.device, seed=cfg["seed"],
            subset=data["subset"], test_subset=data["test_subset"], val_split=data["val_split"],
            download=data["download"], verify=data["verify"], info=DatasetInfo.from_config(data))
        info = self.loaders.info
        self.model = build_model(cfg["model"]["name"], num_classes=info.num_classes, in_channels=info.channels,
                                 dropout=cfg["dropout"], position=cfg["dropout"]["position"],
                                 **cfg["model"]["kwargs"]).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if trainer["compile"] else self.model
        self.optimizer = build_optimizer(self.model, cfg["optim"], self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_factor(cfg["optim"], trainer["epochs"]))
        self.recorder = RunRecorder(self.run_dir, cfg)
        self.epoch = 0
        self.best_val_acc = -1.0
        self.epochs_without_improvement = 0
        self.stopped_early = False
        self.best_test_acc = 0.0
        self.wall_time = 0.0
        self.saved_epoch = 0

    # -- checkpoints --
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "recorder": self.recorder.state_dict(),
                "best_val_acc": self.best_val_acc, "epochs_without_improvement": self.epochs_without_improvement,
                "stopped_early": self.stopped_early, "best_test_acc": self.best_test_acc,
                "wall_time": self.wall_time, "config": self.cfg, "hardware": self.hardware}

    def save_checkpoint(self) -> None:
        buffer = BytesIO()
        torch.save(self.state_dict(), buffer)
        write_verified(self.run_dir / CHECKPOINT, buffer.getvalue())
        self.saved_epoch = self.epoch

    def resume(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return False
        state = load_checkpoint(path)
        check_same_config(state["config"], self.cfg, path)
        if state["hardware"] != self.hardware:
            print(f"WARNING: {self.run_dir} ran until epoch {state['epoch']} on {describe_hardware(state['hardware'])} "
                  f"and resumes on {describe_hardware(self.hardware)}: other kernels round differently, so its "
                  "results may differ from an uninterrupted run's", file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.recorder.load_state_dict(state["recorder"])
        for key in ("epoch", "best_val_acc", "epochs_without_improvement", "stopped_early", "best_test_acc",
                    "wall_time"):
            setattr(self, key, state[key])
        self.saved_epoch = self.epoch
        return True

    def write_config(self) -> None:
        """``config.yaml``, the run directory's config: written once, before the first epoch."""
        path = self.run_dir / CONFIG_FILE
        if not path.exists():
            atomic_write_text(path, yaml.safe_dump(self.cfg, sort_keys=False))

    # -- stopping --
    def stop_if_diverged(self, problems: list[str]) -> None:
        """Raise ``TrainingDiverged`` naming ``problems`` (nothing when empty): no checkpoint of them is written."""
        if not problems:
            return
        more = len(problems) - SHOWN_PROBLEMS
        named = "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        kept = (f"keeps its last good checkpoint (epoch {self.saved_epoch})" if self.saved_epoch
                else "has no checkpoint yet")
        raise TrainingDiverged(
            f"training diverged in epoch {self.epoch}: {named}. The run stops and {kept} in {self.run_dir}. "
            f"Lower optim.lr (now {self.optimizer.param_groups[0]['lr']}) or the dropout rate, or switch "
            "trainer.bf16=off.")

    def stop_if_orphaned(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            raise ParentExited(
                f"the process that started this run (pid {self.parent_pid}) has exited; {self.run_dir} stops in "
                f"epoch {self.epoch} and keeps its checkpoint of epoch {self.saved_epoch}: rerun it to resume")

    # -- one pass --
    def bar(self, desc: str, batches=None, total: int | None = None) -> tqdm:
        """A progress bar on stderr, cleared when its pass ends; none with ``trainer.progress=false``."""
        return tqdm(batches, desc=desc, total=total, leave=False, unit="batch",
                    disable=not self.cfg["trainer"]["progress"])

    def pass_name(self, loader) -> str:
        if loader is self.loaders.test:
            return "test"
        return "validation" if loader is self.loaders.val else "training data, eval mode"

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def train_one_epoch(self) -> dict:
        self.model.train()
        loader = self.loaders.train
        loader.set_epoch(self.epoch)
        l1 = self.cfg["optim"]["l1"]
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for x, y in self.bar(f"epoch {self.epoch}/{self.cfg['trainer']['epochs']}", loader):
            self.stop_if_orphaned()
            with self.autocast():
                logits = self.forward(self.prepare(x))
                loss = F.cross_entropy(logits, y)
                objective = loss + l1 * l1_penalty(self.model) if l1 > 0 else loss
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            # accumulated on the device: no host synchronisation inside the step
            loss_sum += loss.detach() * y.numel()
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
        return {"train_loss": loss_sum.item() / seen, "train_acc": 100.0 * correct.item() / seen}

    @torch.no_grad()
    def evaluate(self, loader) -> tuple[float, float]:
        """Loss and accuracy (%) in eval mode."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for x, y in self.bar(self.pass_name(loader), loader):
            with self.autocast():
                logits = self.forward(self.prepare(x))
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
        return loss_sum.item() / seen, 100.0 * correct.item() / seen

    def training_pass(self, bar: tqdm | None = None) -> PreparedBatches:
        """The training images with their augmentation, unshuffled, as the model sees them in training:
        the paper's data for measuring the shift and for BN recalibration."""
        self.loaders.train_eval.set_epoch(self.epoch)
        return PreparedBatches(self.loaders.train_eval, self.prepare, bar)

    def training_pass_batches(self, max_batches: int | None) -> int:
        return len(self.loaders.train_eval) if max_batches is None else min(len(self.loaders.train_eval), max_batches)

    def measure_shift(self, stage: str):
        """The per-layer variance table (recorded under ``stage``); ``TrainingDiverged`` if it is not finite."""
        max_batches = self.cfg["probe"]["batches"]
        # measure_variance_shift passes the data twice: in eval mode, then in train mode
        total = 2 * self.training_pass_batches(max_batches)
        with self.bar(f"variance probe ({stage})", total=total) as bar, self.autocast():
            table = measure_variance_shift(self.model, self.training_pass(bar), max_batches=max_batches)
        self.stop_if_diverged(non_finite_probe(table, stage))
        self.recorder.log_variance(table, stage, self.epoch)
        return table

    def recalibrate(self) -> None:
        max_batches = self.cfg["probe"]["recalibrate_batches"]
        with self.bar("BN recalibration", total=self.training_pass_batches(max_batches)) as bar, self.autocast():
            recalibrate_bn(self.model, self.training_pass(bar), max_batches=max_batches)

    def train_eval_accuracy(self) -> float:
        return self.evaluate(self.training_pass())[1]

    # -- the run --
    def run_epoch(self) -> None:
        """Train one epoch, check it is finite, record it, checkpoint (with the early-stopping decision)."""
        self.epoch += 1
        start = time.perf_counter()
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **self.train_one_epoch()}
        seconds = time.perf_counter() - start
        row["test_loss"], row["test_acc"] = self.evaluate(self.loaders.test)
        if self.loaders.val is not None:
            row["val_loss"], row["val_acc"] = self.evaluate(self.loaders.val)
        self.stop_if_diverged(non_finite_losses(row) + non_finite_tensors(self.model))
        self.scheduler.step()
        row["seconds"] = seconds
        row["images_per_s"] = self.loaders.train.num_samples / seconds
        self.best_test_acc = max(self.best_test_acc, row["test_acc"])
        if self.loaders.val is not None:
            self.stopped_early = not self.update_early_stopping(row["val_acc"])
        every = self.cfg["probe"]["every"]
        if every and self.epoch % every == 0 and self.epoch < self.cfg["trainer"]["epochs"]:
            row["train_eval_acc"] = self.train_eval_accuracy()
            row["mean_shift"] = float(self.measure_shift("probe")["shift"].mean())
        self.wall_time += time.perf_counter() - start
        self.recorder.log_epoch(row)
        self.save_checkpoint()
        self.recorder.write_files()
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
        final = self.measure_shift("final")["shift"]
        summary = {"status": "complete", "epochs": self.epoch, "stopped_early": self.stopped_early,
                   "test_acc": test_acc, "test_error": 100.0 - test_acc, "best_test_acc": self.best_test_acc,
                   "train_eval_acc": train_eval_acc, "train_acc": self.recorder.epochs[-1]["train_acc"],
                   "mean_shift": float(final.mean()), "max_shift": float(final.max())}
        if self.cfg["probe"]["recalibrate"]:
            self.recalibrate()
            recal_acc = self.evaluate(self.loaders.test)[1]
            summary.update(test_acc_recalibrated=recal_acc, test_error_recalibrated=100.0 - recal_acc,
                           mean_shift_recalibrated=float(self.measure_shift("recalibrated")["shift"].mean()))
        self.recorder.write_alignment(alignment_table(self.model))
        self.recorder.write_files()
        self.wall_time += time.perf_counter() - start
        summary.update(wall_time_s=self.wall_time, **self.hardware, bf16=self.bf16,
                       channels_last=self.channels_last, versions=versions())
        self.recorder.write_summary(summary)
        return summary

    def run(self) -> dict:
        if self.resume():
            print(f"resuming {self.run_dir} after epoch {self.epoch}")
        self.write_config()
        self.recorder.start_wandb()
        exit_code = 1
        try:
            while not self.stopped_early and self.epoch < self.cfg["trainer"]["epochs"]:
                self.run_epoch()
            summary = self.finish()
            exit_code = 0
            log.info(f"{self.run_dir} complete:\n{summary_table(summary, self.training_images_per_s())}")
            return summary
        finally:
            self.recorder.finish_wandb(exit_code)


def versions() -> dict:
    import hydra
    import torchvision

    return {"varshift": varshift.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "hydra": hydra.__version__, "python": platform.python_version()}


def run(cfg: dict, run_dir: Path, *, stop_with_parent: bool = False) -> dict:
    """Train (or resume, or skip if complete) the run in ``run_dir``; return its summary.

    The run holds ``run_dir`` until it returns (``RunDirInUse`` for a second process). A config that differs
    from the directory's ``config.yaml`` is refused; a refusal or a skip changes no file. ``stop_with_parent``:
    stop (``ParentExited``, keeping the last checkpoint) once the process that called this one has exited, so
    that the workers of a killed multirun do not train on.
    """
    run_dir = Path(run_dir)
    parent_pid = os.getppid() if stop_with_parent else None
    with locked(run_dir):
        saved = read_config(run_dir)
        if saved is not None:
            check_same_config(saved, cfg, run_dir / CONFIG_FILE)
        summary = read_summary(run_dir)
        if summary is not None and summary.get("status") == "complete":
            print(f"{run_dir} is complete; skipping it (delete summary.json to run it again)")
            return summary
        remove_stale_temporary_files(run_dir)
        with console_fallback(logging.getLogger("varshift")):
            return Trainer(cfg, run_dir, parent_pid=parent_pid).run()
