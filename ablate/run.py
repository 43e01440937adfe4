"""Entry point: ``python -m ablate.run [-m] key=value ...``.

Composes the config with Hydra, instantiates the network, data module, Lightning module and
Trainer from it, trains, tests, and leaves ``result.json`` in the run's output directory
whatever happens. It holds no model, data or report logic of its own.
"""

from __future__ import annotations

import importlib.resources
import logging
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ablate import config as config_lib
from ablate import records, tracking
from ablate.callbacks import (
    EpochHistory,
    FirstStep,
    RandomState,
    TimeEstimate,
    epoch_metrics,
    progress_bar,
)
from ablate.data.splits import DatasetError
from ablate.module import Classifier, Diverged
from ablate.network import count_parameters, paper_name
from ablate.resume import resume_point
from ablate.spec import SpecError, format_spec
from ablate.sweep import SweepFailed, write_marker

log = logging.getLogger("ablate")
config_lib.register_configs()

# Errors that mean "this config cannot run": reported in one line, no record is written.
CONFIG_ERRORS = (config_lib.ConfigError, SpecError, DatasetError)


class RunFailed(RuntimeError):
    """Raised after the record of a failed or diverged run is safely on disk."""


class InvalidConfig(RuntimeError):
    """A config problem in one job of a sweep: reported in the sweep's summary, no record."""


def _config_error(error: BaseException) -> BaseException | None:
    """The config problem behind ``error`` (Hydra wraps errors raised while instantiating)."""
    while error is not None:
        if isinstance(error, CONFIG_ERRORS):
            return error
        error = error.__cause__
    return None


def _device_name(trainer: pl.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())}


