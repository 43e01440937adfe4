"""Files that appear whole or not at all: records, markers, shards, reports, checkpoints.

A reader (the report, a sweep relaunched after a crash, a teammate on NFS) must never see a
half-written file, and a crash or a full disk must leave the earlier version intact: write to
a temporary file beside the target (same filesystem, so the rename is atomic), fsync, then
``os.replace``. Free of torch and of every project module, so that any layer may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def umask_mode(base: int = 0o666) -> int:
    """The mode ``open()`` (0o666) or ``mkdir`` (0o777) would give: ``base`` less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary stream whose content appears at ``path`` whole, or not at all; on any error
    ``path`` is untouched. The file gets the mode a plain ``open()`` would (the umask decides),
    not ``mkstemp``'s private 0600: teammates sharing a sweep or data folder must read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, umask_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text or bytes so that ``path`` is never seen half-written (see ``atomic_file``)."""
    with atomic_file(path) as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON so that ``path`` is never seen half-written, even after a crash."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True, default=str) + "\n"
    return write_atomic(path, text)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
