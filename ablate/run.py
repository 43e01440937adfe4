"""Entry point: ``python -m ablate.run [-m] key=value ...``.

Wires, nothing more: compose (Hydra), instantiate the data module, module, callbacks, logger and
Trainer, fit, test, record. What happens around fit and test is ``ablate.job``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ProgressBar

from ablate import config, console, records
from ablate.errors import CONFIG_ERRORS, Interrupted, InvalidConfig, SweepFailed
from ablate.job import Job
from ablate.module import Classifier
from ablate.signals import interruptible


@dataclass
class Parts:
    """What one run is made of, built from its config."""

    module: Classifier
    datamodule: pl.LightningDataModule
    callbacks: list[pl.Callback]


def build(cfg: DictConfig) -> Parts:
    """Everything a run needs besides its logger and Trainer; fails on any config problem."""
    config.validate(cfg)
    if cfg.get("selection") is not None:  # a final stage: only at the lr its selection chose
        from ablate import selection

        selection.verify(cfg, HydraConfig.get().runtime.choices)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before any weight is drawn
    callbacks = [instantiate(node) for node in cfg.get("callbacks", {}).values() if node]
    return Parts(module=instantiate(cfg.module), datamodule=instantiate(cfg.datamodule),
                 callbacks=[c for c in callbacks if c is not None])


def study_of(hydra_cfg: DictConfig) -> dict:
    """The record's view of the study around this run: every config group's choice (a W&B
    dashboard shows ``init=xavier``, not ``init._target_``), the overrides it was composed from
    (``resume_from=<run dir>`` composes it again) and the axes its sweep varies (the run's name
    shows those the paper's name does not)."""
    choices = {str(k): v for k, v in hydra_cfg.runtime.choices.items()
               if not str(k).startswith("hydra")}
    overrides = list(hydra_cfg.overrides.task)
    swept = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        swept = records.swept_axes(Path(str(hydra_cfg.sweep.dir)))
    if swept is None:  # a single run, or a sweep without a plan: what the command line set
        swept = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    return {"choices": choices, "overrides": overrides,
            "swept": [k for k in swept if not k.startswith("hydra")
                      and k not in records.NOT_CELL_KEYS]}


def _reject(error: Exception, mode: RunMode | None) -> NoReturn:
    """A config that cannot run is not a run: one line, no record, exit 2 (a sweep goes on)."""
    problem: BaseException | None = error
    while problem is not None and not isinstance(problem, CONFIG_ERRORS):
        problem = problem.__cause__  # Hydra wraps errors raised while instantiating
    if problem is None:
        raise error
    print(f"ablate: invalid config: {problem}", file=sys.stderr)
    raise (InvalidConfig(f"invalid config: {problem}") if mode == RunMode.MULTIRUN
           else SystemExit(2)) from None


def run(cfg: DictConfig) -> dict:
    """Train and test one cell; the returned record is also written to ``result.json``."""
    hydra_cfg = HydraConfig.get()
    console.configure(bool(cfg.get("verbose")), hydra_cfg.mode == RunMode.MULTIRUN)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    config_id = records.config_id(cfg)  # before instantiate() resolves anything in place
    cell = records.cell_of(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
    try:  # a config that cannot run, or a checkpoint that cannot be resumed: no record
        parts = build(cfg)
        job = Job.begin(cfg, parts.module.network, cell, config_id, output_dir,
                        study=study_of(hydra_cfg))
    except Exception as error:
        _reject(error, hydra_cfg.mode)
    trainer = None
    with interruptible():  # SIGTERM/SIGINT/SIGHUP: a record saying so, then 143/130/129
        try:  # loggers are built from the record: W&B names its run after the cell
            # a partial: Hydra would read a record passed to instantiate() as config
            logger = cfg.get("logger") and instantiate(cfg.logger, _partial_=True)(
                record=job.record)
            # Lightning adds its own bar unless told otherwise: off a terminal the progress
            # callback is one line per epoch (ablate.callbacks.progress_bar), not a bar.
            has_bar = any(isinstance(c, ProgressBar) for c in parts.callbacks)
            trainer = instantiate(cfg.trainer, logger=logger, default_root_dir=str(output_dir),
                                  callbacks=[*parts.callbacks, job.stamp],
                                  enable_progress_bar=has_bar)
            trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=job.resume_path,
                        weights_only=True)
            job.fitted(trainer)
            trainer.test(parts.module, datamodule=parts.datamodule, verbose=False)
        except BaseException as error:  # interrupts too: the record must still be written
            raise job.fail(trainer, error)  # noqa: B904 - fail() chains the cause itself
        return job.end(trainer)


@hydra.main(version_base="1.3", config_path=f"pkg://{config.CONFIG_MODULE}",
            config_name=config.CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console entry point: registers this project's Hydra pieces once, then runs Hydra."""
    from hydra_plugins.ablate_sweeper import register_plugins  # the sweep side, only from here

    config.register()
    register_plugins()
    try:
        from ablate.resume import expand_run_directory

        sys.argv[1:] = expand_run_directory(sys.argv[1:])
    except CONFIG_ERRORS as error:
        print(f"ablate: invalid config: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        _hydra_main()
    except SystemExit as stop:
        if stop.code not in (0, None, 2) and not isinstance(stop, SweepFailed):
            from hydra_plugins.ablate_sweeper.extras import launcher_hint

            hint = launcher_hint(sys.argv[1:])  # Hydra could not compose a missing launcher
            if hint:
                print(f"ablate: {hint}", file=sys.stderr)
            config.print_key_hints(sys.argv[1:])
        raise
    except Interrupted as stop:  # 143, 130, 129: a scheduler must not see a success
        raise SystemExit(stop.exit_code) from None


if __name__ == "__main__":
    main()
