"""Safe files: atomic writes, files that carry their own content hash, strict JSON, file-system faults in one line.

A reader (or a rerun after a kill) never sees a half-written file; a damaged file that carries a
hash is named as such instead of being read; JSON is standard JSON (``null``, never ``NaN``). A file-system
fault (no space, a read-only file system, no permission, a file where a folder should be) is told in one
sentence naming the operation, the path and what to do (:func:`file_fault`), so that every command line can
report it in one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import numbers
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

TMP_SUFFIX = ".tmp"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
HASH_HEADER = re.compile(rb"varshift-sha256 ([0-9a-f]{64}) (\d+)\n")
# What to do about each file-system fault a user can fix, and the operation to name when the caller did not say.
FAULT_ADVICE = {
    errno.ENOSPC: ("write to", "free space on that file system or choose a folder on another one"),
    errno.EDQUOT: ("write to", "free space within your quota or choose a folder on another file system"),
    errno.EROFS: ("write to", "choose a folder on a writable file system"),
    errno.EACCES: ("access", "check its permissions, or choose a folder you may write to"),
    errno.EPERM: ("access", "check its permissions, or choose a folder you may write to"),
    errno.ENOTDIR: ("use as a folder", "a part of that path is a file, not a folder: move the file away or choose "
                                       "another path"),
    errno.EEXIST: ("create", "something else is already there: move it away or choose another path"),
    errno.EISDIR: ("write to", "it is a folder: choose a file name"),
    errno.ENOENT: ("open", "it does not exist: check the path"),
}


class CorruptFile(ValueError):
    """A file whose content does not match the hash it carries (damaged, or cut short)."""


class DamagedFile(ValueError):
    """A file that cannot be read: cut short, or not the format it should be."""


class FileFault(OSError):
    """A file-system fault told in one sentence (``str``): the operation, the path, the cause and what to do.
    An ``OSError`` with the original ``errno``, so callers can still tell a full disk from a read-only one."""

    def __str__(self) -> str:
        return self.strerror


def file_fault(error: OSError, operation: str | None = None, path: str | Path | None = None,
               consequence: str = "") -> OSError:
    """``error`` as a :class:`FileFault` (``cannot <operation> <path>: <cause>; <consequence>; <advice>``) when it is
    a fault a user can fix; else ``error`` itself. ``operation`` and ``path`` default to the errno's usual
    operation and the error's own file name."""
    if isinstance(error, FileFault) or error.errno not in FAULT_ADVICE:
        return error
    usual, advice = FAULT_ADVICE[error.errno]
    path = path if path is not None else error.filename
    where = f" {path}" if path is not None else ""
    cause = error.strerror or os.strerror(error.errno)
    pieces = [f"cannot {operation or usual}{where}: {cause}", consequence, advice]
    return FileFault(error.errno, "; ".join(piece for piece in pieces if piece))


def fault_message(error: OSError) -> str | None:
    """The one-line message of ``error`` when it is a file-system fault a user can fix, else None."""
    fault = file_fault(error)
    return str(fault) if isinstance(fault, FileFault) else None


@contextlib.contextmanager
def told_as_fault(operation: str, path: str | Path) -> Iterator[None]:
    """Inside, an OS error a user can fix becomes a :class:`FileFault` naming ``operation`` and ``path``."""
    try:
        yield
    except OSError as error:
        fault = file_fault(error, operation, path)
        if fault is error:
            raise
        raise fault from error


def temporary_path(path: Path) -> Path:
    """The hidden temporary file an atomic write of ``path`` goes through (``.name.<random>.tmp``)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the mode a plain ``open`` gives (0o666 less the umask, so the group can read results). A write
    that fails leaves the previous version of ``path`` intact and no temporary file (where it can be removed); a
    file-system fault is raised as a :class:`FileFault` naming ``path`` (a full disk: its folder).
    """
    path = Path(path)
    with told_as_fault("create the folder", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        # A cleanup that fails (on a read-only file system even the unlink of a missing file does) must not
        # hide why the write failed.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        kept = "its previous version is kept" if path.exists() else ""
        if error.errno in NO_SPACE_ERRNOS:
            raise FileFault(error.errno, "; ".join(filter(None, [
                f"no space left on {path.parent} ({error.strerror}) while writing {path.name}", kept,
                "free space there or choose a folder on another file system"]))) from error
        fault = file_fault(error, "write", path, kept)
        if fault is error:
            raise
        raise fault from error
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def complete_text(path: Path) -> str:
    """The text of ``path``; DamagedFile when its last line has no end (every varshift file ends with one)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DamagedFile(f"{path.name} is not text ({error})") from None
    if not text.endswith("\n"):
        raise DamagedFile(f"{path.name} is empty" if not text else f"{path.name} is cut short (its last line has "
                                                                    "no end)")
    return text


def read_mapping(path: Path) -> dict:
    """A JSON or YAML file holding one mapping; DamagedFile when it is empty, cut short or not a mapping.

    A YAML file must end its last line (a YAML file cut short may still parse); a JSON mapping that parses is
    whole, and one that does not is cut short when its last line has no end.
    """
    is_json = path.suffix == ".json"
    text = path.read_text(errors="replace") if is_json else complete_text(path)
    if not text.strip():
        raise DamagedFile(f"{path.name} is empty")
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        if not text.endswith("\n"):
            raise DamagedFile(f"{path.name} is cut short (its last line has no end)") from None
        raise DamagedFile(f"{path.name} is damaged ({type(error).__name__}: {' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path.name} holds a {type(data).__name__}, not a mapping")
    return data


def finite_or_none(data):
    """``data`` with every NaN or infinite number replaced by ``None`` (JSON's ``null``), numpy numbers as floats."""
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    if isinstance(data, numbers.Real) and not isinstance(data, numbers.Integral):
        return float(data) if math.isfinite(data) else None
    return data


def strict_json(data, **kwargs) -> str:
    """Standard JSON (no ``NaN``/``Infinity``, which strict parsers reject): non-finite numbers become ``null``."""
    return json.dumps(finite_or_none(data), allow_nan=False, default=str, **kwargs)


def atomic_write_json(path: str | Path, data) -> Path:
    return atomic_write_text(path, strict_json(data, indent=2, sort_keys=True) + "\n")


def write_verified(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically behind a one-line header with its sha256 and length (see ``read_verified``)."""
    header = f"varshift-sha256 {hashlib.sha256(data).hexdigest()} {len(data)}\n".encode()

    def write(tmp: Path) -> None:
        with tmp.open("wb") as file:
            file.write(header)
            file.write(data)

    return atomic_write(path, write)


def read_verified(path: str | Path) -> bytes:
    """The data ``write_verified`` wrote to ``path``; ``CorruptFile`` when it is truncated or damaged."""
    with Path(path).open("rb") as file:
        header = file.readline(200)
        data = file.read()
    match = HASH_HEADER.fullmatch(header)
    if match is None:
        raise CorruptFile(f"{path} is truncated or corrupted (its content-hash header is missing or damaged)")
    digest, length = match[1].decode(), int(match[2])
    if len(data) < length:
        raise CorruptFile(f"{path} is truncated ({len(data)} of {length} bytes)")
    if len(data) > length or hashlib.sha256(data).hexdigest() != digest:
        raise CorruptFile(f"{path} is corrupted (sha256 mismatch)")
    return data
