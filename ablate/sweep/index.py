"""Where a sweep name's earlier runs are, without reading them all on every launch.

A relaunch must know every run under the records root (``sweeps/<name>``), and reading every
record, or globbing a deep tree, is the slow part on a cluster's shared filesystem. So the root
keeps an index, ``.ablate/run-index.json``: for each run directory, its modification time and
what ``state.read_run`` found there.

A launch lists the folders above the runs (a few: the sweep folders) and trusts a run's entry
only while its directory is unchanged and its record is the file it read (same size and
modification time): a ``stat`` each, no read. Every way a run can change touches its directory's
time (records and start markers are renamed into it, a first checkpoint creates
``checkpoints/``, a deleted record removes an entry), from whichever machine; a record edited in
place is caught by its own size and time. Runs that can change without any of that (started,
no record yet) are read on every launch. An unusable index is rebuilt by a scan; two launches
writing it at once lose one's update, never correctness. Run directories (checkpoints, configs,
W&B files) and hidden folders (``.submitit``, ``.hydra``, this index) are not descended into.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import atomic, records
from ablate.status import Status
from ablate.sweep.estimate import Measured
from ablate.sweep.state import PastRun, read_run

log = logging.getLogger(__name__)

INDEX_FILE = Path(".ablate") / "run-index.json"  # in a folder of its own: writing it leaves the
VERSION = 3  # root's modification time alone
# A directory modified this recently may be modified again within the same timestamp tick
# (1-2 s on coarse filesystems): its entry is kept but checked again by the next launch.
SETTLE_NS = 5 * 10**9


@dataclass
class _Walk:
    """One pass over the tree: the index read before it, the index it leaves, what it found."""

    root: Path
    old_runs: Mapping[str, Any]
    now_ns: int = field(default_factory=time.time_ns)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    read: int = 0  # run directories whose files were read


def _record_stamp(directory: Path) -> list[int] | None:
    """Size and modification time of a run's record: an in-place edit changes them, not the
    directory's time."""
    try:
        stat = os.stat(directory / records.RESULT_FILE)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _entry(run: PastRun | None, mtime_ns: int | None, directory: Path) -> dict[str, Any]:
    entry = {"mtime_ns": mtime_ns, "record": _record_stamp(directory), "config_id": None}
    if run is not None:  # else files of no known config (a damaged record, no marker)
        entry.update(
            config_id=run.config_id, state=run.state,
            checkpoint=str(run.checkpoint.relative_to(run.directory)) if run.checkpoint else None,
            error=run.error, measured=run.measured.as_dict() if run.measured else None,
            time=run.time, settled=run.settled, code=run.code)
    return entry


def _past_run(directory: Path, entry: Mapping[str, Any]) -> PastRun | None:
    if entry["config_id"] is None:
        return None
    measured = Measured.from_dict(entry["measured"]) if entry["measured"] else None
    checkpoint = directory / entry["checkpoint"] if entry["checkpoint"] else None
    return PastRun(directory, str(entry["config_id"]), Status(entry["state"]), checkpoint,
                   entry["error"], measured, float(entry["time"]), bool(entry["settled"]),
                   entry.get("code"))


def _visit(walk: _Walk, rel: str) -> None:
    path = walk.root / rel  # rel "" is the root itself
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        return  # removed since its parent was listed
    known = walk.old_runs.get(rel)
    if (known is not None and known["mtime_ns"] == mtime_ns and known.get("settled", True)
            and known.get("record") == _record_stamp(path)):
        walk.runs[rel] = dict(known)
        return
    try:
        with os.scandir(path) as listing:
            entries = list(listing)
    except OSError:
        return
    names = {entry.name for entry in entries}
    if records.START_FILE in names or records.RESULT_FILE in names:
        walk.read += 1
        settled = mtime_ns if walk.now_ns - mtime_ns > SETTLE_NS else None
        walk.runs[rel] = _entry(read_run(path), settled, path)
        return
    for child in sorted(entry.name for entry in entries
                        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)):
        _visit(walk, f"{rel}/{child}" if rel else child)


def _load(root: Path) -> dict[str, Any] | None:
    """The run entries of the index under ``root``; None if it is missing or unusable."""
    data = atomic.read_json(root / INDEX_FILE) or {}
    runs = data.get("runs") if data.get("version") == VERSION else None
    try:  # every entry must have what _visit and _past_run read: else the whole index is rebuilt
        for entry in runs.values():  # no runs, or not a mapping: AttributeError
            assert "mtime_ns" in entry
            _past_run(root, entry)
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return runs


def _found(walk: _Walk) -> dict[str, list[PastRun]]:
    found: dict[str, list[PastRun]] = {}
    for rel, entry in walk.runs.items():
        run = _past_run(walk.root / rel, entry)
        if run is not None:
            found.setdefault(run.config_id, []).append(run)
    return found


def scan(root: Path) -> dict[str, list[PastRun]]:
    """Every run under ``root``, grouped by config id, read from disk (no index)."""
    walk = _Walk(root, {})
    if root.is_dir():
        _visit(walk, "")
    return _found(walk)


def past_runs(root: Path) -> dict[str, list[PastRun]]:
    """Every run under ``root``, grouped by config id: the index, checked against the disk and
    brought up to date (or rebuilt by a scan when it is missing or unusable)."""
    if not root.is_dir():
        return {}
    runs = _load(root)
    walk = _Walk(root, runs or {})
    _visit(walk, "")
    if runs is None or walk.runs != runs:
        try:
            atomic.write_json_atomic(root / INDEX_FILE, {
                "version": VERSION, "written_by": "ablate.sweep.index", "runs": walk.runs})
        except OSError as error:  # a read-only share: the next launch scans again, nothing worse
            log.warning("could not write the run index %s: %s", root / INDEX_FILE, error)
    how = "scanned (no usable index)" if runs is None else "index checked"
    log.debug("%s: %s, %d run directories, %d read", root, how, len(walk.runs), walk.read)
    return _found(walk)
