"""Weights & Biases tracking of every run, through Lightning's ``WandbLogger``.

``conf/logger/wandb.yaml`` builds a :class:`CellWandbLogger` from the run's started record, so
the W&B run is named after its cell before ``wandb.init``; :func:`finish` closes it once
``result.json`` is on disk. ``ablate.run`` itself never touches W&B. A W&B run agrees with
``result.json``: ``group`` is the sweep (``quick/2026-11-30_03-45-09``), ``name`` and ``tags``
the cell, ``id`` the cell in that sweep (:func:`run_id`), or that of the W&B run a resumed
checkpoint came from (:func:`resumed_run`). Mode ``auto`` is ``offline`` unless a W&B login is
present (:func:`has_login`: only its presence is read, never the key); ``WANDB_MODE`` wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import netrc
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytorch_lightning.loggers import WandbLogger

from ablate import atomic, identity, records
from ablate.errors import ConfigError
from ablate.records import Record

log = logging.getLogger("ablate")

MODES = ("auto", "online", "offline", "disabled")
# W&B's own aliases for its modes (WANDB_MODE=dryrun is the old name of offline).
_MODE_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}
_DEFAULT_HOST = "https://api.wandb.ai"
_MAX_TAG = 64  # W&B rejects longer tags


def has_login(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether W&B could log in without asking: an API key, a token file, or a netrc entry."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(environ.get("WANDB_BASE_URL") or _DEFAULT_HOST).hostname
    if not host:
        return False
    candidates = [environ.get("NETRC")] if environ.get("NETRC") else []
    candidates += [str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]
    for candidate in candidates:
        with contextlib.suppress(OSError, netrc.NetrcParseError):  # no such file, or not netrc
            if (entry := netrc.netrc(candidate).authenticators(host)) and entry[2]:
                return True
    return False


def resolve_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """``online``, ``offline`` or ``disabled``, from the configured mode and the environment."""
    mode = _MODE_ALIASES.get(str(mode), str(mode))
    if mode not in MODES:
        raise ConfigError(
            f"logger.mode={mode!r} is not a W&B mode; use one of {', '.join(MODES)} "
            "(auto: online when logged in, else offline), or logger=none to turn W&B off")
    if mode != "auto":
        return mode
    from_env = environ.get("WANDB_MODE", "").strip().lower()
    if from_env:
        from_env = _MODE_ALIASES.get(from_env, from_env)
        if from_env not in MODES[1:]:
            raise ConfigError(f"WANDB_MODE={from_env!r} is not one of {', '.join(MODES[1:])}")
        return from_env
    return "online" if has_login(environ) else "offline"


class CellWandbLogger(WandbLogger):
    """A ``WandbLogger`` whose run identity (name, id, group, tags, config) comes from the cell
    of ``record``, the run's started record; ``run_info`` is for the record's ``wandb`` field.
    A W&B run still open in this process (an earlier job of a multirun that could not finish
    it) is finished first, as failed, so that this job never logs into it."""

    def __init__(self, record: Record, project: str = "ablate", entity: str | None = None,
                 mode: str = "auto", save_dir: str | os.PathLike[str] = ".",
                 tags: Sequence[str] = (), job_type: str | None = "train",
                 notes: str | None = None, log_model: bool = False, **kwargs: Any) -> None:
        self.mode = resolve_mode(mode)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        import wandb

        if wandb.run is not None:
            log.warning("W&B run %s of an earlier job was still open; finishing it as failed",
                        wandb.run.id)
            wandb.run.finish(exit_code=1)
        # Before any W&B setting is validated: W&B then reads WANDB_SILENT (ablate.console sets
        # it unless verbose) for its own notes too, e.g. the one on Lightning's `anonymous`.
        wandb.setup()
        group = sweep_group(str(record.config.get("sweep_name", "default")),
                            str(record.output_dir))
        name = run_name(str(record.name), record.cell, record.swept)
        resumed = resumed_run(record.resumed_from)
        wandb_id = resumed.get("id") or run_id(str(record.cell_id), group)
        group = resumed.get("group") or group  # a resumed W&B run stays in its own group
        # mode goes to wandb.init; WandbLogger's own offline=True would set WANDB_MODE for the
        # whole process, leaking into every later job of a multirun.
        super().__init__(
            project=project, save_dir=str(save_dir), log_model=log_model, entity=entity,
            mode=self.mode, job_type=job_type, notes=notes, name=name, id=wandb_id, group=group,
            tags=sorted({_tag(t) for t in [*run_tags(record.cell), *map(str, tags)]}),
            config={**study_config(record), "sweep": group},
            **kwargs)
        self.run_info = {
            "id": wandb_id, "name": name, "group": group, "project": project, "entity": entity,
            "mode": self.mode, "dir": str(Path(save_dir) / "wandb")}


def csv_logger(record: Record, save_dir: str, **kwargs: Any) -> Any:
    """Lightning's ``CSVLogger``; takes (and ignores) the record every logger is built from."""
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=save_dir, **kwargs)


def _tag(text: str) -> str:
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 3] + "..."


