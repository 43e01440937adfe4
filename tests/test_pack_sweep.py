"""``hydra.sweeper.pack=K`` end to end, through the real CLI: seeds of a cell trained in one job,
each ending as its own run (record, predictions, checkpoint, W&B run, status), relaunched and
resumed seed by seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import TINY, cli_env, held, load, result_files, run_cli

from ablate import records
from ablate.report.wandb_runs import inspect_wandb_run

pytestmark = pytest.mark.slow
SEEDS = ["-m", *(o for o in TINY if o != "seed=0"), "seed=0,1,2", "model=B",
         "trainer.max_epochs=2"]
OFFLINE = {"WANDB_MODE": "offline"}


def _by_seed(workdir) -> dict[int, dict]:
    return {r["cell"]["seed"]: r for r in map(load, result_files(workdir))}


def test_packed_seeds_end_as_their_own_runs_and_a_relaunch_trains_only_the_missing(tmp_path):
    packed_dir, plain_dir = tmp_path / "packed", tmp_path / "plain"
    packed_dir.mkdir(), plain_dir.mkdir()
    wandb = [o for o in SEEDS if o != "logger=none"] + ["logger=wandb"]
    done = run_cli([*wandb, "hydra.sweeper.pack=3"], packed_dir, env=OFFLINE)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[pack] 3 runs in 1 jobs of up to 3 seeds" in done.stdout
    assert "3 finished, 0 skipped (finished before), 0 failed" in done.stdout
    # seed 1 alone: the run a seed packed into another seed's job stands for
    plain = run_cli([o for o in SEEDS if o not in ("-m", "seed=0,1,2")] + ["seed=1"], plain_dir)
    assert plain.returncode == 0, plain.stderr[-3000:]
    packed, alone = _by_seed(packed_dir), _by_seed(plain_dir)
    assert sorted(packed) == [0, 1, 2] and sorted(alone) == [1]
    folders = {record["output_dir"] for record in packed.values()}
    assert len(folders) == 3
    markers = [load(p) for p in packed_dir.glob(f"sweeps/**/{records.START_FILE}")]
    assert len({m["pid"] for m in markers}) == 1  # one process trained all three
    names = set()
    own, record = alone[1], packed[1]
    # the run it stands for: same identity, same curve (to float reordering), same fields
    assert record["config_id"] == own["config_id"]
    assert {**record["cell"], "logger": "none"} == own["cell"]  # W&B on here only
    assert record.keys() == own.keys()
    for mine, theirs in zip(record["history"], own["history"], strict=True):
        assert mine.keys() == theirs.keys()
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    own_checkpoint = torch.load(tmp_path / own["output_dir"] / "checkpoints" / "last.ckpt",
                                weights_only=True)
    for record in packed.values():  # each with its own files
        assert record["status"] == "finished"
        folder = tmp_path / record["output_dir"]
        assert (folder / record["predictions"]["file"]).exists()
        checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["ablate_identity"]["config_id"] == record["config_id"]
        assert checkpoint["state_dict"].keys() == own_checkpoint["state_dict"].keys()
        [run_dir] = (folder / "wandb").glob("offline-run-*")
        meta = inspect_wandb_run(run_dir)
        assert meta["run_id"] == record["wandb"]["id"]
        names.add(meta["name"])
    assert len(names) == 3

    # seeds 0 and 2 lost (their folders wiped): the relaunch packs just those two
    for seed in (0, 2):
        folder = packed_dir / packed[seed]["output_dir"]
        for path in folder.rglob("*"):
            if path.is_file():
                path.unlink()
    again = run_cli([*SEEDS, "hydra.sweeper.pack=3"], packed_dir)  # the logger: no identity
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 to run, 0 to resume, 1 skipped" in again.stdout
    assert "[pack] 2 runs in 1 jobs of up to 3 seeds" in again.stdout
    assert sorted(_by_seed(packed_dir)) == [0, 1, 2]


def test_a_packed_seed_that_diverges_is_recorded_diverged_and_the_others_finish(workdir):
    flag = workdir / "faults-on"
    flag.touch()
    faults = ["datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
              "+datamodule.faults={s1:poison}"]
    done = run_cli([*SEEDS, *faults, "hydra.sweeper.pack=3"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]  # a diverged run is a result
    found = _by_seed(workdir)
    assert {seed: r["status"] for seed, r in found.items()} == {
        0: "finished", 1: "diverged", 2: "finished"}
    assert found[1]["error"].startswith("training loss became nan in epoch 0")
    assert found[1]["history"] == [] and found[1]["epochs"] == 0  # as its own run's: none
    assert [row["epoch"] for row in found[0]["history"]] == [0, 1]
    assert all(r["metrics"]["test_error"] < 1 for s, r in found.items() if s != 1)


def test_a_killed_pack_resumes_seed_by_seed_from_each_seeds_own_checkpoint(workdir):
    flag = workdir / "hold"  # the pack waits at its second epoch while it exists
    budget = [o for o in SEEDS if o != "trainer.max_epochs=2"] + [
        "trainer.max_epochs=4", "trainer.limit_train_batches=6", "seed=0,1", *held(flag)]
    budget.remove("seed=0,1,2")
    sweep = subprocess.Popen([sys.executable, "-m", "ablate.run", *budget,
                              "hydra.sweeper.pack=2"], cwd=workdir, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(workdir.glob("sweeps/quick/*/*/checkpoints/last.ckpt"))) < 2:
        assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.1)
    os.killpg(sweep.pid, signal.SIGKILL)  # the pack, mid-training
    sweep.wait()
    assert result_files(workdir) == []
    flag.unlink()
    again = run_cli([*budget, "hydra.sweeper.pack=2"], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run, 2 to resume, 0 skipped" in again.stdout  # each from its own checkpoint
    resumed = _by_seed(workdir)
    assert sorted(resumed) == [0, 1]
    # each seed continued alone where the pack stopped: the result of its run never stopped
    lone = [o for o in budget if o not in ("-m", "seed=0,1")] + ["seed=1"]
    reference = run_cli([*lone, "sweep_name=reference"], workdir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    found = workdir.glob("sweeps/reference/**/result.json")
    [alone] = map(load, found)
    for record in resumed.values():
        assert record["resumed_epoch"] >= 1
        assert [row["epoch"] for row in record["history"]] == list(range(4))
    record = resumed[1]
    assert record["config_id"] == alone["config_id"]
    assert record["metrics"]["test_error"] == pytest.approx(alone["metrics"]["test_error"],
                                                           abs=0.02)
    assert record["history"][-1]["train_loss"] == pytest.approx(
        alone["history"][-1]["train_loss"], rel=1e-3)


def test_bad_pack_settings_stop_before_anything_runs(workdir):
    done = run_cli([*SEEDS, "hydra.sweeper.pack=4"], workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "hydra.sweeper.pack=4 is more than the 3 seeds a cell of this grid has" in done.stderr
    assert result_files(workdir) == []
