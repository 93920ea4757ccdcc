"""Safe files: atomic writes, files that carry their own content hash, strict JSON.

A reader (or a rerun after a kill) never sees a half-written file; a damaged file that carries a
hash is named as such instead of being read; JSON is standard JSON (``null``, never ``NaN``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import numbers
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
HASH_HEADER = re.compile(rb"varshift-sha256 ([0-9a-f]{64}) (\d+)\n")


class CorruptFile(ValueError):
    """A file whose content does not match the hash it carries (damaged, or cut short)."""


def temporary_path(path: Path) -> Path:
    """The hidden temporary file an atomic write of ``path`` goes through (``.name.<random>.tmp``)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the mode a plain ``open`` gives (0o666 less the umask, so the group can read results), and a
    full disk is reported as such, naming the folder; the previous version of ``path`` is then left intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            raise OSError(error.errno, f"no space left on {path.parent} ({error.strerror}) while writing "
                                       f"{path.name}; its previous version is kept") from error
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


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
