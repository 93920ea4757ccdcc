"""Which processes train one run together, read from the launcher's environment: nothing is set by hand.

* ``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` (with
  ``MASTER_ADDR`` and ``MASTER_PORT``, where rank 0 waits for the others).
* A job of several tasks started by submitit (``hydra/launcher=slurm_ddp`` on SLURM, or ``submitit_local`` with
  ``hydra.launcher.tasks_per_node``) has its ranks in SLURM's (or submitit's) environment: submitit's
  ``TorchDistributedEnvironment`` exports them under torch's names, so that both launchers look the same from here.
* Anything else is one process, rank 0 of 1: a run as varshift has always trained it.

This module imports no torch: the Hydra callbacks ask it which process they run in. :func:`launch_time` gives every
process of a torchrun launch the same clock reading for the run directory's name (``${launch_time:...}`` in
``conf/config.yaml``), so that all of them compose one ``hydra.run.dir``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

TORCHRUN_MARKER = "TORCHELASTIC_RUN_ID"  # torchrun's agent sets it in the environment of every process it starts
LAUNCH_TIME_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ``world_size`` processes of one run: ``rank`` among all of them,
    ``local_rank`` among the ``local_world_size`` on this machine (the GPU it takes)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run directory, its checkpoints, its report and wandb."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def in_submitit_job_of_several_tasks() -> bool:
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    from submitit import JobEnvironment

    return JobEnvironment().num_tasks > 1


def environment_ranks() -> Ranks:
    """The ranks of this process (rank 0 of 1 without a launcher that starts several). In a submitit job of several
    tasks, exports torch's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...) first; CUDA_VISIBLE_DEVICES is
    left as SLURM set it (a task takes the GPU of its local rank)."""
    if "WORLD_SIZE" not in os.environ and in_submitit_job_of_several_tasks():
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    world_size = int(os.environ["WORLD_SIZE"])
    return Ranks(rank=int(os.environ.get("RANK", 0)), world_size=world_size,
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                 local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


def launched_by_torchrun() -> bool:
    return TORCHRUN_MARKER in os.environ


def shared_launch_timestamp() -> float:
    """The time of this torchrun launch: the first process's clock reading, shared through the agent's key-value store
    (one value per restart of the group)."""
    now = time.time()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return now
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=LAUNCH_TIME_TIMEOUT)
    key = f"varshift/launch_time/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return float(store.compare_set(key, "", repr(now)))  # the first process to ask sets it; the others read it


_torchrun_launch: list[float] = []  # a process of torchrun belongs to one launch: its time, once asked


def launch_time(pattern: str) -> str:
    """The resolver ``${launch_time:%Y-%m-%d_%H-%M-%S}`` (registered with OmegaConf's cache, as Hydra's ``now``): the
    time now in ``pattern``, or under torchrun the launch's (:func:`shared_launch_timestamp`)."""
    if not launched_by_torchrun():
        return datetime.now().strftime(pattern)
    if not _torchrun_launch:
        _torchrun_launch.append(shared_launch_timestamp())
    return datetime.fromtimestamp(_torchrun_launch[0]).strftime(pattern)
