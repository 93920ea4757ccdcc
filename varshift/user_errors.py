"""How varshift's commands report a user's mistake: one line on stderr, ``<prog>: error: <message>``, and exit
status 2, as argparse does; the traceback instead when asked for (``--debug``, ``HYDRA_FULL_ERROR=1``).

A user's mistake: a bad config or override (``ValueError``, Hydra's composition errors), missing or damaged
data, a run directory that another process holds, a SLURM launcher where SLURM is missing, and a file-system
fault (no space, a read-only file system, no permission, a file where a folder should be: one line naming the
operation, the path and what to do, :func:`varshift.io.file_fault`).

A run that stops itself (its training diverged, or the process that started it exited) is reported the same
way with exit status 1: its message already says what went bad, what was kept and what to do.

In a job of a sweep the line is printed and the job ends instead of the process, so that the sweep goes on to
its next job. In data-parallel training the processes other than rank 0 end silently with what rank 0 reports
(:func:`varshift.errors.as_echo`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from varshift.errors import (
    DatasetCorruptedError,
    DatasetNotFoundError,
    ParentExited,
    RunDirInUse,
    TrainingDiverged,
    is_echo,
)
from varshift.io import fault_message

USER_ERRORS = (ValueError, DatasetNotFoundError, DatasetCorruptedError, RunDirInUse, OmegaConfBaseException)
RUN_STOPS = (TrainingDiverged, ParentExited)
# In the environment, so that the jobs a launcher starts in other processes see it too.
DEBUG_ENV = "VARSHIFT_DEBUG"


def request_tracebacks(requested: bool) -> None:
    """Show the tracebacks of user errors, here and in the processes started from here, when ``requested``
    (``--debug``) or when ``HYDRA_FULL_ERROR=1``."""
    if requested or os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ[DEBUG_ENV] = "1"


def hydra_message(err: HydraException) -> str:
    """Hydra's report (sentences, an indented list, the cause below) in one line."""
    text = str(err).split("Config search path:")[0]
    if isinstance(err.__cause__, OmegaConfBaseException):  # its first line; the others name the schema class
        text += "\n" + str(err.__cause__).splitlines()[0]
    pieces = []
    for line in filter(str.strip, text.splitlines()):
        if line.startswith("\t") and pieces:  # an item of the list the previous line announced
            pieces[-1] += (" " if pieces[-1].endswith(":") else ", ") + line.strip()
        else:
            pieces.append(line.strip().rstrip("."))
    return re.sub(r"\s+", " ", "; ".join(pieces))


def user_message(err: Exception) -> str | None:
    """The message to show for ``err`` if it is a user's mistake, else None."""
    if isinstance(err, HydraException):
        return hydra_message(err)
    if isinstance(err, USER_ERRORS):
        return str(err)
    if isinstance(err, OSError) and (fault := fault_message(err)) is not None:
        return fault
    if isinstance(err, RuntimeError) and "srun" in str(err) and shutil.which("srun") is None:  # submitit's check
        return (f"{err} (hydra/launcher=slurm submits with SLURM's sbatch and srun, which are not on PATH here: "
                "launch from a SLURM login node, or run the sweep on this machine with hydra/launcher=local)")
    return None


@contextlib.contextmanager
def reported_user_errors(prog: str, in_sweep_job: bool = False) -> Iterator[None]:
    """A user's mistake inside ends the process: one line on stderr, exit status 2 (1 for a run that stopped).
    With ``in_sweep_job`` it ends the block instead (the line, then nothing raised): the job of the sweep is over,
    and the sweep goes on."""
    try:
        yield
    except Exception as err:
        message, status = user_message(err), 2
        if message is None and isinstance(err, RUN_STOPS):
            message, status = str(err), 1
        if message is None or os.environ.get(DEBUG_ENV) == "1":
            raise
        if not is_echo(err):  # another process of a data-parallel run reports it
            print(f"{prog}: error: {message}", file=sys.stderr)
        if not in_sweep_job:
            raise SystemExit(status) from None
