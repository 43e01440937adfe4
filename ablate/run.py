"""Entry point: ``python -m ablate.run [-m] key=value ...``.

Wires, nothing more: compose (Hydra), instantiate the data module, module, callbacks, logger and
Trainer, fit, test, record. What happens around fit and test is ``ablate.job``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from ablate import config, console, identity
from ablate.errors import CONFIG_ERRORS, Interrupted, SweepFailed, SweepIncomplete
from ablate.records import Record
from ablate.signals import interruptible

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from ablate.job import Job

# torch and Lightning (seconds to import) are imported where a run starts, not at the top: a
# config Hydra cannot compose, --help, and a sweep the sweeper refuses answer without them.


@dataclass
class Started:
    """A run whose record is started: what fit and test need, built from its config."""

    job: Job
    module: Any
    datamodule: Any
    callbacks: list[pl.Callback]


def start(cfg: DictConfig, hydra_cfg: DictConfig) -> Started:
    """Validate, seed, instantiate, start the record; a config that cannot run, or a checkpoint
    that cannot be resumed, ends the job here with one line and no record."""
    output_dir = Path(hydra_cfg.runtime.output_dir)
    config_id = identity.config_id(cfg)  # before instantiate() resolves anything in place
    cell = identity.cell_of(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
    try:
        # First: its value checks need neither torch nor Lightning, so a mistyped value is
        # answered in a second, not after their imports.
        config.validate(cfg)
        import pytorch_lightning as pl

        from ablate import hardware
        from ablate.distributed import writes
        from ablate.job import Job, study_of

        if not writes():  # a data-parallel run's other processes: their lines repeat the first's
            console.console_warnings_only()
        hardware.check(cfg)  # here, not in the plan: a login node plans for GPU nodes
        if cfg.get("selection") is not None:  # a final stage: only at the lr its selection chose
            from ablate import selection

            selection.verify(cfg, hydra_cfg.runtime.choices)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before any weight is drawn
        callbacks = [instantiate(node) for node in cfg.get("callbacks", {}).values() if node]
        callbacks = [c for c in callbacks if c is not None]  # a factory turned its feature off
        module, datamodule = instantiate(cfg.module), instantiate(cfg.datamodule)
        job = Job.begin(cfg, module.network, cell, config_id, output_dir,
                        study=study_of(hydra_cfg))
    except Exception as error:
        config.reject(error, hydra_cfg.mode == RunMode.MULTIRUN, output_dir, hydra_cfg.job.name)
    return Started(job, module, datamodule, callbacks)


def trainer_for(cfg: DictConfig, started: Started, callbacks: list[pl.Callback] | None = None,
                **settings: Any) -> pl.Trainer:
    """The run's Trainer, with its logger (built from the record: W&B names its run after the
    cell) and its callbacks; ``settings`` override the trainer config."""
    from pytorch_lightning.callbacks import ProgressBar

    if "logger" not in settings:  # a partial: Hydra would read a record passed as config
        settings["logger"] = cfg.get("logger") and instantiate(cfg.logger, _partial_=True)(
            record=started.job.record)
    callbacks = started.callbacks if callbacks is None else callbacks
    # Lightning adds its own bar unless told otherwise: off a terminal the progress callback is
    # one line per epoch (ablate.callbacks.progress_bar), not a bar.
    has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    return instantiate(cfg.trainer, default_root_dir=str(started.job.record.output_dir),
                       callbacks=[*callbacks, started.job.stamp],
                       enable_progress_bar=has_bar, **settings)


def run(cfg: DictConfig) -> Record:
    """Train and test one cell; the returned record is also written to ``result.json``. With
    ``packed_with``, several seeds of it in one process (``ablate.packed_run``)."""
    hydra_cfg = HydraConfig.get()
    console.configure(bool(cfg.get("verbose")), hydra_cfg.mode == RunMode.MULTIRUN)
    if cfg.get("packed_with"):
        from ablate import packed_run

        return packed_run.run(cfg, hydra_cfg)
    from ablate import distributed

    if distributed.needs_own_process(cfg, hydra_cfg):  # DDP in a multirun: ablate.distributed
        return distributed.run_in_own_process(hydra_cfg)
    started = start(cfg, hydra_cfg)
    with interruptible():  # SIGTERM/SIGINT/SIGHUP: a record saying so, then 143/130/129
        return fit_and_test(cfg, started)


def fit_and_test(cfg: DictConfig, started: Started) -> Record:
    """Fit (from the run's resume point, if any), test, record; whatever stops it is recorded."""
    job, module, datamodule = started.job, started.module, started.datamodule
    trainer = None
    try:
        trainer = trainer_for(cfg, started)
        trainer.fit(module, datamodule=datamodule, ckpt_path=job.resume_path, weights_only=True)
        job.fitted(trainer)
        trainer.test(module, datamodule=datamodule, verbose=False)
    except BaseException as error:  # interrupts too: the record must still be written
        raise job.fail(trainer, error)  # noqa: B904 - fail() chains the cause itself
    return job.end(trainer)


@hydra.main(version_base="1.3", config_path=f"pkg://{config.CONFIG_MODULE}",
            config_name=config.CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console entry point: registers this project's Hydra pieces once, then runs Hydra."""
    # Hydra's plugin scan finds the sweeper itself; this covers installs the scan cannot list,
    # and imports no sweep code (the sweeper loads it when a sweep runs).
    from hydra_plugins.ablate_sweeper import register_plugins

    config.register()
    register_plugins()
    try:
        from ablate.resume import expand_run_directory

        sys.argv[1:] = expand_run_directory(sys.argv[1:])
        config.check_sweep_name(sys.argv[1:])  # before Hydra makes the run's folder
    except CONFIG_ERRORS as error:
        print(f"ablate: invalid config: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        _hydra_main()
    except SystemExit as stop:
        if stop.code not in (0, None, 2) and not isinstance(stop, SweepFailed | SweepIncomplete):
            from hydra_plugins.ablate_sweeper.extras import launcher_hint

            for hint in [launcher_hint(sys.argv[1:]), *config.key_hints(sys.argv[1:])]:
                if hint:  # a missing launcher package; a misspelt key
                    print(f"ablate: {hint}", file=sys.stderr)
        raise config.exit_for(stop) from None
    except Interrupted as stop:  # 143, 130, 129: a scheduler must not see a success
        raise SystemExit(stop.exit_code) from None


if __name__ == "__main__":
    main()
