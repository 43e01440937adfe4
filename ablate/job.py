"""One run's life around ``Trainer.fit`` and ``Trainer.test``: its record, resume point, tracking.

The runner (``ablate.run``) calls fit and test; this module is what happens before and after,
so that the record tells the truth whatever happens in between.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ablate import identity, records, tracking
from ablate.callbacks import ConfigStamp, EpochHistory, FirstStep, TestPredictions, epoch_metrics
from ablate.distributed import writes
from ablate.errors import CheckpointError, Diverged, Interrupted, RunFailed
from ablate.network import count_parameters
from ablate.overrides import key, value
from ablate.resume import resume_point
from ablate.spec import format_spec
from ablate.status import Status

log = logging.getLogger("ablate")


def _callback(trainer: pl.Trainer | None, kind: type) -> Any:
    callbacks = trainer.callbacks if trainer is not None else []
    return next((c for c in callbacks if isinstance(c, kind)), None)


def _device_name(trainer: pl.Trainer | None) -> str | None:
    if trainer is None:
        return None
    device = trainer.strategy.root_device
    name = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
            else str(device))
    if trainer.world_size > 1:  # data parallel: the first process's device, and how many
        name += f", {trainer.world_size} processes ({type(trainer.strategy).__name__})"
    return name


def _metrics(trainer: pl.Trainer | None) -> dict[str, float]:
    if trainer is None:
        return {}
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())}


@dataclass
class Job:
    """A started run: its record so far and the checkpoint it continues from (None: scratch)."""

    record: records.Record
    resume_path: Path | None
    stamp: ConfigStamp  # the callback that writes this run's identity into its checkpoints
    started: float = field(default_factory=time.perf_counter)
    fit_metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def begin(cls, cfg: DictConfig, network: Any, cell: dict[str, Any], config_id: str,
              output_dir: Path, study: dict[str, Any] | None = None) -> Job:
        """Start the record and mark the directory; find the checkpoint to continue from (the
        one a sweep passes as ``resume_from``, or a requeued SLURM job's own)."""
        # The network as built (width applied: 24/48 channels at width 0.25, not the YAML's
        # 96/192), and what the runner knows of the study: group choices, swept axes.
        size = int(cfg.dataset.image_size)
        table = format_spec(network.spec, size)
        record = records.Record.start(
            name=network.name, cell=cell, params=count_parameters(network),
            config=OmegaConf.to_container(cfg, resolve=True), config_id=config_id,
            output_dir=output_dir, network=[line.strip() for line in table.split("\n")],
            channels=[layer["out"] for layer in network.spec if layer["type"] == "conv"],
            **(study or {}))
        resume = resume_point(cfg.get("resume_from"), output_dir, config_id, record.config,
                              resume_any=bool(cfg.get("resume_any")),
                              fallback=bool(cfg.get("resume_fallback")))
        record.note(resumed_from=resume.path and str(resume.path), resumed_epoch=resume.epoch,
                    resume_note=resume.note)
        if writes():  # under DDP the first process speaks for the run
            if resume.note:
                log.warning("%s", resume.note)
            records.write_start(record)
            log.info("%s, %s parameters, cell %s", network.name, f"{record.params:,}", cell)
            log.info("network (%dx%d input):\n%s", size, size, table)
        return cls(record, resume.path, ConfigStamp(config_id, record.config))

    def fitted(self, trainer: pl.Trainer) -> None:
        """Keep the train/val metrics of the fit; a run resumed after its last epoch fits nothing,
        so they come from the history restored with its checkpoint."""
        history = _callback(trainer, EpochHistory)
        last_epoch = history.epochs[-1] if history is not None and history.epochs else {}
        self.fit_metrics = {**epoch_metrics(last_epoch), **_metrics(trainer)}

    def end(self, trainer: pl.Trainer | None, status: Status = Status.FINISHED,
            **fields: Any) -> records.Record:
        """Write ``result.json`` with what the trainer measured, then close the loggers;
        ``trainer`` is None when the run failed before it existed (a logger could not be built).
        A process other than the first writes nothing (``writes``)."""
        if not writes():
            self.record.note(status=Status(status), error=fields.get("error"))
            if status != Status.FINISHED:  # to its log: the first process quotes it (fail)
                log.error("%s %s on process %d: %s", self.record.name, status,
                          trainer.global_rank if trainer is not None else -1,
                          fields.get("error"))
            return self.record
        history, first_step = _callback(trainer, EpochHistory), _callback(trainer, FirstStep)
        epochs = history.epochs if history is not None else []
        metrics: dict[str, Any] = {**self.fit_metrics, **_metrics(trainer)}
        datamodule = trainer.datamodule if trainer is not None else None
        if callable(getattr(datamodule, "image_counts", None)):  # e.g. the final stage's
            fields["images"] = datamodule.image_counts()                 # train count
        if getattr(datamodule, "source_fingerprint", None):  # shards: what prepare read
            fields["data_fingerprint"] = datamodule.source_fingerprint
        tested = _callback(trainer, TestPredictions)
        if status == Status.FINISHED and tested is not None and tested.entry is not None:
            fields["predictions"] = tested.entry
            if tested.invariance is not None:
                metrics["invariance"] = tested.invariance
                # its cost beside the metrics (a time is no metric: reruns must compare equal)
                fields["invariance_seconds"] = tested.seconds
        loggers = trainer.loggers if trainer is not None else []
        path = self.record.end(status, metrics=metrics, wandb=tracking.wandb_run_of(loggers),
                               epochs=len(epochs), history=epochs, device=_device_name(trainer),
                               wall_seconds=round(time.perf_counter() - self.started, 3),
                               first_step_at=first_step.at if first_step is not None else None,
                               **{"error": None, **fields})
        tracking.finish(loggers, self.record)
        name, metrics = self.record.name, self.record.metrics
        if status == Status.FINISHED:
            log.info("%s finished: test_error %.4f, val_error %.4f in %.0f s (record: %s)",
                     name, metrics.get("test_error", float("nan")),
                     metrics.get("val_error", float("nan")), self.record.wall_seconds, path)
        else:
            log.error("%s %s: %s (record: %s)", name, status, self.record.error, path)
        return self.record

    def fail(self, trainer: pl.Trainer | None, error: BaseException) -> BaseException:
        """Record a run that raised; returns the exception the command should end with."""
        if isinstance(error, Diverged):
            self.end(trainer, Status.DIVERGED, error=str(error))
        else:
            # Stopped from outside (a signal, Ctrl-C, a preemption) or by a full disk (its last
            # checkpoint is intact): a sweep resumes it instead of training again.
            interrupted = isinstance(error, Interrupted | KeyboardInterrupt | SystemExit)
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            if trainer is not None and trainer.world_size > 1 and writes():  # it quotes them
                text += _other_processes_errors(Path(str(self.record.output_dir)))
            self.end(trainer, Status.FAILED, error=text,
                     interrupted=interrupted or isinstance(error, CheckpointError),
                     traceback=traceback.format_exc())
            if interrupted:
                return error
        failure = RunFailed(f"{self.record.name} {self.record.status}: {self.record.error}")
        failure.__cause__ = error
        return failure


def _other_processes_errors(folder: Path, wait: float = 3.0) -> str:
    """What the other processes of a DDP run logged when they failed (Lightning's launcher
    gives each its log, ``train_ddp_process_<rank>.log``): the first process usually fails
    second, of a lost connection, and the cause (a corrupt shard, say) is in another's log."""
    deadline = time.monotonic() + wait  # the others write theirs as they go down
    found: list[str] = []
    while not found and time.monotonic() < deadline:
        for path in sorted(folder.glob("train_ddp_process_*.log")):
            found += [line.split("] - ", 1)[-1] for line in path.read_text(errors="replace")
                      .splitlines() if " on process " in line and "[ERROR]" in line]
        if not found:
            time.sleep(0.2)
    return "".join(f"; {line}" for line in found)


def study_of(hydra_cfg: DictConfig) -> dict:
    """The record's view of the study: every config group's choice (W&B shows ``init=xavier``,
    not ``init._target_``), the overrides (``resume_from=<run dir>`` composes them again) and the
    axes its sweep varies (the run's name shows those the paper's name does not)."""
    choices = {str(k): v for k, v in hydra_cfg.runtime.choices.items()
               if not str(k).startswith("hydra")}
    overrides = list(hydra_cfg.overrides.task)
    # a multirun's plan; also a DDP job's, run as its own process (ablate.distributed)
    swept = records.swept_axes(Path(str(hydra_cfg.sweep.dir)))
    if swept is None:  # a single run, or a sweep without a plan: what the command line set
        swept = [key(o) for o in overrides if value(o) is not None]
    return {"choices": choices, "overrides": overrides,
            "swept": [k for k in swept if not k.startswith("hydra")
                      and k not in identity.NOT_CELL_KEYS]}
