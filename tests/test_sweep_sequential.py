"""hydra.sweeper.seeds=auto: rounds of seeds until the claims are decided (ablate.sweep.sequential).

The pieces on hand-made records (what a round decides to add, the budget, bad settings), then
a real sequential sweep through the CLI and its relaunch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import TINY, result_files, run_cli
from test_report_evidence import run

from ablate import atomic, records
from ablate.report import claims, load
from ablate.report import issues as kinds
from ablate.report.issues import Issues
from ablate.sweep import plan, sequential

POOL, CONV = ("model=C", "downsample=pool"), ("model=C", "downsample=conv")


@pytest.mark.parametrize("values, message", [
    (("auto", 5, 4, None), "min_seeds 5 > max_seeds 4"),
    (("auto", 1, None, None), "min_seeds 1 < 2"),
    (("auto", None, None, 0), "max_runs=0: a budget of at least one run"),
    (("3", None, None, None), "the only value is auto"),
])
def test_bad_settings_name_the_setting_and_the_fix(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sequential.settings(*values)


def test_defaults_come_from_the_decision_procedure():
    assert sequential.settings("auto", None, None, None) == sequential.Plan(3, 10, None)
    assert sequential.settings(None, 5, None, None) is None  # seeds as the grid gives them


def test_a_grid_that_tests_no_claim_is_refused_naming_what_claims_need():
    problem = sequential.untestable([POOL, ("model=C", "downsample=stride")][:1])
    assert "no claim can be tested on this grid's cells" in problem
    assert ("all-cnn-beats-pooling-A needs model=A downsample=conv and model=A "
            "downsample=pool") in problem
    assert sequential.untestable([POOL, CONV]) is None


def test_a_grid_seeds_auto_cannot_run_is_refused_before_anything_trains():
    plan = sequential.Plan(3, 10, None)
    assert sequential.refusal(plan, [POOL, CONV], resume=True) is None
    assert "cannot run with hydra.sweeper.resume=false" in sequential.refusal(
        plan, [POOL, CONV], resume=False)
    assert sequential.refusal(sequential.Plan(3, 10, 5), [POOL, CONV], resume=True) == (
        "hydra.sweeper.max_runs=5 is below the first round (2 cells x min_seeds 3); raise it")
    assert "no claim can be tested" in sequential.refusal(plan, [POOL], resume=True)


def _cells(root: Path, seeds: int, pool: tuple, conv: tuple) -> tuple[Path, dict]:
    """Model C's pool and conv cells, and the config id -> cell map a sweep would hold."""
    ours = {}
    for seed in range(seeds):
        for mode, errors, cell in (("pool", pool, POOL), ("conv", conv, CONV)):
            path = run(root, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                       test=errors[seed], with_predictions=False)
            # the hand-made records share one config (the cell is written over it): give each
            # run the id of its own, as composing its overrides would
            record = json.loads(path.read_text())
            record["config_id"] = f"C-{mode}-{seed}"
            atomic.write_json_atomic(path, record)
            ours[records.load(path).config_id] = cell
    return root, ours


def test_a_round_adds_one_seed_to_the_cells_of_open_claims(tmp_path):
    # conv 2 points below pool at a spread of ~1 point: undecided at 3 seeds, but 10 could
    root, ours = _cells(tmp_path / "sweeps", 3, (0.120, 0.130, 0.140), (0.100, 0.115, 0.105))
    plan = sequential.Plan(3, 10, None)
    found = sequential.judge(root, ours, {POOL: 3, CONV: 3}, plan)
    assert found.targets == {POOL: 4, CONV: 4}
    assert found.reasons == ["All-CNN-C vs Model C (all-cnn-beats-pooling-C) undecided at "
                             "n = 3: +1 seed"]
    # a budget of 7 runs in all: room for one run, but a claim's two cells go together
    capped = sequential.judge(root, ours, {POOL: 3, CONV: 3}, sequential.Plan(3, 10, 7))
    assert capped.targets == {POOL: 3, CONV: 3}
    assert capped.reasons[-1] == ("budget of 7 runs reached (hydra.sweeper.max_runs): no "
                                  "more seeds for the claims left")
    assert sequential.judge(root, ours, {POOL: 3, CONV: 3},
                            sequential.Plan(3, 10, 8)).targets == {POOL: 4, CONV: 4}
    # at max_seeds nothing is added, whatever the claim says
    assert sequential.judge(root, ours, {POOL: 3, CONV: 3},
                            sequential.Plan(2, 3, None)).targets == {POOL: 3, CONV: 3}
    # runs of another grid under the same root (here: all of them) are not ours to extend
    assert sequential.judge(root, {}, {POOL: 3, CONV: 3}, plan).targets == {POOL: 3, CONV: 3}


