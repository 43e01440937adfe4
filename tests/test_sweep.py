"""Sweeps with the basic launcher: plan, dry run, skip, resume after kill -9, failure isolation,
summary and exit status, one directory per sweep. The engines (Ray, SLURM) have their own
files; what is tested here holds for every launcher, since it lives in the sweeper.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY, cli_env, compose_config, held, load, result_files, run_cli

from ablate import config as config_lib
from ablate import identity, provenance, records
from ablate.network import build_network
from ablate.spec import all_conv, conv_pool, normalise, pool, strided
from ablate.status import Action, Status
from ablate.sweep import estimate, index, plan, state

# ------------------------------------------------------------------------------ fast: pieces


def test_unique_dir_gives_every_caller_its_own_directory(tmp_path):
    wanted = tmp_path / "sweeps" / "x" / "2026-01-01_00-00-00"
    claimed: list[Path] = []
    threads = [threading.Thread(target=lambda: claimed.append(plan.unique_dir(wanted)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and wanted in claimed
    assert wanted.with_name(wanted.name + "_2") in claimed


def test_config_id_ignores_launch_and_display_settings_but_not_training():
    def config_id(*overrides: str) -> str:
        return identity.config_id(
            json.loads(json.dumps(_container(compose_config(list(overrides))))))

    base = config_id("experiment=quick")
    assert base == config_id("experiment=quick", "resume_from=/x/last.ckpt", "sweep_name=other",
                             "logger=none", "trainer.enable_progress_bar=false")
    assert base == config_id("experiment=quick", "lr=0.01")  # quick's own lr, typed again
    assert base != config_id("experiment=quick", "lr=0.05")
    assert base != config_id("experiment=quick", "trainer.max_epochs=3")


def _container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=False)


def _past(tmp_path: Path, name: str, state_: str, checkpoint: bool = False, age: float = 0.0):
    return state.PastRun(tmp_path / name, "id", state_,
                         tmp_path / name / "last.ckpt" if checkpoint else None,
                         f"{state_} error", None, time.time() - age)


def test_decide_skips_finished_resumes_interrupted_reruns_failed(tmp_path):
    finished = _past(tmp_path, "a", Status.FINISHED, age=50)
    interrupted = _past(tmp_path, "b", Status.INTERRUPTED, checkpoint=True)
    failed = _past(tmp_path, "c", Status.DIVERGED)
    assert state.decide([]).action == Action.RUN
    assert state.decide([interrupted, failed, finished]).action == Action.SKIP
    resume = state.decide([failed, interrupted])
    assert resume.action == Action.RESUME and resume.checkpoint == interrupted.checkpoint
    unfinished = [failed, _past(tmp_path, "d", Status.INTERRUPTED)]
    skip = state.decide(unfinished)  # divergence is a result: not run again by default
    assert skip.action == Action.SKIP and skip.reason == "diverged"
    rerun = state.decide(unfinished, rerun_diverged=True)
    assert rerun.action == Action.RUN and rerun.reason.startswith("diverged before")
    running = state.decide([_past(tmp_path, "e", Status.RUNNING), interrupted])
    assert running.action == Action.SKIP and "running" in running.reason


def _run_dir(root: Path, name: str, *, marker: dict | None = None, record: dict | None = None,
             checkpoint: bool = False) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    if marker is not None:
        (directory / records.START_FILE).write_text(json.dumps(marker))
    if record is not None:
        time.sleep(0.01)  # the record is newer than the marker, as when a run ends
        (directory / records.RESULT_FILE).write_text(json.dumps(record))
    if checkpoint:
        (directory / records.CHECKPOINT_FILE).parent.mkdir()
        (directory / records.CHECKPOINT_FILE).write_bytes(b"ckpt")
    return directory


def test_scan_reads_each_run_directory_state(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = {"config_id": "c1", "host": os.uname().nodename}
        _run_dir(tmp_path, "0", marker=marker, record={"status": "finished", "cell": {},
                                                          "config_id": "c1"})
        _run_dir(tmp_path, "1", marker={**marker, "config_id": "c2", "pid": 2**22 + 7},
                 checkpoint=True)  # a dead pid: interrupted
        _run_dir(tmp_path, "2", marker={**marker, "config_id": "c3", "pid": alive.pid,
                                        "pid_start": provenance.process_start(alive.pid)})
        _run_dir(tmp_path, "3", marker={**marker, "config_id": "c4"},
                 record={"status": "failed", "cell": {}, "config_id": "c4", "interrupted": True,
                         "error": "KeyboardInterrupt"}, checkpoint=True)
        _run_dir(tmp_path, "4", record={"status": "diverged", "cell": {}, "config_id": "c5",
                                        "error": "nan"})
        (tmp_path / "5").mkdir()
        (tmp_path / "5" / records.RESULT_FILE).write_text("{trunc")  # damaged: ignored
        found = index.scan(tmp_path)
        states = {cid: runs[0].state for cid, runs in found.items()}
        assert states == {"c1": "finished", "c2": "interrupted", "c3": "running",
                          "c4": "interrupted", "c5": "diverged"}
        assert found["c2"][0].checkpoint == tmp_path / "1" / records.CHECKPOINT_FILE
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("model", ["A", "B", "C"])
@pytest.mark.parametrize("transform", [pool, strided, conv_pool, all_conv])
def test_estimated_macs_match_the_built_network(model, transform):
    import yaml

    layers = normalise(yaml.safe_load((REPO / "conf" / "model" / f"{model}.yaml").read_text())
                       ["layers"])
    network = build_network(layers, transform, in_channels=3, image_size=32, num_classes=10)
    counted = []

    def count(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        counted.append(output[0].numel() * kernel * module.in_channels // module.groups)

    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(count)
    network.eval()
    with torch.no_grad():
        network(torch.zeros(1, 3, 32, 32))
    assert estimate.forward_macs(transform(layers), 3, 32, 10) == sum(counted)


def test_grid_line_counts_cells_and_runs():
    axes = [("model", ["A", "B", "C"]), ("downsample", ["pool", "stride", "convpool", "conv"]),
            ("lr", ["0.25", "0.1", "0.05", "0.01"]), ("seed", ["0", "1"]), ("dataset", ["x"])]
    line = plan.grid_line(axes, 96)
    assert "= 12 cells x 4 lr (0.25, 0.1, 0.05, 0.01) x 2 seed (0, 1) = 96 runs" in line


# ----------------------------------------------------------------------- slow: the real CLI

SLOW = pytest.mark.slow


@SLOW
def test_dry_run_prints_the_plan_and_launches_nothing(workdir):
    done = run_cli(["-m", "+sweep=quick", *TINY, "hydra.sweeper.dry_run=true"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "sweep 'quick' (dry run: nothing is launched)" in out
    assert "model (3: A, B, C) x downsample (3: pool, stride, conv) = 9 cells" in out
    assert "9 to run, 0 to resume, 0 skipped" in out and "estimated time:" in out
    assert out.count("  run     #") == 9
    assert not (workdir / "sweeps").exists()


@SLOW
def test_invalid_config_in_a_grid_stops_before_launching(workdir):
    done = run_cli(["-m", *TINY, "lr=0.02,-1"], workdir)
    assert done.returncode == 2
    assert "invalid #1   lr=-1: lr=-1 is not a positive number" in done.stdout
    assert result_files(workdir) == []


def test_a_sweep_name_must_be_one_folder_name():
    for bad in ("../../escape", "a b/c", ".", "..", "", "/abs/path", ".hidden", "a/b", 3):
        problem = config_lib.sweep_name_problem(bad)
        assert problem and f"sweep_name={bad!r}" in problem and "single path component" in problem
    for good in ("table3", "quick", "my-run_2.v1", "0"):
        assert config_lib.sweep_name_problem(good) is None


@SLOW
def test_a_bad_sweep_name_or_a_typo_in_a_grid_leaves_nothing_behind(workdir):
    # refused before anything runs: nothing written above, beside or in sweeps/
    (workdir / "deep" / "er").mkdir(parents=True)
    for bad, multirun in (("../../escape", ["-m"]), ("a b/c", ["-m"]), ("../../escape", [])):
        done = run_cli([*multirun, *TINY, f"sweep_name='{bad}'"], workdir / "deep" / "er")
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"sweep_name={bad!r} is not a folder name" in done.stderr
    assert sorted(p.name for p in workdir.rglob("*")) == ["deep", "er"]
    # a misspelt option errors clearly, after composing the grid, before making the folder
    done = run_cli(["-m", *TINY, "downsample=pool,strid"], workdir)
    assert done.returncode == 2 and "strid" in done.stderr, done.stderr[-2000:]
    assert not (workdir / "sweeps").exists()


def _faulty(flag: Path) -> list[str]:
    return ["datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
            "+datamodule.faults={s1:raise,s2:diverge}"]


@SLOW
def test_failures_are_isolated_summarised_and_rerun_on_relaunch(workdir):
    flag = workdir / "faults-on"
    flag.touch()
    grid = ["-m", *TINY, "seed=0,1,2", *_faulty(flag)]  # after TINY, whose seed=0 would win
    first = run_cli(grid, workdir)
    assert first.returncode == 1, first.stderr[-3000:]  # seed 1 failed
    assert "1 finished, 1 diverged, 0 skipped (finished before), 1 failed" in first.stdout
    assert "RuntimeError: injected fault for seed 1" in first.stdout
    assert "training loss became nan" in first.stdout
    by_seed = {load(p)["cell"]["seed"]: load(p) for p in result_files(workdir)}
    assert {s: r["status"] for s, r in by_seed.items()} == {0: "finished", 1: "failed",
                                                            2: "diverged"}

    flag.unlink()  # the fault is fixed: the same command reruns exactly the failed cell; the
    # diverged one is a result (its random state would diverge again): skipped, exit 0
    second = run_cli(grid, workdir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 to run, 0 to resume, 2 skipped" in second.stdout
    assert "(failed before: RuntimeError: injected fault for seed 1)" in second.stdout
    assert "1 finished, 2 skipped (finished before), 0 failed" in second.stdout
    finished = [load(p) for p in result_files(workdir) if load(p)["status"] == "finished"]
    assert sorted(r["cell"]["seed"] for r in finished) == [0, 1]

    third = run_cli([*grid, "hydra.sweeper.rerun_diverged=true"], workdir)  # another try
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "1 to run, 0 to resume, 2 skipped" in third.stdout
    assert "(diverged before:" in third.stdout
    finished = [load(p) for p in result_files(workdir) if load(p)["status"] == "finished"]
    assert sorted(r["cell"]["seed"] for r in finished) == [0, 1, 2]


def _wait_for(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        assert process.poll() is None, "the sweep ended before its checkpoint appeared"
        time.sleep(0.05)
    raise TimeoutError(path_glob)


@SLOW
def test_kill_9_mid_training_then_relaunch_resumes_from_the_checkpoint(workdir):
    flag = workdir / "hold"  # the runs wait at their second epoch while it exists
    budget = [*TINY, "trainer.max_epochs=4", "trainer.limit_train_batches=10", *held(flag)]
    grid = ["-m", "model=A,B", *budget]
    sweep = subprocess.Popen([sys.executable, "-m", "ablate.run", *grid], cwd=workdir,
                             env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = _wait_for("sweeps/quick/*/0/checkpoints/last.ckpt", workdir, sweep)
    os.killpg(sweep.pid, signal.SIGKILL)  # the whole process group, mid-training
    sweep.wait()
    killed = checkpoint.parent.parent
    assert not (killed / records.RESULT_FILE).exists()
    epochs_done = torch.load(checkpoint, weights_only=True)["epoch"] + 1
    assert epochs_done == 1

    flag.unlink()
    again = run_cli(grid, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 to run, 1 to resume, 0 skipped" in again.stdout  # the plan, before launching
    assert f"resume  #0   model=A  from {checkpoint.relative_to(workdir)}" in again.stdout
    assert "2 finished (1 resumed)" in again.stdout

    records_ = [load(p) for p in result_files(workdir)]
    assert sorted(r["cell"]["model"] for r in records_) == ["A", "B"]  # one record per cell
    assert all(r["status"] == "finished" for r in records_)
    resumed = next(r for r in records_ if r["cell"]["model"] == "A")
    assert resumed["resumed_from"] == str(checkpoint.resolve())
    assert resumed["resumed_epoch"] >= epochs_done
    assert [row["epoch"] for row in resumed["history"]] == list(range(4))

    # Resuming restores the random streams too: the result is that of a run never stopped.
    reference = run_cli(["model=A", *budget, "sweep_name=reference"], workdir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    [uninterrupted] = [load(p) for p in workdir.glob("sweeps/reference/*/result.json")]
    assert uninterrupted["config_id"] == resumed["config_id"]
    assert uninterrupted["metrics"] == resumed["metrics"]


@SLOW
def test_two_sweeps_started_in_the_same_second_get_their_own_directories(workdir):
    same = ["-m", *TINY, "hydra.sweep.dir=sweeps/same/2026-01-01_00-00-00",
            "hydra.sweeper.resume=false"]  # both run their cell, at the same time
    runs = [subprocess.Popen([sys.executable, "-m", "ablate.run", *same], cwd=workdir,
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    directories = sorted(p.name for p in (workdir / "sweeps" / "same").iterdir())
    assert directories == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_2"]
    for directory in directories:
        [record] = (workdir / "sweeps" / "same" / directory).glob("*/result.json")
        assert load(record)["output_dir"].startswith(str(workdir / "sweeps" / "same" / directory))


@pytest.mark.parametrize("launcher", ["ray_local", "ray_cluster", "slurm"])
def test_launcher_presets_compose(launcher):
    overrides = [f"hydra/launcher={launcher}"]
    if launcher == "ray_cluster":
        overrides.append("hydra.launcher.ray.init.address=ray://head:10001")
    cfg = compose_config(overrides).hydra.launcher
    if launcher.startswith("ray"):
        assert cfg._target_.endswith("AblateRayLauncher") and cfg.jobs_per_gpu == 1
        assert cfg.ray.remote.max_calls == 1  # a fresh process per job
    else:
        assert cfg._target_.endswith("SlurmLauncher")
        assert cfg.gres == "gpu:1" and cfg.max_num_timeout > 0 and cfg.array_parallelism > 0


def test_sweep_presets_set_the_grid_and_the_sweep_name():
    cfg = compose_config(["+sweep=table3"])
    assert cfg.sweep_name == "table3" and cfg.dataset.name == "cifar10"
    params = cfg.hydra.sweeper.params
    assert params.model == "A,B,C" and params.downsample == "pool,stride,convpool,conv"
    assert params.lr == "0.25,0.1,0.05,0.01"
    assert compose_config(["+sweep=cifar100"]).dataset.num_classes == 100


def test_quick_claims_has_a_cell_for_every_claim_that_fits_digits():
    from ablate.report import claims

    cfg = compose_config(["experiment=quick", "+sweep=quick_claims"])
    assert cfg.sweep_name == "quick_claims" and cfg.dataset.name == "digits"
    params = cfg.hydra.sweeper.params
    values = {*params.downsample.split(","),
              *(f"{v.downsample} p={v['downsample.p']}" for v in cfg.hydra.sweeper.variants)}
    assert params.model == "A,B,C" and values >= {"pool", "stride", "convpool", "conv", "avgpool"}
    for claim in claims.packaged()[1]:
        if claim.axis == "augmentation":  # flips make other digits: left out on purpose
            continue
        assert claim.axis == "downsample" and {claim.a, claim.b} <= values, claim.id


def test_a_full_disk_under_the_sweep_costs_sweep_json_not_the_summary(tmp_path):
    from helpers import mounted

    from hydra_plugins.ablate_sweeper.sweeper import AblateSweeper

    with mounted("tmpfs", tmp_path / "disk", size="64k") as disk:
        (disk / "filler").write_bytes(b"\0" * 60 * 1024)
        with open(disk / "filler", "ab") as stream:
            try:
                stream.write(b"\0" * 64 * 1024)
            except OSError:
                pass  # full
        sweeper = AblateSweeper()
        job = plan.PlannedRun(0, ["seed=0"], "seed=0", "id", state.Decision(Action.RUN, "new"))
        sweeper._save(disk, "full", disk, [("seed", ["0"])], [job] * 200, 0.0, None)
        assert sweeper.unsaved is not None and "No space left on device" in sweeper.unsaved
        assert not (disk / plan.SWEEP_FILE).exists() and sorted(disk.iterdir()) == [
            disk / "filler"]  # no temporary file left either
