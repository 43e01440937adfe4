"""A grid through hydra-submitit-launcher on a real single-node SLURM cluster (slurm_cluster.py:
munged, slurmctld and slurmd on localhost; skipped, saying how to install SLURM, where it is
missing: .ci/run installs it), and a job preempted mid-training that SLURM requeues and that
continues from its own checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from helpers import TINY, cli_env, load, result_files, run_cli
from slurm_cluster import LocalSlurm, SlurmUnavailable

from ablate import records

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytestmark = pytest.mark.slow

# CPU jobs on the test node: one core and 1 GB each, no GPU.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gres=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as error:
        pytest.skip(str(error))
    yield cluster
    cluster.stop()


def test_grid_runs_as_a_slurm_job_array_with_a_gpu_per_job(slurm, workdir):
    gpu = [*(o for o in SLURM if not o.startswith("hydra.launcher.gres")),
           "hydra.launcher.gres=gpu:1"]  # the config's request; the test node has 2 fake GPUs
    done = run_cli(["-m", "model=A,B", *TINY, *gpu], workdir, env=slurm.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 finished, 0 skipped (finished before), 0 failed" in done.stdout
    assert sorted(load(p)["cell"]["model"] for p in result_files(workdir)) == ["A", "B"]
    markers = [json.loads(p.read_text()) for p in workdir.glob(f"sweeps/**/{records.START_FILE}")]
    assert all(m["slurm_job_id"] for m in markers)  # they ran inside SLURM jobs
    assert len({m["slurm_job_id"].split("_")[0] for m in markers}) == 1  # one array
    # the sbatch script submitit generated asks for the GPU, and SLURM gave each job one
    [script] = workdir.glob("sweeps/**/.submitit/*/*_submission.sh")
    lines = script.read_text().splitlines()
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --cpus-per-task=1" in lines
    assert all(m["cuda_visible_devices"] in ("0", "1") for m in markers), markers


def test_preempted_job_is_requeued_and_continues_from_its_checkpoint(slurm, workdir):
    budget = ["trainer.max_epochs=8", "trainer.limit_train_batches=10"]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "ablate.run", "-m", "model=A", *TINY, *budget, *SLURM],
        cwd=workdir, env=cli_env(slurm.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    deadline = time.monotonic() + 240
    while not list(workdir.glob("sweeps/quick/*/0/checkpoints/last.ckpt")):
        assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    [(job_id, _)] = slurm.squeue()
    # What SLURM sends before preempting a job (submitit's signal): submitit requeues it.
    subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm.env, check=True)
    while sweep.poll() is None and time.monotonic() < deadline:
        if any(state == "PENDING" for _, state in slurm.squeue()):
            # SLURM holds a requeued job back for a while; a busy cluster would anyway.
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                           env=slurm.env, capture_output=True)
        time.sleep(1)
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out[-4000:]
    assert "1 finished, 0 skipped (finished before), 0 failed" in out
    [path] = result_files(workdir)
    record = load(path)
    assert record["status"] == "finished"
    assert record["resumed_from"] == str(path.parent / records.CHECKPOINT_FILE)
    assert record["resumed_epoch"] >= 1
    assert [row["epoch"] for row in record["history"]] == list(range(8))


def test_a_two_task_ddp_job_trains_one_run_over_both_tasks(slurm, workdir):
    """tasks_per_node=2 with trainer.devices=2: SLURM starts both processes, Lightning joins
    them (its SLURM environment) instead of launching its own; the first task writes the one
    record."""
    ddp = ["hydra.launcher.tasks_per_node=2", "trainer.strategy=ddp", "trainer.devices=2",
           "trainer.accelerator=cpu", "trainer.limit_train_batches=4"]
    done = run_cli(["-m", "model=A", *TINY, *SLURM, *ddp], workdir, env=slurm.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = result_files(workdir)
    record = load(path)
    assert record["status"] == "finished"
    assert record["device"] == "cpu, 2 processes (DDPStrategy)"
    [script] = workdir.glob("sweeps/**/.submitit/*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text().splitlines()
    assert list(workdir.glob("sweeps/**/.submitit/*/*_1_log.out")), "no log of task 1"
    # both tasks log to the job's run.log; only the first ends the record (and says so)
    assert path.with_name("run.log").read_text().count("finished: test_error") == 1
    marker = json.loads(path.with_name(records.START_FILE).read_text())
    assert marker["slurm_job_id"]
