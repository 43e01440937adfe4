"""A sweep as a list of planned runs: what each will do, the plan printed before launching,
the summary printed after, the sweep's own directory and its ``sweep.json``. Pure data and text.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import atomic, identity, records
from ablate.budget import duration
from ablate.status import Action, Outcome
from ablate.sweep.state import Decision

SWEEP_FILE = records.SWEEP_FILE
# Outcomes that are no failure of the sweep: a diverged run is a result (it is counted in the
# tables and named here), not a crash; a cell another launch holds is not done here, nor failed.
COMPLETED = (Outcome.FINISHED, Outcome.DIVERGED, Outcome.SKIPPED, Outcome.ELSEWHERE)
LISTED = 30  # a launch lists every job up to this many (a dry run always lists all)


@dataclass
class PlannedRun:
    """One run of the grid: its overrides, identity, what this launch does with it, and how."""

    index: int  # position in the grid
    overrides: list[str]
    label: str  # the swept values, for people
    config_id: str
    decision: Decision
    seconds: float | None = None  # estimated run time
    device_seconds: float | None = None  # estimated device time: seconds x processes (DDP)
    problem: str | None = None  # an invalid config: nothing is launched
    held_by: str | None = None  # another launch holds its cell as the plan is made
    # filled in by the launch
    output_dir: Path | None = None
    launched_at: float | None = None
    state: Outcome | None = None
    error: str | None = None
    record: records.Record | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        previous = self.decision.previous
        return {
            "index": self.index,
            "overrides": self.overrides,
            "config_id": self.config_id,
            "action": self.decision.action,
            "reason": self.decision.reason,
            "resume_from": str(self.decision.checkpoint) if self.decision.checkpoint else None,
            "previous": str(previous.directory) if previous else None,
            "estimated_seconds": self.seconds,
            "estimated_device_seconds": self.device_seconds,
            "output_dir": str(self.output_dir) if self.output_dir else None,
            "launched_at": self.launched_at,
            "state": self.state,
            "error": self.error,
            "first_step_at": self.record.first_step_at if self.record else None,
        }


def _relative(path: Path | None) -> str:
    try:
        return "-" if path is None else os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)


def grid_line(axes: list[tuple[str, list[str]]], runs: int) -> str:
    """``model (3) x downsample (4) = 12 cells x 4 lr x 1 seed = 48 runs``."""
    swept = [(k, v) for k, v in axes
             if len(v) > 1 and k.lstrip("+") not in identity.REPLICATE_KEYS]
    replicates = math.prod(len(v) for k, v in axes if k.lstrip("+") in identity.REPLICATE_KEYS)
    union = runs // max(replicates, 1)  # a union of grids (sweeper variants) has fewer cells
    text = " x ".join(f"{k} ({len(v)}: {', '.join(v)})" for k, v in swept) or "1 cell"
    if swept:
        text += f" = {union} cell{'s' if union != 1 else ''}"
        text += " (a union of grids)" if union != math.prod(len(v) for _, v in swept) else ""
    for axis in identity.REPLICATE_KEYS:
        values = next((v for k, v in axes if k.lstrip("+") == axis), None)
        count = len(values) if values else 1
        shown = f" ({', '.join(values)})" if values and count > 1 else ""
        text += f" x {count} {axis}{shown}"
    return f"{text} = {runs} run{'s' if runs != 1 else ''}"


def _job_line(job: PlannedRun) -> str:
    action = "invalid" if job.problem else job.decision.action
    line = f"  {action:<7} #{job.index:<3} {job.label}"
    if job.problem:
        return f"{line}: {job.problem}"
    previous = job.decision.previous
    if job.decision.action == Action.SKIP and previous is not None:
        return f"{line}  {job.decision.reason}: {_relative(previous.directory)}"
    if job.decision.action == Action.RESUME:
        line = f"{line}  from {_relative(job.decision.checkpoint)}"
    else:
        line += f"  ~{duration(job.seconds)}" + (f" ({job.decision.reason})" if previous else "")
    return f"{line}; now {job.held_by}" if job.held_by else line


def format_plan(name: str, sweep_dir: Path, root: Path, axes: list[tuple[str, list[str]]],
                jobs: list[PlannedRun], estimate_note: str, dry_run: bool) -> str:
    """The plan printed before launching: the grid, what this launch does, the time it takes."""
    counts = {action: sum(j.decision.action == action for j in jobs) for action in Action}
    todo = [j for j in jobs if j.decision.action != Action.SKIP]
    total = sum(j.seconds or 0.0 for j in todo)
    per_run = sorted(j.seconds for j in todo if j.seconds)
    lines = [
        f"[ablate] sweep '{name}'" + (" (dry run: nothing is launched)" if dry_run else "")
        + f" -> {_relative(sweep_dir)}",
        f"  grid: {grid_line(axes, len(jobs))}",
        f"  this launch: {counts[Action.RUN]} to run, {counts[Action.RESUME]} to resume, "
        f"{counts[Action.SKIP]} skipped (earlier runs looked up by config under "
        f"{_relative(root)})",
    ]
    if held := sum(bool(j.held_by) for j in todo):
        lines.append(f"  held by another launch now: {held} of those to run (each is run here "
                     "only if its lease is gone when this launch reaches it)")
    if todo:
        typical = per_run[len(per_run) // 2] if per_run else None
        lines.append(f"  estimated time: {duration(typical)} per run, {duration(total)} for "
                     f"the {len(todo)} to run one after another ({estimate_note})")
        device = sum(j.device_seconds or 0.0 for j in todo)
        if device > total * 1.001:  # some run trains in several processes (DDP)
            lines.append(f"  device time: {duration(device)} (each run's time x the devices it "
                         "trains on: what a cluster bills)")
    if dry_run or len(jobs) <= LISTED:
        lines += [_job_line(job) for job in jobs]
    else:
        shown = [job for job in jobs
                 if job.decision.action != Action.RUN or job.problem or job.held_by]
        lines += [_job_line(job) for job in shown[:LISTED]]
        hidden = len(jobs) - min(len(shown), LISTED)
        lines.append(f"  ... and {hidden} more (hydra.sweeper.dry_run=true lists them all)")
    return "\n".join(lines)


def format_summary(name: str, sweep_dir: Path, jobs: list[PlannedRun], seconds: float) -> str:
    """The summary printed after: every job's outcome and directory, and what a relaunch does."""
    by = {outcome: [j for j in jobs if j.state == outcome] for outcome in Outcome}
    finished, skipped = by[Outcome.FINISHED], by[Outcome.SKIPPED]
    elsewhere, diverged = by[Outcome.ELSEWHERE], by[Outcome.DIVERGED]
    failed = [j for j in jobs if j.state not in COMPLETED]
    resumed = sum(1 for j in finished if j.decision.action == Action.RESUME)
    lines = [
        f"[ablate] sweep '{name}' done in {duration(seconds)}: {len(finished)} finished"
        + (f" ({resumed} resumed)" if resumed else "")
        + (f", {len(diverged)} diverged" if diverged else "")
        + f", {len(skipped)} skipped (finished before), {len(failed)} failed"
        + (f", {len(elsewhere)} running elsewhere" if elsewhere else "")
        + f" -> {_relative(sweep_dir)}"
    ]
    for job in sorted(jobs, key=lambda j: j.index):
        previous = job.decision.previous
        where = job.output_dir if job.state not in (Outcome.SKIPPED, Outcome.ELSEWHERE) else \
            previous.directory if previous else None
        line = f"  {job.state:<9} #{job.index:<3} {job.label}  {_relative(where)}"
        if job.state not in (Outcome.FINISHED, Outcome.SKIPPED):
            line += f"\n            {job.error}"
        lines.append(line)
    if failed:
        lines.append(f"  {len(failed)} failed: relaunching the same command reruns them and "
                     "skips the rest")
    if diverged:
        lines.append(f"  {len(diverged)} diverged (a result, counted in the tables): a relaunch "
                     "skips them; hydra.sweeper.rerun_diverged=true runs them again")
    if elsewhere:
        lines.append(f"  {len(elsewhere)} running elsewhere (another launch of this sweep holds "
                     "them): relaunch once it ends to pick up whatever it left undone")
    return "\n".join(lines)


