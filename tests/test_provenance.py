"""Records and reports that tell where they came from: which source was dirty, which commits
and package versions a report's runs used, which finished runs came from other code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_report import write_record

from ablate import atomic, provenance, records
from ablate.report.__main__ import main as report_main
from ablate.status import Action
from ablate.sweep import planner
from ablate.sweep.plan import PlannedRun
from ablate.sweep.state import Decision, read_run


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def test_dirty_means_the_source_not_reports_or_sweeps(tmp_path):
    repo = tmp_path / "checkout"
    for path in ("ablate/spec.py", "conf/config.yaml", "reports/tables.md", "pyproject.toml"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("original\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "start")
    clean = provenance.git_state(repo)
    assert clean["dirty"] is False and clean["commit"]
    (repo / "reports" / "tables.md").write_text("regenerated\n")  # python -m ablate.report
    assert provenance.git_state(repo) == clean
    (repo / "ablate" / "spec.py").write_text("edited\n")
    edited = provenance.git_state(repo)
    assert edited["dirty"] is True and edited["commit"] == clean["commit"]
    assert edited["source"] != clean["source"]
    (repo / "ablate" / "spec.py").write_text("edited again\n")
    assert provenance.git_state(repo)["source"] not in (clean["source"], edited["source"])


def _finished(tmp_path: Path, name: str, commit: str, source: str) -> PlannedRun:
    run_dir = tmp_path / name
    cell = {"model": "C", "seed": 0}
    atomic.write_json_atomic(run_dir / records.RESULT_FILE, {
        "status": "finished", "cell": cell, "config_id": name, "git_commit": commit,
        "git_dirty": False, "git_source": source})
    previous = read_run(run_dir)
    return PlannedRun(0, ["model=C"], "model=C", name,
                      Decision(Action.SKIP, "finished", previous=previous))


def test_finished_runs_of_other_code_are_named_in_the_plan_and_rerun_on_request(tmp_path):
    current = {"commit": "b" * 40, "dirty": False, "source": "new"}
    jobs = [_finished(tmp_path, "old", "a" * 40, "old"),
            _finished(tmp_path, "same", "b" * 40, "new")]
    note = planner.mark_other_code(jobs, current, rerun=False)
    assert note == ("  note: 1 finished runs came from other code (aaaaaaa (1); this is "
                    "bbbbbbb): still skipped; hydra.sweeper.rerun_stale=true reruns them")
    assert [job.decision.action for job in jobs] == [Action.SKIP, Action.SKIP]
    assert "rerun" in planner.mark_other_code(jobs, current, rerun=True)
    assert [job.decision.action for job in jobs] == [Action.RUN, Action.SKIP]
    # an uncommitted edit of the source is other code too, at the same commit
    edited = _finished(tmp_path, "edited", "b" * 40, "new")
    assert planner.mark_other_code([edited], {**current, "dirty": True, "source": "edit"})
    unknown = {"commit": None, "dirty": None, "source": None}
    assert planner.mark_other_code([edited], unknown) is None


def test_the_reports_inputs_name_the_commits_and_package_versions(tmp_path, monkeypatch):
    sweeps = tmp_path / "sweeps"
    versions = {"torch": "2.13.0", "pytorch-lightning": "2.6.6", "hydra-core": "1.3.8",
                "wandb": "0.31.0", "numpy": "2.0"}
    for job, (commit, dirty) in enumerate([("1234567abc", False), ("1234567abc", False),
                                            ("89abcdef01", True)]):
        path = write_record(sweeps, str(job), name="All-CNN-C", model="C", downsample="conv",
                            lr=0.05, seed=job, test=0.1, val=0.1)
        record = json.loads(path.read_text())
        record.update(git_commit=commit, git_dirty=dirty, versions=versions)
        atomic.write_json_atomic(path, record)
    monkeypatch.chdir(tmp_path)
    assert report_main([str(sweeps), "--out", "tables.md", "--no-figures"]) == 0
    text = Path("tables.md").read_text()
    assert "| commits | 1234567 (2); 89abcde+dirty (1) |" in text
    assert ("| package versions | torch 2.13.0, pytorch-lightning 2.6.6, hydra-core 1.3.8, "
            "wandb 0.31.0 (3) |") in text


@pytest.mark.parametrize("missing", [None, {}])
def test_runs_without_provenance_are_never_stale(missing):
    assert not planner.made_by_other_code(missing, {"commit": "a", "source": "x"})


def test_estimates_are_calibrated_on_this_machines_runs_only():
    from ablate.sweep import estimate

    work = estimate.Work(1e9, 1, "cpu")
    mine = estimate.Measured(10.0, work, "here")
    others = [estimate.Measured(99.0, work, "elsewhere"), estimate.Measured(50.0, work)]
    assert estimate.this_machine([mine, *others], host="here") == ([mine], 2)
    # the host travels with the point through the run index
    assert estimate.Measured.from_dict(mine.as_dict()) == mine
