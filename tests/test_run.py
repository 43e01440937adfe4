"""The runner in-process, as lightning-hydra-template tests its train(): the real composed config,
shrunk, through the real ``run()`` with a real ``Trainer.fit``; and the direction of imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO, TINY, compose_config, load, result_files, run_cli
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ablate import identity, predictions, records
from ablate.run import run

FAST = ["experiment=quick", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.fast_dev_run=true", "model=A", "downsample=stride"]


@pytest.fixture
def hydra_run(tmp_path):
    """Compose ``overrides`` and make it the running Hydra job, writing into ``tmp_path``."""

    def make(overrides: list[str]):
        cfg = compose_config(overrides)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # a job's own config has no Hydra node, as under @hydra.main
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_fast_dev_run_in_process_leaves_a_finished_record(hydra_run, tmp_path):
    cfg = hydra_run(FAST)
    record = run(cfg)
    on_disk = json.loads((tmp_path / records.RESULT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(record.to_json(), default=str))
    assert record.status == "finished" and record.error is None
    assert record.name == "Strided-CNN-A" and record.params == 53_098
    assert record.cell["model"] == "A" and record.cell["downsample"] == "stride"
    assert 0.0 <= record.metrics["test_error"] <= 1.0
    assert record.epochs == 1 and len(record.history) == 1
    assert record.config_id == identity.config_id(compose_config(FAST))
    assert record.config["trainer"]["fast_dev_run"] is True
    # every test example's prediction, checksummed, and the invariance measurement
    saved = predictions.read_predictions(tmp_path, record.predictions)
    assert len(saved.labels) == 359 and saved.logits.shape == (359, 10)
    assert 1 - saved.correct.mean() == pytest.approx(record.metrics["test_error"], abs=1e-6)
    invariance = record.metrics["invariance"]
    assert invariance["identity"]["error"] == pytest.approx(record.metrics["test_error"],
                                                            abs=1e-6)
    assert set(invariance) >= {"shift_1", "shift_4", "flip", "directions"}
    marker = json.loads((tmp_path / records.START_FILE).read_text())
    assert marker["config_id"] == record.config_id


def test_a_diverging_run_is_recorded_in_process(hydra_run, tmp_path):
    cfg = hydra_run([*FAST, "lr=1e12", "init=gaussian", "init.std=10",
                     "trainer.fast_dev_run=5"])
    with pytest.raises(Exception, match="diverged"):
        run(cfg)
    record = records.load(tmp_path / records.RESULT_FILE)
    assert record.status == "diverged" and "training loss became nan" in record.error


def test_importing_the_runner_does_not_import_the_sweep_side():
    code = ("import sys, ablate.run; print(sorted(m for m in sys.modules "
            "if m.startswith(('ablate.sweep', 'hydra_plugins'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_dataset_sizes_in_the_config_are_the_sources_own():
    # dataset.images feeds the time estimate: it must say what the loader really yields
    from hydra.utils import instantiate

    cfg = compose_config(["dataset=digits"])
    splits = instantiate(cfg.dataset.source)()
    assert (len(splits.train_y), len(splits.test_y)) == (cfg.dataset.images.train,
                                                         cfg.dataset.images.test)


@pytest.mark.slow
def test_resume_from_a_run_directory_recomposes_that_runs_config(workdir):
    """``resume_from=<run dir>``: the run's own overrides come back from its record, the
    checkpoint's identity check passes (same config_id), and training continues from it."""
    first = run_cli([*TINY, "model=A", "downsample=stride", "init=kaiming"], workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    [path] = result_files(workdir)
    run_dir = path.parent
    # a finished run continued under its own config would train nothing: refused, no 2nd record
    refused = run_cli([f"resume_from={run_dir}"], workdir)
    assert refused.returncode == 2 and "finished already" in refused.stderr
    assert result_files(workdir) == [path]
    # the same run, stopped by a signal after its first epoch, as a killed run's record says
    stopped = {**load(path), "status": "failed", "interrupted": True, "error": "Interrupted"}
    path.write_text(json.dumps(stopped))
    again = run_cli([f"resume_from={run_dir}"], workdir)  # nothing else on the command line
    assert again.returncode == 0, again.stderr[-3000:]
    records = {p.parent: load(p) for p in result_files(workdir)}
    [(new_dir, resumed)] = [(d, r) for d, r in records.items() if d != run_dir]
    original = records[run_dir]
    assert resumed["config_id"] == original["config_id"]
    assert resumed["cell"] == original["cell"] and resumed["cell"]["init"] == "kaiming"
    assert resumed["resumed_from"] == str((run_dir / "checkpoints" / "last.ckpt").resolve())
    assert resumed["resumed_epoch"] == 1
    missing = run_cli([f"resume_from={new_dir.parent}"], workdir)  # not a run directory
    assert missing.returncode == 2 and "checkpoints/last.ckpt is not there" in missing.stderr
