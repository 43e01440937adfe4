"""One line per job as a sweep goes: ``[k/N] <cell> finished in 41 s · sweep 3.2 min / ~5-7 min``.

The time left is the plan's estimate until a job of this sweep has ended; then the time elapsed,
scaled by the estimated work left against the work done (so a loaded machine, or jobs side by
side, is measured, not assumed), as a range: the spread of the ended jobs' measured / estimated
times. Nothing from other machines or earlier sweeps enters it. Pure data and text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ablate.budget import duration
from ablate.status import Outcome
from ablate.sweep.plan import PlannedRun

SPREAD_FEW = 0.25  # with fewer than 3 jobs measured the spread is unknown: +-25 % around the mean


@dataclass
class Progress:
    """The jobs of this launch (skipped ones excluded) and when the launch started."""

    jobs: Sequence[PlannedRun]
    began: float = field(default_factory=time.time)
    done: list[tuple[PlannedRun, float]] = field(default_factory=list)  # (job, measured seconds)

    def finished(self, job: PlannedRun, seconds: float | None = None,
                 now: float | None = None) -> str:
        """Note that ``job`` ended (after ``seconds`` of its own) and return its line."""
        now = time.time() if now is None else now
        if seconds is None:
            seconds = float(job.record.wall_seconds or 0.0) if job.record else 0.0
        self.done.append((job, seconds))
        return self.line(job, seconds, now)

    def remaining(self, now: float) -> tuple[float, float] | None:
        """Low and high estimate of the seconds left; None when nothing is left to run."""
        done_ids = {id(job) for job, _ in self.done}
        pending = [job for job in self.jobs if id(job) not in done_ids]
        if not pending:
            return None
        left = sum(job.seconds or 0.0 for job in pending)
        measured = [(job.seconds, seconds) for job, seconds in self.done
                    if job.seconds and seconds > 0]
        if not measured:  # the plan's own estimate, as printed before the launch
            return left, left
        done_estimate = sum(estimate for estimate, _ in measured)
        middle = (now - self.began) * left / done_estimate
        ratios = sorted(seconds / estimate for estimate, seconds in measured)
        mean = sum(ratios) / len(ratios)
        if len(ratios) < 3:
            return middle * (1 - SPREAD_FEW), middle * (1 + SPREAD_FEW)
        # the middle half of the jobs once there are 4: the first job pays one-time costs
        # (W&B's service, caches) that would otherwise widen the range for the whole sweep
        quarter = len(ratios) // 4
        return middle * ratios[quarter] / mean, middle * ratios[-quarter - 1] / mean

    def line(self, job: PlannedRun, seconds: float, now: float) -> str:
        state = job.state or Outcome.FAILED
        text = (f"[{len(self.done)}/{len(self.jobs)}] {job.label} {state} in "
                f"{duration(seconds)} · sweep {duration(now - self.began)}")
        left = self.remaining(now)
        if left is None:
            return text + " / done"
        low, high = duration(left[0]), duration(left[1])
        source = "" if any(j.seconds for j, _ in self.done) else " (plan)"
        return f"{text} / ~{high if low == high else f'{low}-{high}'} left{source}"
