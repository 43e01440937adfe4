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
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.plugins import CheckpointIO, TorchCheckpointIO

from ablate import config, hardware, identity, overrides
from ablate.callbacks import EpochHistory, EpochLines, FirstStep
from ablate.errors import ConfigError, Interrupted
from ablate.packed import PackedClassifier, PackedDataModule, SeedCheckpoints, seed_history
from ablate.records import Record
from ablate.run import Started, fit_and_test, start, trainer_for
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
def as_seed(hydra_cfg: DictConfig, seed_cfg: DictConfig, output_dir: Path) -> Iterator[DictConfig]:
    """Hydra's view of this job as seed ``seed_cfg.seed``'s own: its folder (``${hydra:runtime.
    output_dir}`` in the callbacks) and its overrides (the record's, and ``resume_from``'s)."""
    state = HydraConfig.instance()
    original = state.cfg
    mine = copy.deepcopy(seed_cfg)  # the job's config around it: ${sweep_name} still resolves
    with open_dict(mine):
        mine.hydra = copy.deepcopy(hydra_cfg)
    with read_write(mine.hydra), open_dict(mine.hydra):
        mine.hydra.runtime.output_dir = str(output_dir)
        task = identity.without_resume(mine.hydra.overrides.task)  # packed_with too
        mine.hydra.overrides.task = [f"seed={seed_cfg.seed}" if overrides.key(o) == "seed"
                                     else o for o in task]
    state.set_config(mine)
    try:
        yield state.cfg.hydra
    finally:
        state.cfg = original  # the very object: set_config would re-parent it


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
    """Start every seed, train them packed, end each as its own run; the first seed's record.
    Seeds that continue from a checkpoint (a requeued SLURM job finds each seed's own) continue
    one after another, each alone, as their own runs would."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        packed = members(cfg, hydra_cfg)
        hardware.check_processes(cfg)  # packed seeds train in one process: no DDP
        clip = OmegaConf.select(cfg, "trainer.gradient_clip_val")
        if clip:
            raise ConfigError(
                f"trainer.gradient_clip_val={clip} would clip the norm of all packed seeds' "
                "gradients together: a packed seed would no longer train as it would alone; "
                "clip without packing (hydra.sweeper.pack=1)")
    except ConfigError as error:
        config.reject(error, multirun, Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.name)
    configs, started, states = [], [], []
    for seed, output_dir in packed:
        output_dir.mkdir(parents=True, exist_ok=True)
        configs.append(_seed_config(cfg, seed))
        with as_seed(hydra_cfg, configs[-1], output_dir) as mine:
            if output_dir != packed[0][1]:  # as Hydra keeps a job's own: resume_from=<dir>
                _save_overrides(output_dir, list(mine.overrides.task))
            started.append(start(configs[-1], mine))
        states.append(_random_states())
    with interruptible():  # a signal: every seed's record says so, then 143/130/129
        if any(one.job.resume_path is not None for one in started):
            return _one_by_one(hydra_cfg, packed, configs, started, states)
        module, trainer, history, first_step = _train_packed(cfg, packed, started, states)
        failure = None
        for index, ((seed, output_dir), seed_cfg, one) in enumerate(
                zip(packed, configs, started, strict=True)):
            try:
                with as_seed(hydra_cfg, seed_cfg, output_dir):
                    ended = _end_seed(seed_cfg, one, history.epochs, module.diverged.get(seed),
                                      first_step.at, trainer.num_training_batches)
            except BaseException as error:  # stopped: the seeds not yet ended say so too
                for rest in started[index + 1:]:
                    rest.job.fail(None, error)
                raise
            failure = failure or ended
    if failure is not None:
        raise failure
    return started[0].job.record


def _save_overrides(folder: Path, task: list[str]) -> None:
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create(task), hydra_dir / "overrides.yaml")


def _train_packed(cfg: DictConfig, packed: list[tuple[int, Path]], started: list[Started],
                  states: list[dict]) -> tuple[PackedClassifier, pl.Trainer, EpochHistory,
                                               FirstStep]:
    """Fit the seeds as one; on any failure, every seed's record says so."""
    history, first_step = EpochHistory(), FirstStep()
    # the first seed's progress and checkpoint callbacks serve the pack: every checkpoint is
    # written once per seed, into each seed's own folder (SeedCheckpoints)
    shown = ProgressBar | EpochLines | ModelCheckpoint
    kept = [c for c in started[0].callbacks if isinstance(c, shown)]
    try:
        module = PackedClassifier([s.module for s in started], [seed for seed, _ in packed],
                                  states)
        plugins = [instantiate(node) for node in cfg.trainer.get("plugins") or []]
        inner = next((p for p in plugins if isinstance(p, CheckpointIO)), TorchCheckpointIO())
        writer = SeedCheckpoints(inner, module, [folder for _, folder in packed],
                                 [s.job.stamp.identity for s in started])
        trainer = trainer_for(cfg, started[0], [history, first_step, *kept], logger=False,
                              plugins=[*(p for p in plugins if p is not inner), writer])
        trainer.fit(module, datamodule=PackedDataModule([s.datamodule for s in started]))
        module.unpack()
    except BaseException as error:
        failures = [s.job.fail(None, error) for s in started]
        raise failures[0]  # noqa: B904 - fail() chains the cause itself
    return module, trainer, history, first_step


def _one_by_one(hydra_cfg: DictConfig, packed: list[tuple[int, Path]], configs: list[DictConfig],
                started: list[Started], states: list[dict]) -> Record:
    """Each seed alone, from its own checkpoint where it has one, else from the random state
    its own run starts with; the first failure ends the job once every seed has run."""
    failure = None
    for (_, output_dir), seed_cfg, one, state in zip(packed, configs, started, states,
                                                      strict=True):
        torch.set_rng_state(state["cpu"])
        if state["cuda"] is not None:
            torch.cuda.set_rng_state(state["cuda"])
        try:
            with as_seed(hydra_cfg, seed_cfg, output_dir):
                fit_and_test(seed_cfg, one)
        except (Interrupted, KeyboardInterrupt) as error:
            for rest in started[started.index(one) + 1:]:
                rest.job.fail(None, error)
            raise
        except BaseException as error:
            failure = failure or error
    if failure is not None:
        raise failure
    return started[0].job.record


def _end_seed(cfg: DictConfig, started: Started, rows: list[dict],
              diverged: tuple[int, str] | None,
              first_step_at: float | None, batches_per_epoch: int) -> BaseException | None:
    """Test, checkpoint, track and record one packed seed, as its own run's Trainer would; the
    exception the job should end with if this seed failed (the others still end)."""
    job, trainer = started.job, None
    try:
        trainer = trainer_for(cfg, started)
        own = seed_history(rows, cfg.seed, diverged)
        if (history := _of(started.callbacks, EpochHistory)) is not None:
            history.epochs = own
        if (step := _of(started.callbacks, FirstStep)) is not None:
            step.at = first_step_at
        for row in own:  # the learning curve a plain run logs epoch by epoch
            metrics = {k: v for k, v in row.items() if k != "lr"}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=(row["epoch"] + 1) * batches_per_epoch - 1)
        if diverged is not None:
            job.end(trainer, Status.DIVERGED, error=diverged[1])
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
