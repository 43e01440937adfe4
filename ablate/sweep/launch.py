"""What happens to each planned run as the sweep launches it: its cell leased (and checked once
more against other launches), the overrides it is launched with, its outcome read back: from
its record first, there whatever the engine; Hydra's ``JobReturn`` says what a record cannot (why
a job that left none failed, or that another app's job, as in Hydra's sweeper tests, completed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from ablate import identity, overrides, records
from ablate.status import Action, Outcome, Status
from ablate.sweep import index, lease, state
from ablate.sweep.plan import PlannedRun


def quoted(value: str) -> str:
    """An override value that Hydra's grammar reads back as exactly this string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def launch_overrides(run: PlannedRun) -> list[str]:
    """The overrides ``run`` is launched with: where it resumes from, if it does."""
    overrides = identity.without_resume(run.overrides)
    if run.decision.checkpoint is not None:  # found by config id; unreadable: start afresh
        overrides += [f"resume_from={quoted(str(run.decision.checkpoint))}", "resume_fallback=true"]
    return overrides


def packs(runs: Sequence[PlannedRun], size: int) -> list[list[PlannedRun]]:
    """``runs`` as the jobs that launch them: up to ``size`` fresh runs of one cell (runs whose
    overrides differ only in ``seed``) in one job, in plan order; a run that continues from a
    checkpoint goes alone (its seed's state is in its own checkpoint)."""
    units: list[list[PlannedRun]] = []
    filling: dict[tuple[str, ...], list[PlannedRun]] = {}
    for run in runs:
        if size <= 1 or run.decision.checkpoint is not None:
            units.append([run])
            continue
        cell = tuple(overrides.without(run.overrides, ["seed"]))
        unit = filling.get(cell)
        if unit is None or len(unit) == size:
            unit = filling[cell] = []
            units.append(unit)
        unit.append(run)
    return units


def most_seeds(jobs: Sequence[Sequence[str]]) -> int:
    """The most runs any cell of ``jobs`` has (jobs whose overrides differ only in ``seed``)."""
    cells: dict[tuple[str, ...], int] = {}
    for job in jobs:
        cell = tuple(overrides.without(job, ["seed"]))
        cells[cell] = cells.get(cell, 0) + 1
    return max(cells.values(), default=0)


def pack_problem(pack: object, most: int) -> str | None:
    """What is wrong with ``hydra.sweeper.pack`` for cells of at most ``most`` seeds."""
    if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
        return f"hydra.sweeper.pack={pack} must be 1 (no packing) or more"
    if pack > max(most, 1):
        return (f"hydra.sweeper.pack={pack} is more than the {most} seeds a cell of this grid "
                f"has; pack at most {most} (e.g. seed=0,1,2 hydra.sweeper.pack=3)")
    return None


def packed_with(members: Sequence[tuple[PlannedRun, Path]]) -> list[str]:
    """The override that makes a job train ``members`` (each with its folder) beside its own
    seed (``ablate.packed_run``); none for a job of one run."""
    if not members:
        return []
    entries = [f"{{seed:{overrides.find(run.overrides, 'seed')},"
               f"output_dir:{quoted(str(folder))}}}" for run, folder in members]
    return [f"packed_with=[{','.join(entries)}]"]


def skip(run: PlannedRun) -> None:
    """A run this launch does not run: finished before, or running in another launch (its
    start marker is alive), which the summary must not count as done."""
    previous = run.decision.previous
    if previous is not None and previous.state == Status.RUNNING:
        run.state, run.error = Outcome.ELSEWHERE, f"running elsewhere: {previous.directory}"
    else:
        run.state = Outcome.SKIPPED


def lease_batch(batch: Sequence[PlannedRun], root: Path, sweep_dir: Path, timeout_hours: float,
                rerun_diverged: bool) -> list[PlannedRun]:
    """The runs of ``batch`` this launch may start: each cell leased (``ablate.sweep.lease``),
    and none finished or started by another launch since this one made its plan. The others
    are marked as running elsewhere (or finished before) and are not launched."""
    mine = []
    for run in batch:
        holder = lease.take(root, run.config_id, sweep_dir, timeout_hours=timeout_hours)
        if holder is None:
            mine.append(run)
        else:
            run.state, run.error = Outcome.ELSEWHERE, holder.describe()
    past = index.past_runs(root) if mine else {}
    for run in list(mine):  # a launch that planned at the same time may have finished it
        others = [done for done in past.get(run.config_id, [])
                  if sweep_dir not in done.directory.parents]
        decision = state.decide(others, rerun_diverged)
        if decision.action == Action.SKIP:
            mine.remove(run)
            lease.release(root, run.config_id)
            run.decision = decision
            skip(run)
    return mine


def collect(run: PlannedRun, output_dir: Path, result: JobReturn | None,
            launch_error: BaseException | None) -> None:
    """``run``'s outcome: its record's status, else what the launcher said."""
    run.output_dir = output_dir
    path = output_dir / records.RESULT_FILE
    if path.is_file():
        try:
            run.record = records.load(path)
        except records.RecordError as error:
            run.state, run.error = Outcome.FAILED, str(error)
            return
        run.state, run.error = Outcome(run.record.status), run.record.error
        return
    run.state = Outcome.FAILED
    if result is not None and result.status == JobStatus.COMPLETED:
        run.state = Outcome.FINISHED  # a task that keeps no record (another Hydra app's)
    elif result is not None and result.status == JobStatus.FAILED:
        try:
            result.return_value  # noqa: B018 - Hydra's way to hand back the job's exception
        except Exception as error:
            run.error = f"{type(error).__name__}: {error}"
    elif launch_error is not None:
        run.error = f"no record; the launcher failed: {launch_error}"
    else:
        run.error = "no record: the job was killed or crashed before writing result.json"
