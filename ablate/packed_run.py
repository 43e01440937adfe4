"""A packed job: several seeds of one cell trained in one process, each ending as its own run.

The sweeper (``hydra.sweeper.pack=K``) launches the first seed's job with ``packed_with``: the
other seeds and the folders their runs would have had. Each seed is started exactly as its own
job would be (``ablate.run.start``, with Hydra's view of the job set to that seed's: its
folder, its overrides), so its record, cell, ``config_id``, callbacks and initial weights are
its own run's. Their networks then train as one (``ablate.packed``); every checkpoint of the
pack is written as one plain checkpoint per seed, in the seed's folder, so a seed resumes alone.
After training, each seed gets its weights back and is tested, tracked and recorded by a Trainer
of its own, one seed after another (its W&B run is written then, curves included). A seed that
diverged is recorded as diverged; the others go on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.plugins import CheckpointIO, TorchCheckpointIO

from ablate import config, overrides
from ablate.callbacks import EpochHistory, EpochLines, FirstStep
from ablate.errors import ConfigError, Interrupted
from ablate.packed import PackedClassifier, PackedDataModule, SeedCheckpoints, seed_history
from ablate.records import Record
from ablate.run import Started, start, trainer_for
from ablate.signals import interruptible
from ablate.status import Status

PACKED_KEYS = {"seed", "output_dir"}


def members(cfg: DictConfig, hydra_cfg: DictConfig) -> list[tuple[int, Path]]:
    """``(seed, output folder)`` of every packed seed, this job's own first."""
    own = (cfg.seed, Path(hydra_cfg.runtime.output_dir))
    found = [own]
    for entry in cfg.packed_with:
        keys = set(entry.keys()) if isinstance(entry, DictConfig) else set()
        if keys != PACKED_KEYS:
            raise ConfigError(
                f"packed_with entry {entry} must hold exactly seed and output_dir: packed "
                "seeds differ in nothing but the seed (pack whole cells with "
                "hydra.sweeper.pack=K)")
        found.append((entry.seed, Path(str(entry.output_dir)).absolute()))
    seeds = [seed for seed, _ in found]
    if len(set(seeds)) != len(seeds) or len({d for _, d in found}) != len(found):
        raise ConfigError(f"packed_with repeats a seed or a folder: seeds {seeds}")
    return found


@contextmanager
def as_seed(hydra_cfg: DictConfig, seed: int, output_dir: Path) -> Iterator[DictConfig]:
    """Hydra's view of this job as seed ``seed``'s own: its folder (``${hydra:runtime.
    output_dir}`` in the callbacks) and its overrides (the record's, and ``resume_from``'s)."""
    state = HydraConfig.instance()
    original = state.cfg
    mine = copy.deepcopy(original)
    with read_write(mine.hydra), open_dict(mine.hydra):
        mine.hydra.runtime.output_dir = str(output_dir)
        task = [o for o in mine.hydra.overrides.task if overrides.key(o) != "packed_with"]
        mine.hydra.overrides.task = [f"seed={seed}" if overrides.key(o) == "seed" else o
                                     for o in task]
    state.set_config(mine)
    try:
        yield mine.hydra
    finally:
        state.set_config(original)


def _seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    mine = copy.deepcopy(cfg)
    with open_dict(mine):
        mine.seed, mine.packed_with = seed, None
    return mine


def _random_states() -> dict[str, torch.Tensor | None]:
    """Where the global generators stand: a seed's dropout draws start from here."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _of(callbacks: list[pl.Callback], kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)


def run(cfg: DictConfig, hydra_cfg: DictConfig) -> Record:
    """Start every seed, train them packed, end each as its own run; the first seed's record."""
    try:
        packed = members(cfg, hydra_cfg)
    except ConfigError as error:
        config.reject(error, hydra_cfg.mode == RunMode.MULTIRUN,
                      Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.name)
    configs, started, states = [], [], []
    for seed, output_dir in packed:
        output_dir.mkdir(parents=True, exist_ok=True)
        configs.append(_seed_config(cfg, seed))
        with as_seed(hydra_cfg, seed, output_dir) as mine:
            started.append(start(configs[-1], mine))
        states.append(_random_states())
    seeds = [seed for seed, _ in packed]
    with interruptible():  # a signal: every seed's record says so, then 143/130/129
        history, first_step = EpochHistory(), FirstStep()
        # the first seed's progress and checkpoint callbacks serve the pack: every checkpoint
        # is written once per seed, into each seed's own folder (SeedCheckpoints)
        shown = ProgressBar | EpochLines | ModelCheckpoint
        kept = [c for c in started[0].callbacks if isinstance(c, shown)]
        module = trainer = None
        try:
            module = PackedClassifier([s.module for s in started], seeds, states)
            plugins = [instantiate(node) for node in cfg.trainer.get("plugins") or []]
            inner = next((p for p in plugins if isinstance(p, CheckpointIO)), TorchCheckpointIO())
            writer = SeedCheckpoints(inner, module, [folder for _, folder in packed],
                                     [s.job.stamp.identity for s in started])
            trainer = trainer_for(
                cfg, started[0], [history, first_step, *kept], logger=False,
                plugins=[*(p for p in plugins if p is not inner), writer])
            trainer.fit(module, datamodule=PackedDataModule([s.datamodule for s in started]))
            module.unpack()
        except BaseException as error:
            failures = [s.job.fail(None, error) for s in started]
            raise failures[0]  # noqa: B904 - fail() chains the cause itself
        failure = None
        for (seed, output_dir), seed_cfg, one in zip(packed, configs, started, strict=True):
            with as_seed(hydra_cfg, seed, output_dir):
                ended = _end_seed(seed_cfg, one, history.epochs, module.diverged.get(seed),
                                  first_step.at, trainer.num_training_batches)
            failure = failure or ended
    if failure is not None:
        raise failure
    return started[0].job.record


def _end_seed(cfg: DictConfig, started: Started, rows: list[dict], diverged: str | None,
              first_step_at: float | None, batches_per_epoch: int) -> BaseException | None:
    """Test, checkpoint, track and record one packed seed, as its own run's Trainer would; the
    exception the job should end with if this seed failed (the others still end)."""
    job, trainer = started.job, None
    try:
        trainer = trainer_for(cfg, started)
        own = seed_history(rows, cfg.seed, diverged)
        _of(started.callbacks, EpochHistory).epochs = own
        if (step := _of(started.callbacks, FirstStep)) is not None:
            step.at = first_step_at
        for row in own:  # the learning curve a plain run logs epoch by epoch
            metrics = {k: v for k, v in row.items() if k != "lr"}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=(row["epoch"] + 1) * batches_per_epoch - 1)
        if diverged is not None:
            job.end(trainer, Status.DIVERGED, error=diverged)
            return None
        job.fitted(trainer)
        trainer.test(started.module, datamodule=started.datamodule, verbose=False)
        job.end(trainer)
        return None
    except BaseException as error:
        failure = job.fail(trainer, error)
        if isinstance(error, Interrupted | KeyboardInterrupt):
            raise failure from None
        return failure
