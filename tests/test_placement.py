"""Where jobs land on GPUs, tested without GPUs: Ray started with logical GPUs hands each job
its ids in ``CUDA_VISIBLE_DEVICES`` exactly as on a GPU machine (Ray sets the variable from its
own bookkeeping); the app launched (``tests/apps/visible_devices.py``) only reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import cli_env

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "apps" / "visible_devices.py"


def _placed(tmp_path: Path, cells: int, jobs_per_gpu: int) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(APP), "-m", f"+cell={','.join(map(str, range(cells)))}",
         f"+together={cells}", "hydra.searchpath=[pkg://ablate.conf]", "hydra/launcher=ray_local",
         f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}",
         # 4 logical GPUs on this CPU machine; logical CPUs enough for every job at once
         "hydra.launcher.ray.init.num_gpus=4", f"hydra.launcher.ray.init.num_cpus={cells}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/visible.json")]
    assert sorted(f["cell"] for f in found) == list(range(cells))
    return found


def test_each_job_of_a_grid_gets_a_gpu_of_its_own(tmp_path):
    jobs = _placed(tmp_path, 4, 1)
    ids = [job["cuda_visible_devices"] for job in jobs]
    assert sorted(ids) == ["0", "1", "2", "3"], ids
    assert len({job["pid"] for job in jobs}) == 4  # a fresh worker process each


def test_jobs_per_gpu_2_puts_exactly_two_jobs_on_each_gpu(tmp_path):
    jobs = _placed(tmp_path, 8, 2)
    ids = Counter(job["cuda_visible_devices"] for job in jobs)
    assert ids == {"0": 2, "1": 2, "2": 2, "3": 2}, ids
    # all eight held their share at the same time (the count is not two after one another):
    # each waited until all eight had started, and none gave up waiting
    assert all(job["together"] for job in jobs)
    assert max(job["started"] for job in jobs) < min(job["ended"] for job in jobs)
