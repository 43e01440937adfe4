"""Sweeps of thousands of jobs: the fast composition equals Hydra's, and the run index gives
the same answers as reading every run, whatever happened to it or to the runs since."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import TINY  # noqa: F401 - registers the plugins and trainer/open, as the CLI does
from omegaconf import OmegaConf

from ablate import atomic, identity, records
from ablate.sweep import index, plan, state
from hydra_plugins.ablate_sweeper.sweeper import planner

PRESETS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "sweep").glob("*.yaml"))


CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.slow  # jobs of every preset composed in full by Hydra too (~0.14 s each)
@pytest.mark.parametrize("preset", PRESETS)
def test_fast_composition_equals_hydras_for_the_jobs_of_every_preset(preset):
    # An extra plain value and a trainer key the YAML lacks: both go the fast way too.
    with planner([f"+sweep={preset}", "trainer.max_epochs=3", "trainer.gradient_clip_val=1.0",
                  "hydra.sweeper.dry_run=true"]) as (sweeper, task):
        grid, _ = sweeper._grid(task)
        composer = sweeper._composer()
        # Hydra's full composition of the first and the last job of each combination of group
        # choices, and of every value any job gives (the fast way composes each combination
        # once and applies values to a copy): every path of the fast way, at a third of the cost
        checked, values = set(), set()
        groups = {p.name for p in CONF.iterdir() if p.is_dir()}
        combos = [tuple(o for o in job if o.lstrip("+").split("=")[0] in groups) for job in grid]
        for index, overrides in enumerate(grid):
            fast = composer.compose(overrides)
            last = index + 1 == len(grid) or combos[index + 1] != combos[index]
            new_values = set(overrides) - values
            if combos[index] in checked and not last and not new_values:
                continue
            checked.add(combos[index])
            values |= set(overrides)
            full = sweeper.config_loader.load_sweep_config(sweeper.config, list(overrides))
            expected = OmegaConf.to_container(full, resolve=False)
            del expected["hydra"]  # the launcher composes Hydra's node for each job it starts
            assert OmegaConf.to_container(fast, resolve=False) == expected, overrides
            assert OmegaConf.is_struct(fast)
            assert identity.config_id(fast) == identity.config_id(full)
        # once per combination of config-group choices (plain values such as lr, seed or
        # downsample.p are applied to a copy), not once per job
        assert composer.full_compositions == len(set(combos))


def test_an_override_the_fast_way_cannot_apply_gets_hydras_own_error():
    with planner(["experiment=quick", "no_such_key=1,2"]) as (sweeper, task):
        overrides = sweeper._grid(task)[0][0]  # the quick preset sweeps seeds too
        with pytest.raises(Exception, match="no_such_key"):
            sweeper._composer().compose(overrides)


# ------------------------------------------------------------------------------- run index

AN_HOUR_AGO = time.time() - 3600


def _write_run(root: Path, rel: str, config_id: str, status: str | None = "finished") -> Path:
    """A run directory as a run leaves it: a start marker, then (unless still going) a record."""
    directory = root / rel
    marker = {"config_id": config_id, "host": "elsewhere", "pid": 1}
    atomic.write_json_atomic(directory / records.START_FILE, marker)
    if status is not None:
        atomic.write_json_atomic(directory / records.RESULT_FILE, {
            "status": status, "cell": {}, "config_id": config_id, "wall_seconds": 10.0,
            "error": None if status == "finished" else "boom"})
        os.utime(directory / records.RESULT_FILE, (AN_HOUR_AGO + 1, AN_HOUR_AGO + 1))
    os.utime(directory / records.START_FILE, (AN_HOUR_AGO, AN_HOUR_AGO))
    return directory


def _age(root: Path) -> None:
    """Every directory last changed an hour ago: the index trusts what it has seen."""
    for directory, _, _ in os.walk(root):
        os.utime(directory, (AN_HOUR_AGO, AN_HOUR_AGO))


def _states(found: dict[str, list[state.PastRun]]) -> dict[str, list[tuple[str, str]]]:
    return {cid: sorted((str(r.directory), r.state) for r in runs) for cid, runs in found.items()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "sweeps" / "grid"
    _write_run(root, "2026-01-01_00-00-00/0", "a")
    _write_run(root, "2026-01-01_00-00-00/1", "b", status="failed")
    _write_run(root, "2026-01-01_00-00-00/2", "c", status=None)  # killed: no record
    _write_run(root, "2026-01-02_00-00-00/0", "b")
    (root / "2026-01-02_00-00-00" / ".submitit" / "x").mkdir(parents=True)
    _age(root)
    return root


def test_the_index_answers_as_a_scan_and_is_trusted_while_nothing_changes(root):
    scanned = _states(index.scan(root))
    assert scanned == _states(index.past_runs(root))  # no index yet: a scan, which writes it
    assert (root / index.INDEX_FILE).is_file()
    assert _states(index.past_runs(root)) == scanned  # nothing changed: the index answers
    # A record changed in place (its directory's time unchanged) is verified, never trusted.
    (root / "2026-01-01_00-00-00/0" / records.RESULT_FILE).write_text("{damaged")
    assert _states(index.past_runs(root))["a"] == [(scanned["a"][0][0], "failed")]


def test_changes_made_elsewhere_are_found_through_the_directories_they_touch(root):
    index.past_runs(root)
    # Another machine: a new sweep folder, a record for the killed run, a record deleted.
    _write_run(root, "2026-01-03_00-00-00/0", "d")
    atomic.write_json_atomic(root / "2026-01-01_00-00-00/2" / records.RESULT_FILE,
                              {"status": "finished", "cell": {}, "config_id": "c"})
    (root / "2026-01-02_00-00-00/0" / records.RESULT_FILE).unlink()
    found = index.past_runs(root)
    assert _states(found) == _states(index.scan(root))
    assert {cid: [r.state for r in runs] for cid, runs in found.items()} == {
        "a": ["finished"], "b": ["failed", "interrupted"], "c": ["finished"], "d": ["finished"]}


@pytest.mark.parametrize("damage", ["deleted", "truncated", "not an index", "old version"])
def test_a_deleted_or_damaged_index_is_rebuilt_by_a_scan(root, damage):
    expected = _states(index.past_runs(root))
    path = root / index.INDEX_FILE
    good = json.loads(path.read_text())
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_text(path.read_text()[:100])
    elif damage == "not an index":
        path.write_text(json.dumps({"version": index.VERSION, "dirs": [], "runs": {"x": 1}}))
    else:
        path.write_text(json.dumps({**good, "version": 0}))
    assert _states(index.past_runs(root)) == expected
    assert json.loads(path.read_text())["runs"] == good["runs"]  # written again, whole


def test_a_run_read_once_is_not_read_again_while_unchanged(root):
    index.past_runs(root)
    new = _write_run(root, "2026-01-03_00-00-00/0", "d")
    os.utime(new, (AN_HOUR_AGO, AN_HOUR_AGO))  # it ended a while ago
    index.past_runs(root)  # read once, into the index
    with pytest.MonkeyPatch.context() as patch:  # unchanged: trusted without a read
        real = index.read_run
        patch.setattr(index, "read_run", lambda directory: pytest.fail(f"read {directory}")
                      if directory == new else real(directory))
        assert [r.state for r in index.past_runs(root)["d"]] == ["finished"]
    (new / records.RESULT_FILE).write_text("{damaged")  # the directory's time is unchanged
    os.utime(new, (AN_HOUR_AGO, AN_HOUR_AGO))
    [damaged] = index.past_runs(root)["d"]  # verified, never trusted: read again, not finished
    assert damaged.state == "failed" and "does not validate" in damaged.error


def test_the_plan_is_the_same_with_a_fresh_a_missing_and_a_damaged_index(tmp_path):
    root = tmp_path / "records"
    with planner(["+sweep=quick", "hydra.sweeper.dry_run=true",
                  f"hydra.sweeper.records_root={root}"]) as (sweeper, task):
        _, jobs, _, _ = sweeper.plan(task)
        for job, status in zip(jobs, ["finished", "failed", None, "finished"], strict=False):
            _write_run(root, f"2026-01-01_00-00-00/{job.index}", job.config_id, status)
        _age(root)

        def printed() -> str:
            axes, jobs, note, _ = sweeper.plan(task)
            return plan.format_plan("quick", tmp_path, root, axes, jobs, note, dry_run=True)

        first = printed()
        assert "25 to run, 0 to resume, 2 skipped" in first  # 27 jobs: 9 cells x 3 seeds
        assert (root / index.INDEX_FILE).is_file()
        assert printed() == first
        (root / index.INDEX_FILE).unlink()
        assert printed() == first
        (root / index.INDEX_FILE).write_text("{not json")
        assert printed() == first
        assert index._load(root) is not None  # rebuilt
