"""One run over several processes: Lightning's DDP on the gloo backend, two CPU processes on this
machine, started by Lightning's own launcher. Real multi-process training, no GPU needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, cli_env, compose_config, held, load, result_files, run_cli

from ablate import hardware
from ablate.errors import ConfigError

DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


def _losses(tmp_path: Path, processes: int) -> dict:
    out = tmp_path / f"losses{processes}.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "apps" / "ddp_losses.py"), str(out),
         str(processes), "20", "batch_size=128"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_of_half_the_batch_train_as_one_process(tmp_path: Path) -> None:
    """2 processes x 64 rows give the losses of 1 process x 128 over 20 steps (same initial
    weights, same global batches: every step's labels are the same 128, split in two)."""
    one, two = _losses(tmp_path, 1), _losses(tmp_path, 2)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["initial_first"] == two["initial_first"]
    assert one["initial_sum"] == two["initial_sum"]
    # each process its half of every global batch (the epoch's short last one: 14 -> 7 + 7)
    assert [2 * rows for rows in two["rows"]] == one["rows"] and one["rows"][0] == 128
    assert two["labels"] == one["labels"]  # the halves, in rank order, are the one batch
    assert len(one["losses"]) == len(two["losses"]) == 20
    for step, (a, b) in enumerate(zip(one["losses"], two["losses"], strict=True)):
        assert abs(a - b) <= 1e-5 * abs(a), (step, a, b)


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return int(values[b"LOCAL_RANK"]) if b"LOCAL_RANK" in values else None


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found += [int(child) for child in text.split()]
    return found


@pytest.mark.slow
def test_killing_one_process_fails_the_run_and_a_resume_finishes_it_once(workdir: Path) -> None:
    """kill -9 of the second process: the run exits non-zero, no finished record; the resume
    (``python -m ablate.run resume_from=<run dir>``: the same command line, from the last
    checkpoint, both processes) writes exactly one finished record, tested on the whole test
    set once."""
    flag = workdir / "hold"  # both processes wait at their second epoch while it exists
    args = ["experiment=quick", "seed=0", "logger=none", "trainer.enable_progress_bar=false",
            "callbacks.test_predictions.shifts=[]", "trainer.max_epochs=8",
            "trainer.limit_train_batches=10", *DDP, *held(flag)]
    main = subprocess.Popen([sys.executable, "-m", "ablate.run", *args], cwd=workdir,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(workdir.glob("sweeps/**/checkpoints/last.ckpt")):
            assert main.poll() is None, main.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        [second] = [c for c in _children(main.pid) if _rank_of(c) == 1]
        os.kill(second, signal.SIGKILL)
        flag.unlink()  # the first process trains on and finds the second gone
        output, _ = main.communicate(timeout=120)
    finally:
        main.kill()
    assert main.returncode != 0, output[-3000:]
    [run_dir] = [p.parent.parent for p in workdir.glob("sweeps/**/checkpoints/last.ckpt")]
    killed = [load(p) for p in result_files(workdir)]
    assert all(r["status"] != "finished" for r in killed)  # none, or a failed one saying why
    again = run_cli([f"resume_from={run_dir}"], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    [path] = [p for p in result_files(workdir) if load(p)["status"] == "finished"]
    record = load(path)
    assert record["resumed_epoch"] >= 1 and record["epochs"] == 8
    assert record["device"].startswith("cpu, 2 processes")
    assert sorted(p.name for p in path.parent.glob("*.json")) == ["result.json", "started.json"]
    import numpy as np

    with np.load(path.parent / "predictions.npz") as saved:
        predicted, labels = saved["predicted"], saved["labels"]
    assert len(labels) == record["images"]["test"]  # each test image once, all of them
    assert record["metrics"]["test_error"] == pytest.approx(float((predicted != labels).mean()),
                                                            abs=1e-6)
    assert (again.stdout + again.stderr).count("finished: test_error") == 1  # one process says


@pytest.mark.parametrize(("extra", "message"), [
    ([f"trainer.devices={(os.cpu_count() or 1) + 1}"],
     f"trainer.devices={(os.cpu_count() or 1) + 1} but this machine has"),
    (["trainer.devices=[" + ",".join(map(str, range((os.cpu_count() or 1) + 1))) + "]"],
     f"trainer.devices={(os.cpu_count() or 1) + 1} but this machine has"),
    (["trainer.devices=auto"], "trainer.devices=auto: give the number of devices"),
    (["trainer.devices=-1"], "trainer.devices=-1: give the number of devices"),
    (["trainer.num_nodes=2"], "trainer.num_nodes=2 needs a cluster launcher"),
    (["trainer.devices=2", "batch_size=33"], "batch_size=33 is the global batch"),
    (["trainer.devices=2", "trainer.strategy=ddp_spawn"],
     "trainer.strategy=ddp_spawn starts its processes from inside fit"),
    (["trainer.devices=2", "+packed_with=[{seed: 1, output_dir: x}]"],
     "packed seeds (hydra.sweeper.pack) train in one process"),
])
def test_a_data_parallel_run_that_cannot_start_is_refused(
        extra: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)  # not inside an engine's job
    cfg = compose_config(["experiment=quick", "trainer.accelerator=cpu", "trainer.strategy=ddp",
                          *extra])
    with pytest.raises(ConfigError) as refused:
        hardware.check_processes(cfg)
    assert message in str(refused.value)


def test_several_nodes_are_accepted_where_a_cluster_launcher_started_the_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_config(["experiment=quick", "trainer.accelerator=cpu", "trainer.num_nodes=2"])
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "ablate")
    hardware.check_processes(cfg)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive shell: Lightning launches
    with pytest.raises(ConfigError, match="needs a cluster launcher"):
        hardware.check_processes(cfg)
    monkeypatch.delenv("SLURM_NTASKS")
    hardware.check_processes(compose_config(["experiment=quick"]))  # one process


def test_the_estimate_prices_a_data_parallel_run_in_wall_time_and_device_time() -> None:
    from ablate.sweep import estimate

    one = estimate.work_of(compose_config(["experiment=quick", "trainer.accelerator=cpu"]))
    eight = estimate.work_of(compose_config(["experiment=quick", "trainer.accelerator=cpu",
                                             "trainer.devices=4", "trainer.num_nodes=2"]))
    assert (one.processes, eight.processes) == (1, 8) and one.macs == eight.macs
    fixed = estimate.DEVICES["cpu"].run_seconds + one.epochs * estimate.DEVICES["cpu"].epoch_seconds
    assert eight.seconds() - fixed == pytest.approx((one.seconds() - fixed) / 8)
    assert eight.device_seconds() == pytest.approx(8 * eight.seconds())
    assert one.device_seconds() == one.seconds()


def test_the_plan_shows_the_device_time_of_a_data_parallel_grid(workdir: Path) -> None:
    done = run_cli(["-m", "experiment=quick", "seed=0,1", *DDP, "hydra.sweeper.dry_run=true"],
                   workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "device time: " in done.stdout and "what a cluster bills" in done.stdout


@pytest.mark.slow
def test_each_ddp_job_of_a_multirun_runs_as_its_own_run_and_a_failure_stays_its_own(
        workdir: Path) -> None:
    """A job of a multirun that trains in 2 processes runs as `python -m ablate.run <its
    overrides>` in its folder (Lightning's launcher restarts that, not the sweep). The first
    job fails in both processes, and the sweep goes on to the second (Lightning kills the
    process that launched a failed one: the job's own, not the sweep's)."""
    flag = workdir / "faults-on"
    flag.touch()
    faults = ["datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
              "+datamodule.faults={s0:raise}"]
    done = run_cli(["-m", *TINY, "seed=0,1", *DDP, *faults], workdir)
    assert done.returncode == 1, done.stderr[-3000:]  # a job failed: the sweep says so
    assert "1 finished, 0 skipped (finished before), 1 failed" in done.stdout, done.stdout
    records = {p.parent.name: load(p) for p in result_files(workdir)}
    assert sorted(records) == ["0", "1"], records.keys()  # no sweep started by a process
    assert records["0"]["status"] == "failed" and "injected fault" in records["0"]["error"]
    assert records["1"]["status"] == "finished" and records["1"]["cell"]["seed"] == 1
    assert records["1"]["device"].startswith("cpu, 2 processes")
    assert records["1"]["swept"] == ["seed"]  # the sweep's axes, as an in-process job's
    logs = sorted(p.parent.name for p in workdir.glob("sweeps/**/train_ddp_process_1.log"))
    assert logs == ["0", "1"]  # the second process of each job ran in that job's folder


def test_the_ray_launcher_gives_a_ddp_job_a_gpu_and_its_cores_per_process() -> None:
    """What the Ray launcher asks for a job (a run by hand on a local runtime with 4 logical
    GPUs held GPUs 0,1 and trained in 2 processes: README, DDP)."""
    pytest.importorskip("ray")
    from omegaconf import OmegaConf

    from hydra_plugins.ablate_sweeper.ray_launcher import AblateRayLauncher

    remote = {"num_gpus": 1, "num_cpus": 1}

    def asks(**trainer) -> dict:
        return AblateRayLauncher._data_parallel(OmegaConf.create({"trainer": trainer}), remote)

    assert asks(devices=1) == {}  # the launcher's own per-job request stands
    assert asks(devices=4) == {"num_gpus": 4, "num_cpus": 4}
    assert asks(devices="0,1") == {"num_gpus": 2, "num_cpus": 2}
    assert AblateRayLauncher._data_parallel(OmegaConf.create({"trainer": {"devices": 2}}),
                                            {"num_gpus": 0, "num_cpus": 2}) == \
        {"num_gpus": 0, "num_cpus": 4}  # a runtime without GPUs: cores only
    with pytest.raises(ValueError, match="runs a job on one node"):
        asks(devices=2, num_nodes=2)


@pytest.mark.parametrize(("rows", "shares"),
                         [(14, [2, 2, 2, 1]), (13, [2, 2, 2]), (15, [2, 2, 2, 1])])
def test_each_process_takes_an_equal_share_of_every_training_batch(rows: int,
                                                                   shares: list[int]) -> None:
    """Global batches of 4 over 2 processes; the short last one loses the odd row (the mean of
    the shares' losses is then the batch's), or goes when nothing is left to share."""
    import torch

    from ablate.data.batches import TensorBatches

    x, y = torch.arange(rows).float().view(rows, 1, 1, 1), torch.arange(rows)
    one = list(TensorBatches(x, y, 4, shuffle=True, seed=3))
    parts = [list(TensorBatches(x, y, 4, shuffle=True, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert [len(b[1]) for b in parts[0]] == [len(b[1]) for b in parts[1]] == shares
    assert len(TensorBatches(x, y, 4, shuffle=True, world=2)) == len(shares)
    for whole, first, second in zip(one, *parts, strict=False):
        together = torch.cat([first[1], second[1]])
        assert together.tolist() == whole[1][:len(together)].tolist()  # the batch, in order
    # evaluation: contiguous shares, in rank order the set itself, each row once
    halves = [torch.cat([b[1] for b in TensorBatches(x, y, 4, rank=r, world=2)]) for r in (0, 1)]
    assert torch.cat(halves).tolist() == y.tolist()


def test_device_counts_are_read_as_lightning_reads_them() -> None:
    from ablate.budget import count

    assert [count(v) for v in (2, "2", "0,1", [0, 1, 2], "auto", "-1", -1, 0, True)] == \
        [2, 2, 2, 3, None, None, None, None, None]
