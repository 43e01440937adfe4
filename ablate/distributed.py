"""One run over several processes (Lightning's DDP): which process writes, and how a job of a
multirun that trains in several processes is started.

Lightning's own launcher starts the other processes of a local DDP run by running the command
line again (with ``hydra.run.dir`` set to the run's folder: its Hydra support), and it watches
them from a thread that kills the process that launched them when one fails. Both are right for
a single run, and wrong inside a multirun's process: the command line is the whole sweep, and a
failed job would take the sweep down. So a job of a multirun that trains in several processes
runs as a single run of its own, ``python -m ablate.run <its overrides>`` in its folder, which
Lightning's launcher then serves as designed; the sweep waits for it and reads its record. Under
SLURM (submitit, ``tasks_per_node``) or torchrun the engine starts every process itself and
Lightning joins them: the job runs in place.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig

from ablate import budget, records
from ablate.errors import InvalidConfig, RunFailed
from ablate.status import Status

STOP_SECONDS = 60  # after SIGTERM, what the run's processes get to record it before SIGKILL


def writes() -> bool:
    """Whether this process writes the run's record, predictions and W&B run: under data
    parallelism only the first process does (Lightning knows the rank from the environment its
    launcher, SLURM or torchrun set, before the Trainer exists, and from the Trainer after)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def launched_by_cluster() -> bool:
    """Whether an engine started this run's processes (SLURM's tasks, torchrun), as Lightning
    itself decides it (its environments' ``detect``)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def needs_own_process(cfg: DictConfig, hydra_cfg: DictConfig) -> bool:
    """A job of a multirun whose processes Lightning's launcher would start from the sweep."""
    return (hydra_cfg.mode == RunMode.MULTIRUN and budget.processes(cfg) > 1
            and not launched_by_cluster())


def run_in_own_process(hydra_cfg: DictConfig) -> records.Record:
    """Run this job as ``python -m ablate.run <its overrides>`` in its folder and return its
    record; its output goes to ``<folder>/ddp.log``. Exit 2 (a config it refused) and a failed
    or missing record end the job as they would in this process."""
    folder = Path(hydra_cfg.runtime.output_dir)
    # Absolute folders: the process starts where this one runs (a Ray worker's folder too).
    command = [sys.executable, "-m", "ablate.run", *hydra_cfg.overrides.task,
               f"hydra.run.dir={folder}", "hydra.output_subdir=null",  # the sweep wrote .hydra
               f"hydra.sweep.dir={Path(hydra_cfg.sweep.dir).resolve()}"]  # its axes, for names
    log = folder / "ddp.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except BaseException:  # a signal to the sweep: the run records it, as it would here
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    result = folder / records.RESULT_FILE
    if code == 2 and not result.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        raise InvalidConfig(next((line for line in reversed(lines) if "invalid config" in line),
                                 f"invalid config (see {log})"))
    record = records.load(result) if result.exists() else None
    if record is not None and record.status in (Status.FINISHED, Status.DIVERGED):
        return record  # diverging is a result, in a multirun as in this process
    why = record.error if record is not None and record.error else f"no record; see {log}"
    raise RunFailed(f"the run's processes exited {code}: {why}")