def _format_value(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def run_name(name: str, cell: Mapping[str, Any], swept: Iterable[str] = ()) -> str:
    """``All-CNN-C/cifar10/none/lr0.05/s0``: the paper's row label, then the cell's axes, then
    ``key=value`` for every swept axis the paper's label does not show (``init=kaiming``), so
    that the runs of a sweep over ``init`` and ``width`` never share a name."""
    parts = [name, str(cell.get("dataset")), str(cell.get("augmentation")),
             f"lr{_format_value(cell.get('lr'))}", f"s{cell.get('seed')}"]
    extra = [key for key in swept if key not in identity.PAPER_AXES and key in cell]
    parts += [f"{key}={_format_value(cell[key])}" for key in dict.fromkeys(extra)]
    return "/".join(parts)


def study_config(record: Record) -> dict[str, Any]:
    """The W&B config: the study in a few dozen keys, not the ~180 of the resolved config (the
    record keeps those). The protocol is one JSON string, so that a W&B run read back alone
    lands in the same report table as its record."""
    config = record.config
    scalars = {key: value for key, value in config.items()
               if not isinstance(value, Mapping | list) and key not in identity.CONTROL_KEYS}
    trainer = {key: value for key, value in (config.get("trainer") or {}).items()
               if key != "_target_"}
    return {**record.choices, **scalars, "trainer": trainer,
            "network": record.network, "channels": record.channels,
            "cell": record.cell, "cell_id": record.cell_id, "name": record.name,
            "params": record.params,
            "protocol": json.dumps(identity.protocol_of(config), sort_keys=True)}


def run_tags(cell: Mapping[str, Any]) -> list[str]:
    """One ``key=value`` tag per value of the cell, so any swept value can be filtered on."""
    return sorted(_tag(f"{key}={_format_value(value)}") for key, value in cell.items())


def run_id(cell_id: str, group: str) -> str:
    """Deterministic: a requeued job continues its W&B run, another sweep never does."""
    return f"{cell_id}-{hashlib.sha256(group.encode('utf-8')).hexdigest()[:8]}"


def resumed_run(resume_from: str | os.PathLike[str] | None) -> dict[str, str]:
    """``id`` and ``group`` of the W&B run whose checkpoint this one continues, where known.

    ``resume_from`` is ``<run dir>/checkpoints/last.ckpt``; the id comes from that run's newest
    ``<run dir>/wandb/[offline-]run-<YYYYmmdd_HHMMSS>-<id>/run-<id>.wandb``, the group from its
    record or, for a killed run, is this sweep's (the W&B files do not say).
    """
    if not resume_from:
        return {}
    run_dir = Path(resume_from).resolve().parent.parent
    logs = sorted((log for log in run_dir.glob("wandb/*/run-*.wandb")
                   if not log.parent.is_symlink()),  # W&B's latest-run link
                  key=lambda log: log.parent.name.removeprefix("offline-").removeprefix("run-"))
    if not logs:
        return {}
    earlier = atomic.read_json(run_dir / records.RESULT_FILE) or {}  # its group, even if damaged
    group = (earlier.get("wandb") or {}).get("group")
    return {"id": logs[-1].stem[len("run-"):], **({"group": group} if group else {})}


def sweep_group(sweep_name: str, output_dir: str | os.PathLike[str]) -> str:
    """``<sweep_name>/<time dir>`` for the sweep (or single run) this job belongs to."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        return f"{sweep_name}/{Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir).name}"
    except Exception:  # outside a Hydra job: the output directory's own name
        return f"{sweep_name}/{Path(output_dir).name}"


def wandb_run_of(loggers: Iterable[Any]) -> dict[str, Any] | None:
    """The W&B run a job logged to (id, name, group, ...), for its record; None without one."""
    return next((t.run_info for t in loggers if isinstance(t, CellWandbLogger)), None)


def finish(loggers: Iterable[Any], record: Record) -> None:
    """Write the final metrics to the W&B summary and finish the W&B run, whatever happened (a
    run that failed before Lightning opened its W&B run is opened here, to show as failed).
    Errors of W&B itself are logged, never raised: the record is already safely on disk."""
    trackers = [logger for logger in loggers if isinstance(logger, CellWandbLogger)]
    summary = {**record.metrics, "status": str(record.status), "epochs": record.epochs,
               "params": record.params, "wall_seconds": record.wall_seconds,
               "cell_id": record.cell_id, **({"error": record.error[:500]} if record.error else {}),
               **({"data_fingerprint": record.data_fingerprint} if record.data_fingerprint else {})}
    for tracker in trackers:
        try:
            experiment = tracker.experiment
            experiment.summary.update(summary)
            experiment.finish(exit_code=0 if record.finished else 1)
        except Exception as error:  # noqa: BLE001 - tracking must never lose a record
            log.warning("W&B: could not finish the run cleanly: %s", error)
            with contextlib.suppress(Exception):
                import wandb

                if wandb.run is not None:
                    wandb.run.finish(exit_code=1)
    if trackers:
        _teardown_in_ray_worker()


def _teardown_in_ray_worker() -> None:
    """In a Ray worker (Ray imported and connected), which exits right after its job
    (``max_calls: 1``), shut W&B's service down now: left to W&B's exit handler, it races the
    worker's exit and prints a ConnectionResetError traceback after a job that succeeded. Not
    elsewhere: in a process that runs more jobs, W&B would start its service again."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():  # a half-imported Ray is no worker of ours
            import wandb

            wandb.teardown()
    except Exception as error:  # noqa: BLE001 - the record is on disk already
        log.debug("W&B teardown: %s", error)