def test_a_decided_claim_adds_nothing(tmp_path):
    pool = (0.120, 0.122, 0.118, 0.121, 0.119, 0.123, 0.117)
    conv = (0.100, 0.102, 0.098, 0.101, 0.099, 0.102, 0.097)
    root, ours = _cells(tmp_path / "sweeps", 7, pool, conv)
    found = sequential.judge(root, ours, {POOL: 7, CONV: 7},
                             sequential.Plan(3, 10, None))
    assert found.targets == {POOL: 7, CONV: 7} and found.reasons == []
    [outcome] = [o for o in found.outcomes if o.claim.id == "all-cnn-beats-pooling-C"]
    assert outcome.result == "supported"


AUTO = [*[o for o in TINY if o != "seed=0"], "model=C", "downsample=pool,conv",
        "hydra.sweeper.seeds=auto", "hydra.sweeper.min_seeds=2", "hydra.sweeper.max_seeds=3"]


@pytest.mark.slow
def test_a_sequential_sweep_runs_rounds_and_a_relaunch_trains_nothing(workdir):
    # seed 1 of every cell fails: one seed less, not the end of the study; judged on the
    # others, exit 1; the relaunch reruns it
    flag = workdir / "faults-on"
    flag.touch()
    faulty = ["datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
              "+datamodule.faults={s1:raise}"]
    broken = run_cli(["-m", *AUTO, *faulty], workdir)
    assert broken.returncode == 1, broken.stderr[-3000:]
    assert "[seeds=auto] round 1: 2 cells, 4 runs in all" in broken.stdout
    assert "undecided at n = 1: +1 seed" in broken.stdout  # seed 1 failed: seed 2 is added
    assert "[seeds=auto] round 2: 2 cells, 6 runs in all" in broken.stdout
    assert "[seeds=auto] where the claims stand:" in broken.stdout
    flag.unlink()
    # the relaunch goes through Ray (each round one launch of whichever launcher is set)
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    first = run_cli(["-m", *AUTO, *faulty, "hydra/launcher=ray_local",
                     "hydra.launcher.ray.init.num_cpus=2"], workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 jobs at once on 2 CPUs" in first.stdout + first.stderr
    assert "2 to run, 0 to resume, 2 skipped" in first.stdout  # each cell's failed seed 1
    runs = result_files(workdir)
    finished = sorted((r.cell["model"], r.cell["downsample"], r.cell["seed"])
                      for r in map(records.load, runs) if r.status == "finished")
    assert finished == [("C", mode, seed) for mode in ("conv", "pool") for seed in range(3)]
    assert len({path.parent for path in runs}) == len(runs)  # each job its own folder
    standing = first.stdout.split("[seeds=auto] where the claims stand:", 1)[1]
    assert "all-cnn-beats-pooling-C: " in standing
    again = run_cli(["-m", *AUTO, *faulty], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert result_files(workdir) == runs  # trained nothing twice
    assert "0 to run" in again.stdout
    assert again.stdout.split("[seeds=auto] where the claims stand:", 1)[1] == standing
    # the report judges with the sweep's seed range (its sweep.json), so it says what it said
    frame, issues = load.load_runs([workdir / "sweeps"], wandb_offline="none")
    assert claims.sweep_seeds(frame, issues) == (2, 3)
    config, listed = claims.packaged()
    outcomes = claims.evaluate(frame, listed, config, set(), claims.sweep_seeds(frame, issues))
    said = dict(line.strip().split(": ", 1) for line in standing.strip().splitlines())
    assert {o.claim.id: o.result for o in outcomes if o.decision is not None} == said


def test_the_report_decides_with_the_sweeps_seed_range_and_warns_where_they_differ(tmp_path):
    folders = []
    for name, seeds in (("a", (2, 6)), ("b", (3, 10)), ("c", None)):
        folder = tmp_path / name
        (folder / "0").mkdir(parents=True)
        (folder / "multirun.yaml").write_text("{}")
        plan.save(folder, name, tmp_path, [], [], 0.0, 1.0, seeds)
        folders.append(str(folder / "0" / records.RESULT_FILE))
    frame = pd.DataFrame({"source": "record", "path": folders})
    issues = Issues()
    assert claims.sweep_seeds(frame.iloc[[0, 2]], issues) == (2, 6)  # a plain sweep adds none
    assert claims.sweep_seeds(frame.iloc[[2]], issues) is None and not issues.counts
    assert claims.sweep_seeds(frame, issues) is None
    assert issues.messages == [(kinds.SEED_RANGES, "2-6, 3-10")]


@pytest.mark.slow
def test_bad_sequential_settings_stop_before_anything_runs(workdir):
    result = run_cli(["-m", *AUTO, "hydra.sweeper.min_seeds=5", "hydra.sweeper.max_seeds=4"],
                     workdir)
    assert result.returncode == 2
    assert "min_seeds 5 > max_seeds 4" in result.stderr
    assert not (workdir / "sweeps").exists()
