"""One process per run directory: an exclusive lock, removal of what a killed process left behind, and the
run's own files read back (``config.yaml``, ``summary.json``) with one line for a damaged one.

Two processes training in one run directory (a double submit, a relaunch while orphaned workers still run)
would interleave its checkpoint and records. ``locked`` lets one in and fails the other at once, naming the
process that holds the directory. The lock is ``fcntl.flock`` on ``<run_dir>/.lock``: the kernel releases it
when its holder dies, even by ``kill -9``, so a stale file never blocks a rerun.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from varshift.errors import RunDirInUse
from varshift.identity import CONFIG_FILE, SUMMARY_FILE
from varshift.io import TMP_SUFFIX, DamagedFile, read_mapping, told_as_fault

LOCK_FILE = ".lock"
# The top-level keys every varshift config.yaml has: a config.yaml without them belongs to another program.
CONFIG_KEYS = ("seed", "dataset", "model", "dropout", "optim", "trainer")
RECOVERY = {
    CONFIG_FILE: "move the folder away to keep it and choose another run directory, or delete {path} to train "
                 "in it again",
    SUMMARY_FILE: "delete {path} to finish the run again from its checkpoint, or move the folder away to keep it",
}


def read_run_file(run_dir: Path, name: str) -> dict | None:
    """The mapping in ``run_dir/name`` (``config.yaml`` or ``summary.json``), None when there is none.

    Raises ValueError naming the file, what is wrong with it and how to recover, when it is damaged (empty, cut
    short, not a mapping) or, for ``config.yaml``, not a varshift config.
    """
    path = Path(run_dir) / name
    if not path.exists():
        return None
    try:
        data = read_mapping(path)
    except DamagedFile as error:
        raise ValueError(f"{path}: {error}; {RECOVERY[name].format(path=path)}") from None
    missing = [key for key in CONFIG_KEYS if key not in data] if name == CONFIG_FILE else []
    if missing:
        raise ValueError(f"{path} is not the config of a varshift run (it has no {', '.join(missing)}); "
                         f"{RECOVERY[name].format(path=path)}")
    return data


def holder_description(text: str) -> str:
    """``"123 node7 2024-05-01T10:00:00+00:00"`` (what ``locked`` writes) -> a phrase naming that process."""
    fields = text.split()
    if len(fields) != 3:
        return "another process (it has not written its pid yet)"
    pid, host, started = fields
    return f"process {pid} (started {started} on {host})"


def is_same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def acquire(run_dir: Path) -> int | None:
    """The descriptor of the locked ``.lock`` file; ``None`` where the file system cannot lock (with a warning)."""
    path = run_dir / LOCK_FILE
    while True:
        with told_as_fault("create the lock file", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace")
            os.close(fd)
            raise RunDirInUse(f"run directory {run_dir} is in use by {holder_description(holder)}; two processes "
                              "in one run directory would mix its checkpoint and records. Wait for it to end, or "
                              "stop it and rerun to resume.") from None
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            print(f"WARNING: {run_dir} is on a file system without file locks ({error.strerror}); nothing stops "
                  "a second process from training in it at the same time", file=sys.stderr)
            return None
        # The holder removes the file when it ends: a file locked after that removal is not the lock any more.
        if is_same_file(fd, path):
            return fd
        os.close(fd)


@contextlib.contextmanager
def locked(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively for this process, or raise ``RunDirInUse`` naming the holder."""
    run_dir = Path(run_dir)
    with told_as_fault("create the run directory", run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    fd = acquire(run_dir)
    if fd is None:
        yield
        return
    try:
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {started}\n".encode(), 0)
        yield
    finally:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)


def remove_stale_temporary_files(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files of atomic writes that a killed process left (only with the lock held)."""
    stale = sorted(Path(run_dir).glob(f".*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
