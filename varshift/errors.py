"""The errors varshift raises for what a user can fix or has to know, apart from the modules that raise them so
that the command lines can name them without importing torch (``varshift.user_errors`` reports them in one line).
"""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for and could not be downloaded."""


class DatasetCorruptedError(OSError):
    """A dataset's files are there but damaged: a checksum, the format, a size or a label is wrong."""


class RunDirInUse(RuntimeError):
    """Another process holds the run directory."""


class TrainingDiverged(FloatingPointError):
    """A loss, a parameter, a BN statistic or a variance probe became NaN or infinite."""


class ParentExited(RuntimeError):
    """The process that started the run has exited (the run was started with ``stop_with_parent``)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; it keeps the checkpoint of its last complete epoch and resumes from it
    when rerun in the same directory. A KeyboardInterrupt, so that it ends the run the way Ctrl-C does."""


ECHO = "varshift_echo"


def as_echo(error: BaseException) -> BaseException:
    """``error`` as a process of a data-parallel run other than rank 0 raises it when rank 0 raises it too (rank 0
    decided it, or every process reached it together): rank 0 reports it, the others end with it silently."""
    setattr(error, ECHO, True)
    return error


def is_echo(error: BaseException) -> bool:
    return getattr(error, ECHO, False)
