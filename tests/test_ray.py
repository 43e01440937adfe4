"""The Ray launcher on a real local Ray runtime: jobs side by side on CPU cores, each in a fresh
worker process, and a worker that dies taking only its own job down."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, load, result_files, run_cli

from ablate import records

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")
pytestmark = pytest.mark.slow


def test_local_ray_runs_jobs_in_parallel_fresh_processes_and_isolates_a_dead_worker(workdir):
    flag = workdir / "faults-on"
    flag.touch()
    # W&B on: its exit is tested too; TINY's single seed would replace the three
    tiny = [a for a in TINY if not a.startswith(("logger=", "seed="))]
    grid = ["-m", "seed=0,1,2", *tiny, "logger=wandb", "hydra/launcher=ray_local",
            "hydra.launcher.ray.init.num_cpus=2",
            "datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
            "+datamodule.faults={s2:exit}"]  # seed 2's worker process dies (os._exit)
    done = run_cli(grid, workdir, env={"WANDB_MODE": "offline"})
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    # each job reported as it ended, the summary last; W&B shut down before its worker exits
    assert "[3/3] seed=" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("  1 failed: relaunching")
    assert "ConnectionResetError" not in done.stdout + done.stderr
    assert "2 jobs at once on 2 CPUs" in done.stdout + done.stderr
    assert "2 finished, 0 skipped (finished before), 1 failed" in done.stdout
    assert "failed    #2   seed=2" in done.stdout

    finished = [load(p) for p in result_files(workdir)]
    assert sorted(r["cell"]["seed"] for r in finished) == [0, 1]
    markers = {p.parent: json.loads(p.read_text())
               for p in workdir.glob(f"sweeps/**/{records.START_FILE}")}
    assert len(markers) == 3
    assert len({m["pid"] for m in markers.values()}) == 3  # max_calls=1: a process per job
    # the first two jobs ran at the same time: the second started before the first ended
    spans = sorted((m["started_time"], (d / records.RESULT_FILE).stat().st_mtime)
                   for d, m in markers.items() if (d / records.RESULT_FILE).exists())
    assert spans[1][0] < spans[0][1]

    # The dead worker left a marker and no record: a relaunch would run only that job again.
    flag.unlink()
    again = run_cli([*grid, "hydra.sweeper.dry_run=true"], workdir, env={"WANDB_MODE": "offline"})
    assert "1 to run, 0 to resume, 2 skipped" in again.stdout, again.stdout
    assert "(interrupted before its first checkpoint)" in again.stdout
