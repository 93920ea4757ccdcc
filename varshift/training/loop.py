"""One pass over the data: :func:`train_one_epoch` and :func:`evaluate`, plain functions of a model, a loader and
an optimiser, with a progress bar named by the caller.

Sums are accumulated on the device, so a step never waits for the host; the totals are read once, at the end.
With several processes, each passing its share of the data (data-parallel training), ``gather`` collects every
process's totals (:meth:`varshift.training.distributed.Group.gather`): each process returns the numbers of the whole
data, added in the order of the ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from varshift.bn import Gather, model_device
from varshift.training.optim import l1_penalty


def progress_bar(label: str, batches: Iterable | None = None, total: int | None = None, *, enabled: bool = True):
    """A progress bar on stderr, cleared when its pass ends."""
    return tqdm(batches, desc=label, total=total, leave=False, unit="batch", disable=not enabled)


def autocast(model: nn.Module, bf16: bool):
    """bf16 autocast on the model's device, or nothing."""
    if bf16:
        return torch.autocast(model_device(model).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def added(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals of every process (``parts``, in rank order) added up, key by key; None where a process has none."""
    totals = {}
    for key in parts[0]:
        values = [part[key] for part in parts if part[key] is not None]
        totals[key] = sum(values[1:], values[0]) if values else None
    return totals


def every_process(totals: dict[str, Any], gather: Gather | None) -> list[dict[str, Any]]:
    """``totals`` of every process, in rank order (this process's alone without ``gather``)."""
    return [totals] if gather is None else gather(totals)


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, *, label: str,
                    l1: float = 0.0, bf16: bool = False, progress: bool = True,
                    before_step: Callable[[], None] | None = None, gather: Gather | None = None) -> dict:
    """Train ``model`` once over ``loader``; return the epoch's mean ``train_loss`` and ``train_acc`` (%).

    ``l1`` adds that multiple of the L1 norm of the conv and linear weights to the loss; ``before_step`` is called
    before each batch (a check that may stop the run); ``gather``: see the module's docstring.
    """
    model.train()
    device = model_device(model)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for x, y in progress_bar(label, loader, enabled=progress):
        if before_step is not None:
            before_step()
        with autocast(model, bf16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            objective = loss + l1 * l1_penalty(model) if l1 > 0 else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
    totals = added(every_process({"loss": loss_sum.item(), "correct": correct.item(), "seen": seen}, gather))
    return {"train_loss": totals["loss"] / totals["seen"], "train_acc": 100.0 * totals["correct"] / totals["seen"]}


TOP_K = 5  # top-5 accuracy, ImageNet's second metric, for a network of more than TOP_K classes


class Evaluation(NamedTuple):
    """What :func:`evaluate` measures: mean loss, accuracy (%), with more than ``TOP_K`` classes the top-5
    accuracy (%) (the share of images whose label is among the five largest logits), and on request the accuracy
    (%) of each class, a list indexed by label (NaN for a class without images)."""

    loss: float
    acc: float
    top5_acc: float | None = None
    per_class: list[float] | None = None


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, label: str, bf16: bool = False, progress: bool = True,
             per_class: bool = False, gather: Gather | None = None) -> Evaluation:
    """Loss, accuracy, top-5 accuracy and (``per_class``) the accuracy of each class of ``model`` in eval mode
    over ``loader`` (``gather``: see the module's docstring)."""
    model.eval()
    device = model_device(model)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    correct_top5 = torch.zeros((), device=device, dtype=torch.int64)
    counts = ClassCounts(device) if per_class else None
    seen, classes = 0, 0
    for x, y in progress_bar(label, loader, enabled=progress):
        with autocast(model, bf16):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        hits = logits.argmax(1) == y
        correct += hits.sum()
        classes = logits.shape[1]
        if classes > TOP_K:
            correct_top5 += (logits.topk(TOP_K, dim=1).indices == y[:, None]).any(dim=1).sum()
        if counts is not None:
            counts.add(y, hits, classes)
        seen += y.numel()
    parts = every_process({"loss": loss_sum.item(), "correct": correct.item(), "top5": correct_top5.item(),
                           "seen": seen, "classes": classes,
                           "class_counts": None if counts is None else counts.on_cpu()}, gather)
    classes = max(part["classes"] for part in parts)  # 0 for a process that had no batch
    totals = added(parts)
    seen = totals["seen"]
    top5_acc = 100.0 * totals["top5"] / seen if classes > TOP_K else None
    return Evaluation(totals["loss"] / seen, 100.0 * totals["correct"] / seen, top5_acc,
                      None if counts is None else ClassCounts.accuracy(totals["class_counts"]))


class ClassCounts:
    """Images and correct predictions per class, summed on the device (``index_add_``, no host sync per batch)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seen: torch.Tensor | None = None
        self.correct: torch.Tensor | None = None

    def add(self, labels: torch.Tensor, hits: torch.Tensor, num_classes: int) -> None:
        if self.seen is None:
            self.seen = torch.zeros(num_classes, device=self.device, dtype=torch.int64)
            self.correct = torch.zeros_like(self.seen)
        self.seen.index_add_(0, labels, torch.ones_like(labels, dtype=torch.int64))
        self.correct.index_add_(0, labels, hits.to(torch.int64))

    def on_cpu(self) -> torch.Tensor | None:
        """Images and correct predictions per class, ``[2, classes]`` on the CPU (None before any image)."""
        return None if self.seen is None else torch.stack([self.seen, self.correct]).cpu()

    @staticmethod
    def accuracy(counts: torch.Tensor) -> list[float]:
        """Accuracy (%) per class of ``counts`` (:meth:`on_cpu`); NaN where the data held no image of the class."""
        seen, correct = counts.double()
        return (100.0 * correct / seen).tolist()


class CountedPasses:
    """A re-iterable view of ``batches`` that advances ``bar`` once for each batch a pass has used (the variance
    probe passes its data twice, BN recalibration once)."""

    def __init__(self, batches, bar: tqdm):
        self.batches, self.bar = batches, bar

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield batch
            # after the yield: a pass cut short by max_batches draws one batch more than it uses
            self.bar.update()
