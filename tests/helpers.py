"""Test helpers: compose the real config, and run the real CLI in a scratch directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from ablate import config as config_lib
from hydra_plugins.ablate_sweeper import register_plugins

REPO = Path(__file__).resolve().parent.parent
config_lib.register()  # what ablate.run.main() does before Hydra composes
register_plugins()

# Keeps CLI tests tiny: CPU, no progress bar, a couple of batches, no W&B (tests/test_wandb.py
# turns it on where W&B is what is tested).
TINY = [
    "experiment=quick",
    "seed=0",  # one seed: the quick preset sweeps three
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    # no shifted copies of the test set (33 more passes over it: ~1.7 s of a ~9 s run); the
    # tests of the invariance measurement (test_run.py, test_invariance.py) run it themselves
    "callbacks.test_predictions.shifts=[]",
]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        return compose(config_lib.CONFIG_NAME, overrides=overrides or [], return_hydra_config=True)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of CLI runs: this checkout (and tests/, for faults.py) importable."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    return {**os.environ, **(extra or {}), "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def run_cli(
    args: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m ablate.run ARGS`` in ``cwd`` (outputs land under cwd/sweeps)."""
    return subprocess.run(
        [sys.executable, "-m", "ablate.run", *args],
        cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout,
    )


def held(flag: Path) -> list[str]:
    """Overrides that keep every run of seed 0 at the start of its second epoch while ``flag``
    exists (``faults.py``): a test that stops a run once its first checkpoint is there then
    always finds it training, however late it gets to act; delete ``flag`` to let it go on."""
    flag.touch()
    return ["datamodule._target_=faults.FaultyDataModule", f"+datamodule.fault_file={flag}",
            "+datamodule.faults={s0:hold}"]


def result_files(root: Path) -> list[Path]:
    return sorted(root.glob("sweeps/**/result.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextmanager
def mounted(kind: str, target: Path, source: Path | None = None,
            size: str = "2m") -> Iterator[Path]:
    """``target`` as a real read-only bind mount of ``source`` (``kind="ro"``; chmod does not
    stop root, which the tests run as) or a small tmpfs (``kind="tmpfs"``, a disk that fills);
    unmounted after. Skips visibly where mounting is not permitted (not root, no CAP_SYS_ADMIN,
    no ``mount``)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a read-only or full filesystem")
    target.mkdir(parents=True, exist_ok=True)
    if kind == "ro":
        done = _mount("--bind", str(source), str(target))
        if done.returncode == 0:
            done = _mount("-o", "remount,ro,bind", str(target))
            if done.returncode != 0:
                subprocess.run(["umount", str(target)], capture_output=True)
    else:
        done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    if done.returncode != 0:
        pytest.skip(f"mounting is not permitted here ({done.stderr.strip()})")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
