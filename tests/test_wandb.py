"""W&B tracking: real offline W&B runs from short real CLI runs, read back with W&B's own tool.

The CLI runs get WANDB_MODE=offline, a fake API key (to check that it lands in no file) and an
unreachable W&B host, so nothing can leave the machine whatever W&B decides to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY, load, result_files, run_cli

from ablate import tracking
from ablate.report import issues as kinds
from ablate.report import load as report_load
from ablate.report.__main__ import main as report_main
from ablate.report.wandb_runs import inspect_wandb_run

FAKE_KEY = "f4ce0123456789abcdef0123456789abcdef0123"  # 40 hex characters, like a real key
OFFLINE_ENV = {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY,
               "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_ERROR_REPORTING": "false"}
WANDB_TINY = [arg for arg in TINY if not arg.startswith("logger=")] + ["logger=wandb"]


# ---------------------------------------------------------------- fast unit tests

def test_mode_is_offline_without_a_login_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tracking.resolve_mode("auto", {}) == "offline"
    assert tracking.resolve_mode("auto", {"WANDB_API_KEY": "x" * 40}) == "online"
    assert tracking.resolve_mode("auto", {"WANDB_API_KEY": "x" * 40, "WANDB_MODE": "offline"}) \
        == "offline"
    assert tracking.resolve_mode("auto", {"WANDB_MODE": "dryrun"}) == "offline"
    assert tracking.resolve_mode("disabled", {"WANDB_API_KEY": "x" * 40}) == "disabled"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    assert tracking.has_login({"NETRC": str(netrc)})
    assert not tracking.has_login({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.corp"})
    with pytest.raises(Exception, match="logger.mode='sometimes' is not a W&B mode"):
        tracking.resolve_mode("sometimes", {})


def test_identity_of_a_run_follows_its_cell_and_sweep():
    cell = {"model": "C", "downsample": "conv", "dataset": "cifar10", "augmentation": "none",
            "seed": 0, "lr": 0.05, "trainer.max_epochs": 350, "init": "kaiming", "width": 0.5}
    assert tracking.run_name("All-CNN-C", cell) == "All-CNN-C/cifar10/none/lr0.05/s0"
    # swept axes the paper's label does not show are added; paper axes are not repeated
    assert tracking.run_name("All-CNN-C", cell, ["model", "init", "width", "seed"]) == \
        "All-CNN-C/cifar10/none/lr0.05/s0/init=kaiming/width=0.5"
    assert "model=C" in tracking.run_tags(cell) and "trainer.max_epochs=350" in tracking.run_tags(
        cell)
    first = tracking.run_id("0123456789abcdef", "table3/2026-01-01_00-00-00")
    assert first == tracking.run_id("0123456789abcdef", "table3/2026-01-01_00-00-00")
    assert first != tracking.run_id("0123456789abcdef", "table3/2026-01-02_00-00-00")
    assert first.startswith("0123456789abcdef-") and len(first) <= 64


# ---------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    """Four jobs in one process (two of them fail), then one run resumed from a checkpoint."""
    workdir = tmp_path_factory.mktemp("wandb_sweep")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE_ENV.items():
            patch.setenv(key, value)
        sweep = run_cli(["-m", "model=A,C", "downsample=conv", "dataset.val_size=0.1,100000",
                         *WANDB_TINY], workdir)
        records = {tuple(r["cell"][k] for k in ("model", "dataset.val_size")): r
                   for r in map(load, result_files(workdir))}
        first = records[("A", 0.1)]
        checkpoint = Path(first["output_dir"]) / "checkpoints" / "last.ckpt"
        resumed = run_cli([*[a for a in WANDB_TINY if not a.startswith("trainer.max_epochs")],
                           "trainer.max_epochs=2", "model=A", "downsample=conv",
                           "dataset.val_size=0.1", f"resume_from={checkpoint}",
                           "resume_any=true"], workdir)  # a longer budget: another config
    return workdir, sweep, resumed, records


def _wandb_dirs(root: Path) -> list[Path]:
    """W&B run folders under ``root`` (not the ``latest-run`` links W&B adds beside them)."""
    return sorted(p.parent for p in root.glob("**/wandb/*/run-*.wandb")
                  if not p.parent.is_symlink())


@pytest.mark.slow
def test_every_run_has_its_own_finished_offline_wandb_run(wandb_sweep):
    workdir, sweep, _, records = wandb_sweep
    assert sweep.returncode != 0  # two jobs failed, on purpose
    assert len(records) == 4
    ids = set()
    for record in records.values():
        info = record["wandb"]
        assert info["mode"] == "offline" and info["project"] == "ablate"
        [run_dir] = _wandb_dirs(Path(record["output_dir"]))
        assert run_dir.name.endswith(info["id"]) and run_dir.name.startswith("offline-run-")
        meta = inspect_wandb_run(run_dir)
        # the run is its cell's, not a neighbour's: one process ran all four jobs
        assert meta["run_id"] == info["id"] and meta["name"] == info["name"]
        # the paper's label, then the swept axis it does not show
        assert meta["name"] == (f"{record['name']}/digits/none/lr0.01/s0/dataset.val_size="
                                f"{record['cell']['dataset.val_size']:g}")
        assert meta["config"]["cell"]["model"] == record["cell"]["model"]
        assert meta["config"]["sweep"] == info["group"] == "quick/" + Path(
            record["output_dir"]).parent.name
        assert meta["config"]["optimizer"] == "sgd" and meta["config"]["init"] == "xavier"
        assert meta["config"]["trainer"]["max_epochs"] == 1  # the Trainer keys that were set
        assert len(meta["config"]) < 40  # the study, not the ~180 keys of the resolved config
        assert "model=" + record["cell"]["model"] in meta["tags"]
        assert meta["summary"]["status"] == record["status"]
        if record["status"] == "finished":
            assert meta["state"] == "finished"
            assert meta["summary"]["test_error"] == pytest.approx(
                record["metrics"]["test_error"])
        else:
            assert meta["state"] == "failed" and record["status"] == "failed"
        ids.add(info["id"])
    assert len(ids) == 4


@pytest.mark.slow
def test_a_resumed_run_continues_the_wandb_run_of_its_checkpoint(wandb_sweep):
    workdir, _, resumed, records = wandb_sweep
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [record] = [r for r in map(load, result_files(workdir))
                if r["cell"].get("trainer.max_epochs") == 2]
    assert record["wandb"]["id"] == records[("A", 0.1)]["wandb"]["id"]
    [run_dir] = _wandb_dirs(Path(record["output_dir"]))
    assert inspect_wandb_run(run_dir)["run_id"] == record["wandb"]["id"]


@pytest.mark.slow
def test_a_resume_that_cannot_load_its_checkpoint_starts_a_new_wandb_run(
    wandb_sweep, tmp_path, monkeypatch
):
    """Training from scratch must not log into the W&B run of the checkpoint it could not use.

    (Only a sweep's own resume falls back to a fresh start, ``resume_fallback=true``; a
    checkpoint the user names and that cannot be loaded is an error, tests/test_faults.py.)"""
    first = wandb_sweep[3][("A", 0.1)]
    broken = tmp_path / "broken_run"
    shutil.copytree(first["output_dir"], broken)
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "work").mkdir()
    done = run_cli([*WANDB_TINY, "model=A", "downsample=conv", "dataset.val_size=0.1",
                    f"resume_from={broken / 'checkpoints' / 'last.ckpt'}", "resume_fallback=true"],
                   tmp_path / "work")
    assert done.returncode == 0, done.stderr[-3000:]
    [record] = map(load, result_files(tmp_path / "work"))
    assert record["resumed_from"] is None and record["resume_note"]
    assert record["wandb"]["id"] != first["wandb"]["id"]


@pytest.mark.slow
def test_the_api_key_lands_in_no_file(wandb_sweep):
    workdir = wandb_sweep[0]
    files = [p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".wandb" for p in files)
    leaks = [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_offline_wandb_runs_alone_give_the_same_tables_as_the_records(wandb_sweep, tmp_path,
                                                                      monkeypatch):
    workdir = wandb_sweep[0]
    only_wandb = tmp_path / "wandb_only"
    for run_dir in _wandb_dirs(workdir / "sweeps"):
        shutil.copytree(run_dir, only_wandb / run_dir.name)
    monkeypatch.chdir(tmp_path)
    assert report_main([str(workdir / "sweeps"), "--out", "from_records.md", "--no-figures"]) == 0
    assert report_main([str(only_wandb), "--out", "from_wandb.md", "--no-figures"]) == 0
    frame, issues = report_load.load_runs([only_wandb])
    assert set(frame["source"]) == {"wandb-offline"} and len(frame) == 5
    assert sorted(frame["status"]) == ["failed", "failed", "finished", "finished", "finished"]
    records_text = Path("from_records.md").read_text()
    wandb_text = Path("from_wandb.md").read_text()
    assert "## Protocol" in wandb_text
    # same runs, same protocols, same numbers: everything below the inputs is identical, but for
    # the per-example tests, which need the predictions.npz that only records have
    def seed_level(text: str) -> str:
        body = text.split("\n## Protocol", 1)[1]
        per_example = r"\| (?:ok|n/a \(no predictions\)|[^|]*\(b \d+, c \d+\)) \|"
        return re.sub(per_example, "| X |", body)

    assert "n/a (no predictions)" in wandb_text
    assert seed_level(wandb_text) == seed_level(records_text)
    # and with the records present, their W&B twins are recognised, not counted twice
    frame, issues = report_load.load_runs([workdir / "sweeps"], wandb_offline="all")
    assert set(frame["source"]) == {"record"} and len(frame) == 5
    assert issues.counts[kinds.WANDB_MIRRORED] == 5
    assert issues.counts[kinds.WANDB_DISAGREES] == 0


@pytest.mark.slow
def test_a_sweep_over_init_and_width_gives_distinct_names_and_no_config_gaps(tmp_path):
    """Read back with W&B's own reader: 4 runs, 4 names, the same config keys in each, the
    defaults included, and the channels width 0.25 really built."""
    tiny = [a for a in WANDB_TINY if not a.startswith("trainer.limit_val")]
    done = run_cli(["-m", "init=xavier,kaiming", "width=0.25,0.5", *tiny,
                    "trainer.limit_val_batches=1"], tmp_path, env=OFFLINE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    metas = [inspect_wandb_run(d) for d in _wandb_dirs(tmp_path / "sweeps")]
    assert len(metas) == 4
    names = {m["name"] for m in metas}
    assert names == {f"All-CNN-C/digits/none/lr0.01/s0/init={i}/width={w}"
                     for i in ("xavier", "kaiming") for w in ("0.25", "0.5")}
    assert len({json.dumps(sorted(m["config"])) for m in metas}) == 1  # no gaps
    assert len({json.dumps(sorted(m["config"]["cell"])) for m in metas}) == 1
    for meta in metas:
        config = meta["config"]
        assert config["cell"]["init"] == config["init"] in ("xavier", "kaiming")
        assert config["cell"]["width"] == config["width"]
        assert config["cell"]["preprocess"] == "standardize"  # a default, still in the cell
        expected = [24, 24, 24, 48, 48, 48, 48, 48] if config["width"] == 0.25 else \
            [48, 48, 48, 96, 96, 96, 96, 96]
        assert config["channels"] == expected
        assert any("conv 48" in line for line in config["network"])
    assert report_main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "t.md"),
                        "--no-figures", "--wandb-offline", "all"]) == 0


def test_report_side_never_imports_torch():
    code = ("import sys, ablate.report.__main__, ablate.report.figures, ablate.report.load; "
            "sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 0
