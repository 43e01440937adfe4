"""Cell leases: two overlapping launches of one sweep never run the same cell twice.

Two launches started together both plan before either has started a run, so both would run
every cell. Hence, before a job is handed to the launcher, its sweeper creates
``<records root>/.leases/<config_id>.json`` (who holds it, since when) exclusively: written to a
private file and hard-linked to its name, which fails if the name exists, atomically, on a local
disk and on NFS alike (``O_EXCL`` where links are not supported). Of two launches, exactly one
gets each cell; the other reports it as running elsewhere.

A lease is released once its launch has collected the job's outcome. One left behind by a launch
that died has *expired* and may be taken over: its process is gone (knowable on its own host),
or it is older than ``hydra.sweeper.lease_timeout_hours`` (the only evidence from another
machine). Taking over renames the expired file away first (one renamer wins), then takes it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import atomic, provenance

FOLDER = ".leases"
DEFAULT_TIMEOUT_HOURS = 72.0  # longer than any one paper run on one GPU (350 epochs, ~10 h)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its file says."""

    host: str | None
    pid: int | None
    pid_start: Any
    sweep_dir: str | None
    since: float

    def describe(self) -> str:
        where = f"{self.host}, pid {self.pid}" if self.host else "an unknown process"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"running elsewhere: leased by {where} since {since} ({self.sweep_dir or '?'})"

    @property
    def ours(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def expired(self, timeout_hours: float) -> bool:
        """Whether the lease may be taken over: it is too old, or its holder, on this host (another
        machine's process cannot be seen from here), is gone."""
        return time.time() - self.since > timeout_hours * 3600 or (
            self.host == socket.gethostname() and not self.ours
            and not provenance.process_alive(self.host, self.pid, self.pid_start))


def lease_path(root: Path, config_id: str) -> Path:
    return Path(root) / FOLDER / f"{config_id}.json"


def read_holder(path: Path) -> Holder | None:
    """The lease at ``path``; None when there is none. A file being written reads as a fresh
    lease of an unknown holder (it never expires before the timeout)."""
    data = atomic.read_json(path) or {}
    since, pid = data.get("leased_time"), data.get("pid")
    try:
        since = since if isinstance(since, int | float) else path.stat().st_mtime
    except OSError:
        return None
    return Holder(data.get("host"), pid if isinstance(pid, int) else None, data.get("pid_start"),
                  data.get("sweep_dir"), float(since))


def _create(path: Path, content: dict[str, Any]) -> bool:
    """Create ``path`` holding ``content`` if it does not exist; False if it does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    atomic.write_json_atomic(private, content)
    try:
        os.link(private, path)  # exclusive and atomic; the lease appears whole
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    finally:
        private.unlink(missing_ok=True)
    try:  # a filesystem without hard links: O_EXCL (a reader may see it empty for a moment)
        with open(path, "x", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2)
    except FileExistsError:
        return False
    return True


def take(root: Path, config_id: str, sweep_dir: Path,
         timeout_hours: float = DEFAULT_TIMEOUT_HOURS) -> Holder | None:
    """Lease ``config_id`` to this process; None when taken, else the live holder."""
    path, pid = lease_path(root, config_id), os.getpid()
    content = {"config_id": config_id, "host": socket.gethostname(), "pid": pid,
               "pid_start": provenance.process_start(pid), "sweep_dir": str(sweep_dir),
               "leased_time": time.time()}
    for _ in range(3):  # an expired lease moved aside, then taken: once more if another took it
        if _create(path, content):
            return None
        holder = read_holder(path)
        if holder is None:
            continue  # released between the two looks
        if holder.ours:  # the same cell twice in one grid
            return None
        if not holder.expired(timeout_hours):
            return holder
        # Move the expired lease out of the way; a concurrent taker may win, which is fine.
        aside = path.with_name(f".{path.name}.expired.{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue  # another launch moved it first
        if read_holder(aside) != holder:  # it was replaced between the check and the rename
            with contextlib.suppress(OSError):  # put the fresh lease back (unless another took it)
                os.link(aside, path)
        aside.unlink(missing_ok=True)
    return read_holder(path) or Holder(None, None, None, None, time.time())


def held_elsewhere(root: Path, config_ids: Iterable[str],
                   timeout_hours: float = DEFAULT_TIMEOUT_HOURS) -> dict[str, Holder]:
    """The live leases of other launches among ``config_ids``, for the plan to show (the launch
    still takes each cell's lease when it gets to it): one listing, then the leased cells only."""
    present = {path.stem for path in (Path(root) / FOLDER).glob("*.json")}  # none: no folder
    held = {}
    for config_id in sorted(set(config_ids) & present):
        holder = read_holder(lease_path(root, config_id))
        if holder is not None and not holder.ours and not holder.expired(timeout_hours):
            held[config_id] = holder
    return held


def release(root: Path, config_id: str) -> None:
    """Drop this process's lease on ``config_id`` (another process's is left alone)."""
    path = lease_path(root, config_id)
    holder = read_holder(path)
    if holder is not None and holder.ours:
        path.unlink(missing_ok=True)
