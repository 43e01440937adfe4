"""Claims (ablate.sweep.claims) with real processes: one holder per cell, stale ones taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import cli_env

from ablate.sweep import claims, plan
from hydra_plugins.ablate_sweeper.sweeper import planner

HOLD = """
import sys, time
from pathlib import Path
from ablate.sweep import claims
holder = claims.claim(Path(sys.argv[1]), sys.argv[2], Path("elsewhere"))
print("claimed" if holder is None else "refused", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the claim on ``cell`` under tmp_path while it lives."""
    process = _hold(tmp_path, "cell")
    yield process
    process.kill()
    process.wait()


def _hold(root, config_id: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root), config_id], env=cli_env(),
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "claimed"
    return process


def test_a_live_holder_keeps_its_claim_and_is_named(tmp_path, holder):
    refused = claims.claim(tmp_path, "cell", tmp_path / "mine")
    assert refused is not None and refused.pid == holder.pid
    assert "running elsewhere: claimed by" in refused.describe() and "pid" in refused.describe()
    claims.release(tmp_path, "cell")  # not ours: left alone
    assert claims.claim_path(tmp_path, "cell").exists()
    assert claims.claim(tmp_path, "other", tmp_path / "mine") is None  # other cells are free


def test_a_dead_holders_claim_is_taken_over(tmp_path, holder):
    holder.kill()
    holder.wait()
    assert claims.claim(tmp_path, "cell", tmp_path / "mine") is None
    assert json.loads(claims.claim_path(tmp_path, "cell").read_text())["pid"] == os.getpid()
    claims.release(tmp_path, "cell")
    assert not claims.claim_path(tmp_path, "cell").exists()
    assert list((tmp_path / claims.FOLDER).iterdir()) == []  # no temporary file left


def test_a_claim_from_another_host_is_stale_only_after_the_timeout(tmp_path):
    path = claims.claim_path(tmp_path, "cell")
    path.parent.mkdir(parents=True)
    content = {"host": "another-machine", "pid": 1, "claimed_time": time.time() - 7200}
    path.write_text(json.dumps(content))
    assert claims.claim(tmp_path, "cell", tmp_path, timeout_hours=3) is not None
    assert claims.claim(tmp_path, "cell", tmp_path, timeout_hours=1) is None


def test_the_same_cell_twice_in_one_launch_is_claimed_once(tmp_path):
    assert claims.claim(tmp_path, "cell", tmp_path) is None
    assert claims.claim(tmp_path, "cell", tmp_path) is None  # re-entrant: seed=1,1 runs twice


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
        assert f"now running elsewhere: claimed by {socket.gethostname()}, pid {other.pid}" in line
        _, jobs, _, _ = sweeper.plan(task)  # its process is gone: the cell is free again
        assert not any(job.held_by for job in jobs)
