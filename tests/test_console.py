"""A quiet console by default: the sweep's [k/N] lines, its plan and its summary, little else."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY, run_cli

from ablate.sweep.plan import PlannedRun
from ablate.sweep.progress import Progress
from ablate.sweep.state import Decision


def _job(index: int, label: str, seconds: float) -> PlannedRun:
    return PlannedRun(index, [label], label, f"id{index}", Decision("run", "new"), seconds=seconds)


def test_progress_uses_the_plan_first_then_this_sweeps_own_jobs():
    jobs = [_job(0, "model=A", 10.0), _job(1, "model=B", 10.0), _job(2, "model=C", 20.0),
            _job(3, "model=D", 20.0)]
    progress = Progress(jobs, began=1000.0)
    assert progress.remaining(1000.0) == (60.0, 60.0)  # nothing measured: the plan
    jobs[0].state = "finished"
    line = progress.finished(jobs[0], 30.0, now=1030.0)
    # 3x slower than planned: 50 s of estimated work left is ~150 s, +-25 % with one job
    assert line.startswith("[1/4] model=A finished in 30 s · sweep 30 s / ~")
    low, high = progress.remaining(1030.0)
    assert (low, high) == pytest.approx((112.5, 187.5))
    for job, seconds, now in ((jobs[1], 10.0, 1040.0), (jobs[2], 40.0, 1080.0)):
        job.state = "failed" if job is jobs[1] else "finished"
        progress.finished(job, seconds, now=now)
    # ratios 3, 1, 2 (mean 2): the range runs from the fastest to the slowest of them
    middle = 80.0 * 20.0 / 40.0
    assert progress.remaining(1080.0) == pytest.approx((middle / 2, middle * 3 / 2))
    jobs[3].state = "diverged"
    assert progress.finished(jobs[3], 5.0, now=1090.0).endswith("/ done")
    assert "[4/4] model=D diverged in 5 s" in progress.line(jobs[3], 5.0, 1090.0)


@pytest.mark.slow
def test_a_redirected_multirun_is_a_short_log_that_ends_with_the_summary(workdir: Path):
    tiny = [a for a in TINY if not a.startswith(("logger=", "trainer.enable_progress_bar"))]
    done = run_cli(["-m", "model=A,C", "downsample=conv", *tiny, "logger=wandb"], workdir,
                   env={"WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert any(line.startswith("[1/2] model=A finished in ") for line in lines)
    assert any(line.startswith("[2/2] model=C finished in ") for line in lines)
    assert not any(line.startswith("wandb:") or "Tip:" in line or "GPU available" in line
                   or "Epoch 0" in line or "Warning" in line for line in lines), lines
    assert "\r" not in done.stdout + done.stderr
    summary = done.stdout.splitlines()
    assert summary[-3].startswith("[ablate] sweep 'quick' done in ")
    assert len(lines) <= 16, lines  # plan 6, two [k/N], summary 3
