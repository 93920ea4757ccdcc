"""Data-parallel training: the processes that train one run, as a torch.distributed group.

:func:`start` joins the group the launcher's environment describes (:mod:`varshift.processes`: torchrun, or a
submitit job of several tasks), nccl between GPUs and gloo between CPU processes, each process on the GPU of its
local rank. Every collective waits at most ``trainer.collective_timeout_s``: a process that dies makes the others
stop with an error instead of hanging (torchrun's agent also stops the others as soon as one of its processes
fails). Objects and flags travel through a gloo group, so that reading them never waits for a GPU.

A run of one process is a :class:`Group` of one, whose methods do what the run did before data-parallel training
existed and no collective: its results are those of varshift without it.
"""

from __future__ import annotations

import atexit
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from varshift.checks import refuse
from varshift.data.shards import Shard
from varshift.errors import as_echo
from varshift.processes import Ranks, environment_ranks
from varshift.training.setup import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """The processes of one run, seen from one of them (``ranks``), which computes on ``device``."""

    ranks: Ranks
    device: torch.device
    control: Any = None  # the gloo group for objects and flags (None: one process)

    @property
    def main(self) -> bool:
        return self.ranks.main

    @property
    def distributed(self) -> bool:
        return self.ranks.distributed

    def shard(self) -> Shard:
        """This process's part of each pass over the data."""
        return Shard(self.ranks.rank, self.ranks.world_size)

    def gather(self, value: Any) -> list:
        """``value`` of every process, in rank order (``[value]`` for one process)."""
        if not self.distributed:
            return [value]
        values = [None] * self.ranks.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in some process."""
        if not self.distributed:
            return flag
        raised = torch.tensor(int(flag))
        dist.all_reduce(raised, op=dist.ReduceOp.MAX, group=self.control)
        return bool(raised)

    def shared(self, decide: Callable[[], T]) -> T:
        """What ``decide()`` returns or raises in rank 0, in every process: rank 0 decides (it reads and prepares the
        run directory), the others follow, raising rank 0's exception as an echo (rank 0 reports it)."""
        if not self.distributed:
            return decide()
        outcome: list = [None]
        if self.main:
            try:
                outcome[0] = (True, decide())
            except Exception as error:
                outcome[0] = (False, portable(error))
                dist.broadcast_object_list(outcome, src=0, group=self.control)
                raise
            dist.broadcast_object_list(outcome, src=0, group=self.control)
            return outcome[0][1]
        dist.broadcast_object_list(outcome, src=0, group=self.control)
        succeeded, value = outcome[0]
        if succeeded:
            return value
        raise as_echo(value)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Every process takes rank 0's buffers of ``module`` (its BN statistics, which each process updates from its
        own slices unless they are synchronised): the model every process holds is then the one rank 0 checkpoints."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def portable(error: Exception) -> Exception:
    """``error``, or where it cannot travel to another process (pickle), a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def process_device(name: str, ranks: Ranks) -> torch.device:
    """``trainer.device`` for this process: with several, each takes the GPU of its local rank."""
    device = resolve_device(name)
    if not ranks.distributed or device.type != "cuda":
        return device
    if device.index is not None:
        refuse("config trainer.device", name, "auto or cuda when several processes train together: each takes the "
                                               "GPU of its local rank")
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())


_started: list[Group] = []  # the group of this process, once started (a torchrun sweep trains its runs in one)


def start(trainer: dict) -> Group:
    """This process's group for a run with the trainer config ``trainer``, joined the first time (module docstring)."""
    ranks = environment_ranks()
    device = process_device(trainer["device"], ranks)
    if not ranks.distributed:
        return Group(ranks, device)
    if _started:
        if _started[0].device != device:
            refuse("config trainer.device", trainer["device"],
                   f"{_started[0].device}, as the runs before it in these processes")
        return _started[0]
    timeout = timedelta(seconds=trainer["collective_timeout_s"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
        control = dist.new_group(backend="gloo", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
        control = dist.group.WORLD
    atexit.register(dist.destroy_process_group)
    _started.append(Group(ranks, device, control))
    return _started[0]