def build(
    cfg: DictConfig, output_dir: Path
) -> tuple[Classifier, pl.LightningDataModule, pl.Trainer, dict]:
    """Everything a run needs, from config; fails before training on any config problem."""
    config_lib.validate(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before any weight is drawn
    choices = HydraConfig.get().runtime.choices
    name = paper_name(choices.model, choices.downsample)
    network = instantiate(cfg.network, name=name)
    module = Classifier(
        network,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=cfg.dataset.num_classes,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    datamodule = instantiate(cfg.datamodule)
    history, first_step = EpochHistory(), FirstStep()
    callbacks: list[pl.Callback] = [TimeEstimate(), history, RandomState(), first_step]
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_args.get("enable_progress_bar") is not False:
        callbacks.append(progress_bar(cfg.progress_refresh_rate))
    if trainer_args.get("enable_checkpointing") is not False:
        # Only the last epoch is kept, overwritten each epoch: what a resumed run continues
        # from. (save_last with save_top_k=0 would write it only at the end of training.)
        callbacks.append(ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="last",
                                         save_top_k=1, enable_version_counter=False))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = pl.Trainer(**trainer_args, logger=logger, callbacks=callbacks,
                         default_root_dir=str(output_dir))
    return module, datamodule, trainer, {"name": name, "history": history,
                                         "first_step": first_step}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one cell; the returned record is also written to ``result.json``."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    started = time.perf_counter()
    # Taken before building: instantiate() resolves some interpolations of cfg in place.
    config_id = config_lib.config_id_of(cfg)
    try:
        module, datamodule, trainer, extra = build(cfg, output_dir)
    except Exception as error:
        problem = _config_error(error)
        if problem is None:
            raise
        print(f"ablate: invalid config: {problem}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the other jobs of the sweep go on
            raise InvalidConfig(f"invalid config: {problem}") from None
        raise SystemExit(2) from None

    cell = config_lib.cell_of(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
    record: dict[str, Any] = {
        "schema": records.SCHEMA_VERSION,
        "name": extra["name"],
        "cell": cell,
        "cell_id": records.cell_id(cell),
        "params": count_parameters(module.network),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": records.package_versions(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output_dir": str(output_dir),
        "config_id": config_id,
    }
    record.update({f"git_{k}": v for k, v in records.git_state().items()})
    # An interrupted run continues from its checkpoint: the one a sweep passes, or its own
    # (a SLURM job requeued into the same directory).
    resume = resume_point(cfg.get("resume_from"), output_dir, config_id)
    record.update(resumed_from=resume.path and str(resume.path), resumed_epoch=resume.epoch)
    if resume.note:
        log.warning("%s", resume.note)
        record["resume_note"] = resume.note
    write_marker(output_dir, record)
    log.info("%s, %s parameters, cell %s", extra["name"], f"{record['params']:,}", cell)
    log.info("network (%dx%d input):\n%s", cfg.dataset.image_size, cfg.dataset.image_size,
             format_spec(module.network.spec, cfg.dataset.image_size))

    status, error_text, failure = "finished", None, None
    try:
        tracking.start(trainer.loggers, record)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.path, weights_only=True)
        # A run resumed after its last epoch fits nothing: its train/val metrics come from the
        # history restored with the checkpoint.
        last_epoch = extra["history"].epochs[-1] if extra["history"].epochs else {}
        fit_metrics = {**epoch_metrics(last_epoch), **_metrics(trainer)}
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics = {**fit_metrics, **_metrics(trainer)}
    except Diverged as error:
        status, error_text, failure = "diverged", str(error), error
        metrics = _metrics(trainer)
    except BaseException as error:  # KeyboardInterrupt too: the record must still be written
        status, failure = "failed", error
        # Stopped from outside (Ctrl-C, a SLURM preemption): a sweep resumes it from its
        # checkpoint instead of training again.
        record["interrupted"] = isinstance(error, KeyboardInterrupt | SystemExit)
        error_text = "".join(traceback.format_exception_only(type(error), error)).strip()
        record["traceback"] = traceback.format_exc()
        metrics = _metrics(trainer)

    record.update(
        status=status,
        error=error_text,
        metrics=metrics,
        epochs=len(extra["history"].epochs),
        history=extra["history"].epochs,
        wall_seconds=round(time.perf_counter() - started, 3),
        first_step_at=extra["first_step"].at,
        device=_device_name(trainer),
        ended_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    path = records.write_json_atomic(output_dir / records.RESULT_FILE, record)
    tracking.finish(trainer.loggers, record)
    if failure is not None:
        log.error("%s %s: %s (record: %s)", extra["name"], status, error_text, path)
        if isinstance(failure, KeyboardInterrupt | SystemExit):
            raise failure
        raise RunFailed(f"{extra['name']} {status}: {error_text}") from failure
    log.info("%s finished: test_error %.4f, val_error %.4f in %.0f s (record: %s)",
             extra["name"], metrics.get("test_error", float("nan")),
             metrics.get("val_error", float("nan")), record["wall_seconds"], path)
    return record


@hydra.main(version_base="1.3", config_path=f"pkg://{config_lib.CONFIG_MODULE}",
            config_name=config_lib.CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def _print_key_hints(arguments: list[str]) -> None:
    """After Hydra rejected an override, say which key was probably meant."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return
    conf_root = importlib.resources.files(config_lib.CONFIG_MODULE)
    groups = sorted(entry.name for entry in conf_root.iterdir() if entry.is_dir())
    choices = []
    for override in parsed:
        if override.key_or_group in groups and not override.is_add() and not override.is_delete():
            value = (next(iter(override.sweep_string_iterator())) if override.is_sweep_override()
                     else override.get_value_element_as_str())
            choices.append(f"{override.key_or_group}={value}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_lib.CONFIG_NAME, overrides=choices)
    except Exception:
        return
    for hint in config_lib.unknown_key_hints(cfg, overrides, groups):
        print(f"ablate: {hint}", file=sys.stderr)


def main() -> None:
    """Console entry point; adds key hints to Hydra's own message when an override is bad."""
    try:
        _hydra_main()
    except SystemExit as stop:
        if stop.code not in (0, None, 2) and not isinstance(stop, SweepFailed):
            _print_key_hints(sys.argv[1:])
        raise


if __name__ == "__main__":
    main()
