"""What earlier launches of a sweep left behind, and what a new launch should do with each run.

A run leaves up to three things in its directory: ``started.json`` (the start marker, written
when it starts), ``checkpoints/last.ckpt`` (after each epoch) and ``result.json`` (the record,
when it ends, whatever happened). Runs are matched to the grid by ``config_id``, the hash of their
effective config, never by directory names or job numbers: the same grid relaunched with its
axes in another order, or with other job numbers, still finds its finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import atomic, provenance, records
from ablate.status import Action, Status
from ablate.sweep.estimate import Measured, calibration_point


@dataclass(frozen=True)
class PastRun:
    """One directory of an earlier launch, as found on disk."""

    directory: Path
    config_id: str
    state: Status
    checkpoint: Path | None
    error: str | None
    measured: Measured | None  # a finished run's wall time and work, to calibrate estimates
    time: float  # when it last changed: for picking the newest of several
    # Its state comes from its record, which no later event changes (a new attempt writes a
    # new start marker first): the run index may trust it until its directory changes.
    settled: bool = False
    code: dict[str, Any] | None = None  # git_commit, git_source, git_dirty of its record


def read_run(directory: Path) -> PastRun | None:
    """The state of one run directory; None if it holds no run of a known config."""
    result, marker_path = directory / records.RESULT_FILE, directory / records.START_FILE
    record, damaged = None, None
    if result.is_file():
        try:
            record = records.load(result)
        except records.RecordError as error:  # never counted as finished: the run is done again
            damaged = f"its record does not validate ({error})"
    marker = atomic.read_json(marker_path)  # None when missing or unreadable
    config_id = (record and record.config_id) or (marker or {}).get("config_id")
    if not config_id:
        return None
    checkpoint = directory / records.CHECKPOINT_FILE
    checkpoint = checkpoint if checkpoint.is_file() else None
    changed = max(p.stat().st_mtime for p in (result, marker_path, checkpoint) if p and p.exists())
    # A marker newer than the record: the run was started again in the same directory (a
    # requeued SLURM job); the record describes an earlier attempt.
    if record is not None and not (marker is not None
                                   and marker_path.stat().st_mtime > result.stat().st_mtime):
        state = Status(record.status)
        if state == Status.FAILED and record.interrupted:
            state = Status.INTERRUPTED
        point = calibration_point(record) if state == Status.FINISHED else None
        code = {"git_commit": record.git_commit, "git_source": record.git_source,
                "git_dirty": record.git_dirty}
        return PastRun(directory, config_id, state, checkpoint, record.error, point,
                       changed, settled=True, code=code)
    alive = marker is not None and provenance.process_alive(
        marker.get("host"), marker.get("pid"), marker.get("pid_start"))
    if damaged and not alive:
        return PastRun(directory, config_id, Status.FAILED, checkpoint, damaged, None, changed)
    state = Status.RUNNING if alive else Status.INTERRUPTED
    return PastRun(directory, config_id, state, checkpoint, None, None, changed)


@dataclass(frozen=True)
class Decision:
    """What a launch does with one run of the grid, and why."""

    action: Action
    reason: str
    checkpoint: Path | None = None
    previous: PastRun | None = None


def decide(past: list[PastRun], rerun_diverged: bool = False) -> Decision:
    """Skip what finished, diverged or still runs; resume what was interrupted; rerun what
    failed. Divergence is a result, not a crash (the restored random state would diverge again):
    skipped like a finished run, unless ``rerun_diverged`` asks for another try."""

    def newest(*states: Status, with_checkpoint: bool = False) -> PastRun | None:
        runs = [r for r in past if r.state in states and (r.checkpoint or not with_checkpoint)]
        return max(runs, key=lambda r: r.time, default=None)

    if run := newest(Status.FINISHED):
        return Decision(Action.SKIP, Status.FINISHED, previous=run)
    if run := newest(Status.RUNNING):
        return Decision(Action.SKIP, "running now (another launch)", previous=run)
    if run := newest(Status.INTERRUPTED, with_checkpoint=True):
        return Decision(Action.RESUME, Status.INTERRUPTED, checkpoint=run.checkpoint, previous=run)
    if not rerun_diverged and (run := newest(Status.DIVERGED)):
        return Decision(Action.SKIP, Status.DIVERGED, previous=run)
    if run := newest(Status.FAILED, Status.DIVERGED):
        return Decision(Action.RUN, f"{run.state} before: {run.error}", previous=run)
    if run := newest(Status.INTERRUPTED):
        return Decision(Action.RUN, "interrupted before its first checkpoint", previous=run)
    return Decision(Action.RUN, "new")
