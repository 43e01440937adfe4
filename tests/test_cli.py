"""The real CLI end to end: a multirun grid, bad inputs, failures, seed reproducibility."""

from __future__ import annotations

import pytest
from helpers import TINY, load, result_files, run_cli

pytestmark = pytest.mark.slow


def test_grid_multirun_leaves_one_finished_record_per_cell(workdir):
    done = run_cli(["-m", "downsample=pool,stride,conv", "model=A,B,C", *TINY], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [load(path) for path in result_files(workdir)]
    assert len(records) == 9
    cells = {(r["cell"]["model"], r["cell"]["downsample"]) for r in records}
    assert cells == {(m, d) for m in "ABC" for d in ("pool", "stride", "conv")}
    names = {r["name"] for r in records}
    assert {"Model A", "Strided-CNN-B", "All-CNN-C"} <= names
    for record in records:
        assert record["status"] == "finished"
        assert record["error"] is None
        assert record["cell"]["dataset"] == "digits" and record["cell"]["augmentation"] == "none"
        assert record["cell"]["experiment"] == "quick" and record["cell"]["trainer.max_epochs"] == 1
        assert isinstance(record["params"], int) and record["params"] > 0
        for key in ("test_error", "val_error", "train_loss"):
            assert key in record["metrics"]
        assert 0.0 <= record["metrics"]["test_error"] <= 1.0
        assert record["epochs"] == 1 and record["wall_seconds"] > 0
        assert record["config"]["optimizer"]["momentum"] == 0.9
        assert record["versions"]["torch"] and record["versions"]["hydra-core"]
        assert "git_commit" in record
    # every job of the sweep lives under sweeps/<sweep name>/<time>/<job>/
    assert {p.parts[-4] for p in result_files(workdir)} == {"quick"}
    # quiet by default: a job's own lines go to its log file, the console gets [k/N] lines
    logs = "".join(p.read_text() for p in workdir.glob("sweeps/**/*.log"))
    assert "estimated training time" in logs
    assert "estimated training time" not in done.stderr + done.stdout
    assert "[9/9] " in done.stdout


def test_same_seed_same_metrics_other_seed_differs(workdir):
    budget = ["trainer.max_epochs=2", "trainer.limit_train_batches=4"]
    done = run_cli(["-m", "model=A", "downsample=stride", *TINY, *budget, "seed=1,1,2"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted((load(p) for p in result_files(workdir)), key=lambda r: r["output_dir"])
    assert [r["cell"]["seed"] for r in records] == [1, 1, 2]
    first, again, other = (r["metrics"] for r in records)
    assert first == again
    assert first["train_loss"] != other["train_loss"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=D", "Available options in 'model'"),
        ("downsample=avg", "Available options in 'downsample'"),
        ("trainer.max_epoch=2", "Did you mean 'trainer.max_epochs'"),
        ("lr=-0.1", "lr=-0.1 is not a positive number"),
        ("dataset.image_size=8", "set dataset.image_size to"),
        ("dataset=cifar10 dataset.root=nowhere dataset.download=false",
         "CIFAR-10 not found"),  # refused when the data module is built, not inside fit
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(workdir, override, expected):
    done = run_cli([*TINY, *override.split()], workdir)
    assert done.returncode == 2  # Hydra's composition errors (model=D) as this project's own
    assert expected in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert result_files(workdir) == []
    assert list(workdir.glob("sweeps/*/*")) == []  # not even Hydra's .hydra/ and run.log


def test_crashing_run_still_writes_its_record(workdir):
    done = run_cli([*TINY, "dataset.val_size=100000"], workdir)
    assert done.returncode != 0
    [path] = result_files(workdir)
    record = load(path)
    assert record["status"] == "failed"
    assert "dataset.val_size=100000" in record["error"]
    assert record["cell"]["dataset.val_size"] == 100000
    assert not list(path.parent.glob(".result.json.*"))  # no temporary file left behind


def test_diverging_run_is_recorded_as_diverged(workdir):
    done = run_cli([*TINY, "lr=1e12", "trainer.limit_train_batches=5", "init=gaussian",
                    "init.std=10"], workdir)
    assert done.returncode != 0
    [path] = result_files(workdir)
    record = load(path)
    assert record["status"] == "diverged", record["error"]
    assert "training loss became nan" in record["error"]


def test_help_shows_the_everyday_commands_and_the_config_groups(workdir):
    """``--help`` is the project's template (conf/hydra/help/ablate.yaml), not Hydra's generic
    "run is powered by Hydra" with a config dump: a multirun example and every group."""
    done = run_cli(["--help"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    assert "python -m ablate.run -m downsample=pool,stride,conv model=A,B,C" in text
    assert "python -m ablate.run -m +sweep=quick" in text and "python -m ablate.report" in text
    assert "== Configuration groups ==" in text and "model: A, B, C" in text
    assert "downsample: avgpool, conv, convpool, lppool, pool, stride" in text
    assert "sweep: augmentation," in text and "is powered by Hydra" not in text
    assert result_files(workdir) == []  # help runs nothing
