"""Cell leases (ablate.sweep.lease) with real processes: one holder per cell, expired ones taken
over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import cli_env

from ablate.sweep import lease, plan
from hydra_plugins.ablate_sweeper.sweeper import AblateSweeperConf, planner

HOLD = """
import sys, time
from pathlib import Path
from ablate.sweep import lease
holder = lease.take(Path(sys.argv[1]), sys.argv[2], Path("elsewhere"))
print("leased" if holder is None else "refused", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lease on ``cell`` under tmp_path while it lives."""
    process = _hold(tmp_path, "cell")
    yield process
    process.kill()
    process.wait()


def _hold(root, config_id: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root), config_id], env=cli_env(),
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "leased"
    return process


def test_a_live_holder_keeps_its_lease_and_is_named(tmp_path, holder):
    refused = lease.take(tmp_path, "cell", tmp_path / "mine")
    assert refused is not None and refused.pid == holder.pid
    assert "running elsewhere: leased by" in refused.describe() and "pid" in refused.describe()
    lease.release(tmp_path, "cell")  # not ours: left alone
    assert lease.lease_path(tmp_path, "cell").exists()
    assert lease.take(tmp_path, "other", tmp_path / "mine") is None  # other cells are free


def test_a_dead_holders_lease_is_taken_over(tmp_path, holder):
    holder.kill()
    holder.wait()
    assert lease.take(tmp_path, "cell", tmp_path / "mine") is None
    assert json.loads(lease.lease_path(tmp_path, "cell").read_text())["pid"] == os.getpid()
    lease.release(tmp_path, "cell")
    assert not lease.lease_path(tmp_path, "cell").exists()
    assert list((tmp_path / lease.FOLDER).iterdir()) == []  # no temporary file left


def test_a_lease_from_another_host_expires_only_after_the_timeout(tmp_path):
    path = lease.lease_path(tmp_path, "cell")
    path.parent.mkdir(parents=True)
    content = {"host": "another-machine", "pid": 1, "leased_time": time.time() - 7200}
    path.write_text(json.dumps(content))
    assert lease.take(tmp_path, "cell", tmp_path, timeout_hours=3) is not None
    assert lease.take(tmp_path, "cell", tmp_path, timeout_hours=1) is None


def test_the_same_cell_twice_in_one_launch_is_leased_once(tmp_path):
    assert lease.take(tmp_path, "cell", tmp_path) is None
    assert lease.take(tmp_path, "cell", tmp_path) is None  # re-entrant: seed=1,1 runs twice


def test_the_plan_names_the_cells_another_launch_holds(tmp_path):
    root = tmp_path / "records"
    with planner(["+sweep=quick", f"hydra.sweeper.records_root={root}"]) as (sweeper, task):
        _, jobs, _, _ = sweeper.plan(task)
        assert not any(job.held_by for job in jobs)
        other = _hold(root, jobs[4].config_id)  # another launch, running cell #4
        try:
            axes, jobs, note, _ = sweeper.plan(task)
            text = plan.format_plan("quick", tmp_path, root, axes, jobs, note, dry_run=False)
        finally:
            other.kill()
            other.wait()
        assert [job.index for job in jobs if job.held_by] == [4]
        assert "held by another launch now: 1 of those to run" in text
        [line] = [line for line in text.splitlines() if line.strip().startswith("run     #4 ")]
        assert f"now running elsewhere: leased by {socket.gethostname()}, pid {other.pid}" in line
        _, jobs, _, _ = sweeper.plan(task)  # its process is gone: the cell is free again
        assert not any(job.held_by for job in jobs)


def test_the_sweepers_lease_timeout_default_is_the_leases_own():
    # The sweeper's config cannot import ablate.sweep (Hydra scans it for every command): the
    # one number is written twice, and this keeps the two equal.
    assert AblateSweeperConf.lease_timeout_hours == lease.DEFAULT_TIMEOUT_HOURS