def unique_dir(path: Path) -> Path:
    """Take ``path``, or ``path_2``, ``path_3``... if taken: never a directory in use.

    A directory is taken by creating its ``sweep.json`` exclusively (``O_EXCL``, atomic), so
    two sweeps started in the same second (the default directory name has a resolution of one
    second) cannot both get the same one. An existing directory is taken only while empty (one
    made for the sweep before it started, as Hydra's test runner does).
    """
    candidate, number = path, 1
    while True:
        candidate.mkdir(parents=True, exist_ok=True)
        try:
            if not any(candidate.iterdir()):
                os.close(os.open(candidate / SWEEP_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return candidate
        except FileExistsError:
            pass
        number += 1
        candidate = path.with_name(f"{path.name}_{number}")


def save(sweep_dir: Path, name: str, root: Path, axes: Sequence[tuple[str, list[str]]],
         jobs: Sequence[PlannedRun], began: float, ended: float | None,
         seeds: tuple[int, int] | None = None) -> None:
    """Write the sweep's ``sweep.json`` (its format is here only): what was asked, planned and
    done; ``records.swept_axes`` reads its axes back, ``records.seed_range`` its seeds=auto
    range (``seeds``: min and max seeds), which the report's decisions then use as the sweep's
    did."""
    atomic.write_json_atomic(sweep_dir / SWEEP_FILE, {
        "sweep_name": name,
        "sweep_dir": str(sweep_dir),
        "records_root": str(root),
        "command": sys.argv,
        "axes": [[key, values] for key, values in axes],
        "started_time": began,
        "ended_time": ended,
        "jobs": [job.as_dict() for job in jobs],
        **({"seeds": {"min_seeds": seeds[0], "max_seeds": seeds[1]}} if seeds else {}),
    })
