"""What happens to each planned run as the sweep launches it: its cell leased (and checked once
more against other launches), the overrides it is launched with, its outcome read back: from
its record first, there whatever the engine; Hydra's ``JobReturn`` says what a record cannot (why
a job that left none failed, or that another app's job, as in Hydra's sweeper tests, completed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from ablate import identity, records
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
