"""Runs on disk as plain rows: one per ``result.json``, and one per job folder without a record.

A row is a flat dict of the report's ``COLUMNS``: the cell as the tables group it, the protocol
(JSON, with its id, stage and study), the metrics (NaN where there is none) and provenance.
Below both the report (``ablate.report.load``) and the final stage's check
(``ablate.selection``): no pandas and no torch here.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import atomic, identity, provenance, records, stages
from ablate.status import Status

METRICS = ("test_error", "val_error", "train_error", "train_loss", "val_loss", "test_loss")
# Prediction consistency under the moves of ``metrics.invariance``: ``consistency_<k>`` (the
# mean over 8 directions at a shift of k px) for every shift a run's record holds, whichever
# ``callbacks.test_predictions.shifts`` it was run with, and the left-right flip. A shift a run
# did not measure (older records, or ``shifts=[]``) is NaN, which the report shows as "n/a".
CONSISTENCY_FLIP = "consistency_flip"
COLUMNS = (
    "source", "path", "sweep", "wandb_id", "cell_id", "name", *identity.CELL_AXES, "lr", "seed",
    "status", *METRICS, CONSISTENCY_FLIP, "params", "epochs", "train_images", "wall_seconds",
    "started_at", "ended_at", "protocol", "protocol_spec", "stage", "study", "cell", "error",
    "history", "superseded", "test_fingerprint", "correct", "code", "versions", "config_id",
    "data_fingerprint",
)
KEY_PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "wandb")
WITHOUT_METRICS = "finished runs without a finite test_error (counted as failed)"
# A table cell: the runs of one row, lr and seed. Two runs here are reruns of each other,
# unless they were made with different configs (``ablate.report.load``'s variants).
TABLE_CELL = ("protocol", "dataset", "augmentation", "name", "lr", "seed")
# Why a record cannot be read: records.RecordError, or fields of the wrong shape.
READ_ERRORS = (records.RecordError, KeyError, TypeError, AttributeError, ValueError)


def display(path: Path) -> str:
    """A path as the report shows it: relative to the working directory where possible."""
    here, absolute = Path.cwd(), Path(os.path.abspath(path))  # no filesystem calls
    if absolute.is_relative_to(here):
        return str(absolute.relative_to(here))
    resolved, base = path.resolve(), here.resolve()  # through symbolic links
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(path)


def consistency_fields(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``consistency_<k>`` for every ``shift_<k>`` of ``metrics.invariance`` and
    ``consistency_flip``; NaN where the run has none, so that means and tests over seeds skip
    it rather than count it as 0."""
    invariance = metrics.get("invariance")
    invariance = invariance if isinstance(invariance, Mapping) else {}
    found = {key: stages.number(entry.get("consistency")) if isinstance(entry, Mapping)
             else math.nan for key, entry in invariance.items()}
    return {**{f"consistency_{int(key[6:])}": value for key, value in found.items()
               if key.startswith("shift_") and key[6:].isdigit()},
            CONSISTENCY_FLIP: found.get("flip", math.nan)}


def make_row(*, source: str, path: str, sweep: str | None, cell: Mapping[str, Any],
             name: str | None, status: str, metrics: Mapping[str, Any],
             config: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """One run's row, from whichever source: its cell, status, metrics and config."""
    protocol = identity.protocol_of(config) if config else None
    if config and isinstance(config.get("protocol"), str):  # a compact W&B config carries it
        protocol = json.loads(config["protocol"])
    cell = stages.report_cell(cell, config)
    model, downsample = cell.get("model"), cell.get("downsample")
    row = {column: None for column in COLUMNS}
    row.update(
        source=source, path=path, sweep=sweep, status=status,
        cell_id=identity.cell_id(cell), cell=json.dumps(dict(cell), sort_keys=True, default=str),
        # every ablate run records the paper's name of its network; a foreign one gets its axes
        name=name or (f"{model}-{downsample}" if model and downsample else None),
        **{axis: cell.get(axis) for axis in identity.CELL_AXES},
        lr=stages.number(cell.get("lr")), seed=cell.get("seed"), superseded=False,
    )
    if protocol is not None:  # parsed here once: stage and study are columns of their own
        row.update(protocol=stages.protocol_id(protocol), stage=stages.stage_of(protocol),
                   protocol_spec=json.dumps(protocol, sort_keys=True),
                   study=stages.protocol_id(stages.study_protocol(protocol)))
    # NaN for a missing metric, NaN and inf alike: no number the tables can use
    row.update({key: value if math.isfinite(value := stages.number(metrics.get(key)))
                else math.nan for key in METRICS})
    if status == Status.FINISHED and math.isnan(row["test_error"]):
        # NaN or inf (a run whose test loop broke): no number to average, so it counts as
        # failed in every count and table alike, and is named in the warnings (load_runs)
        row.update(status=Status.FAILED, error=f"{WITHOUT_METRICS}: test_error is "
                                               f"{metrics.get('test_error', 'missing')}")
    row.update(consistency_fields(metrics))
    row.update({key: value for key, value in extra.items() if key in row and value is not None})
    return row


def sweep_dir(record_path: Path) -> Path:
    """The sweep folder a record's run belongs to (a single run's own folder outside a sweep)."""
    job_dir = record_path.parent
    return job_dir.parent if (job_dir.parent / "multirun.yaml").exists() else job_dir


def _sweep_of(path: Path, sweep_name: str | None) -> str:
    """``<sweep_name>/<time dir>``, the same group name W&B gets (ablate.tracking)."""
    folder = sweep_dir(path)
    return f"{sweep_name or folder.parent.name}/{folder.name}"


def row_from_record(record: records.Record, path: Path) -> dict[str, Any]:
    """A record's row (its ``history`` as the record holds it)."""
    wandb_info, commit, versions = record.wandb or {}, record.git_commit, record.versions
    return make_row(
        source="record", path=display(path),
        sweep=wandb_info.get("group") or _sweep_of(path, record.config.get("sweep_name")),
        cell=record.cell, name=record.name, status=record.status, metrics=record.metrics,
        config=record.config, wandb_id=wandb_info.get("id"), cell_id=record.cell_id,
        config_id=record.config_id, params=record.params, epochs=record.epochs,
        train_images=(record.images or {}).get("train"), wall_seconds=record.wall_seconds,
        started_at=record.started_at, ended_at=record.ended_at, error=record.error,
        history=record.history, data_fingerprint=record.data_fingerprint,
        # the commit a run's code came from, short, with +dirty where its source was edited
        code=str(commit)[:7] + ("+dirty" if record.git_dirty else "") if commit else None,
        # the package versions the report's Inputs name (the record keeps every one)
        versions=", ".join(f"{name} {versions[name]}" for name in KEY_PACKAGES
                           if versions.get(name)) or None,
    )


def job_state(job_dir: Path) -> Status:
    """A job folder without a record is running, unless its start marker names a process of
    this host that is gone (``kill -9``): interrupted. Another host's process counts as running."""
    marker = atomic.read_json(job_dir / records.START_FILE)
    if marker is None or marker.get("host") != socket.gethostname():
        return Status.RUNNING
    alive = provenance.process_alive(marker.get("host"), marker.get("pid"),
                                     marker.get("pid_start"))
    return Status.RUNNING if alive else Status.INTERRUPTED


def in_progress_row(job_dir: Path) -> dict[str, Any]:
    """A Hydra job folder with no record: still running, or killed before it could write one
    (``job_state``). Raises whatever OmegaConf raises on a half-written folder."""
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    for key in ("logger", "callbacks"):  # ${hydra:...} only resolves inside the job
        config.pop(key, None)
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 - then the protocol is unknown, the rest still shown
        resolved = None
    cell = {key: choices.get(key) for key in identity.CELL_AXES}
    cell.update(seed=config.get("seed"), lr=config.get("lr"))
    name = ((resolved or {}).get("network") or {}).get("name")
    return make_row(source="job folder", path=display(job_dir),
                    sweep=_sweep_of(job_dir / records.RESULT_FILE, config.get("sweep_name")),
                    cell=cell, name=name, status=job_state(job_dir), metrics={},
                    config=resolved)


def read_records(paths: Iterable[Path], unreadable: Callable[[Path, Exception], Any],
                 ) -> list[tuple[Path, records.Record, dict[str, Any]]]:
    """``(path, record, row)`` of every readable record; ``unreadable(path, error)`` for the
    others (the report names them, the final stage counts them as missing)."""
    loaded = []
    for path in paths:
        try:
            record = records.load(path)
            loaded.append((path, record, row_from_record(record, path)))
        except READ_ERRORS as error:
            unreadable(path, error)
    return loaded


def in_progress_rows(job_dirs: Iterable[Path],
                     unreadable: Callable[[Path, Exception], Any]) -> list[dict[str, Any]]:
    """The rows of job folders without a record; ``unreadable`` for half-written ones."""
    found = []
    for job_dir in job_dirs:
        try:
            found.append(in_progress_row(job_dir))
        except Exception as error:  # noqa: BLE001 - a half-written folder is what we expect
            unreadable(job_dir, error)
    return found


@dataclass
class Found:
    records: list[Path] = field(default_factory=list)
    wandb_runs: list[Path] = field(default_factory=list)
    job_dirs: list[Path] = field(default_factory=list)

    @property
    def in_progress(self) -> list[Path]:
        """The job folders that hold no record (yet)."""
        ended = {path.parent.resolve() for path in self.records} if self.job_dirs else set()
        return [job_dir for job_dir in self.job_dirs if job_dir.resolve() not in ended]


def discover(paths: Iterable[str | os.PathLike[str]]) -> Found:
    """Records, W&B run folders (with a ``run-*.wandb`` log) and Hydra job folders."""
    found = Found()
    for root in map(Path, paths):
        if root.is_file():
            (found.wandb_runs if root.suffix == ".wandb" else found.records).append(
                root.parent if root.suffix == ".wandb" else root)
            continue
        for directory, subdirs, files in os.walk(root):  # never follows links (latest-run)
            subdirs.sort()
            here = Path(directory)
            if records.RESULT_FILE in files:
                found.records.append(here / records.RESULT_FILE)
            if any(f.startswith("run-") and f.endswith(".wandb") for f in files):
                found.wandb_runs.append(here)
            if ".hydra" in subdirs and (here / ".hydra" / "hydra.yaml").is_file():
                found.job_dirs.append(here)
    return Found(*(sorted(set(paths)) for paths in
                   (found.records, found.wandb_runs, found.job_dirs)))


def _key(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def superseded(rows: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Position of each superseded row -> position of the row that supersedes it: of several
    ended runs of one ``TABLE_CELL``, the newest (``ended_at``, then path) counts, so that a
    seed is never counted twice."""
    cells: dict[tuple, list[int]] = {}
    for position, row in enumerate(rows):
        if row["status"] != Status.RUNNING:
            cells.setdefault(tuple(_key(row[k]) for k in TABLE_CELL), []).append(position)
    replaced = {}
    for positions in cells.values():
        if len(positions) > 1:
            order = sorted(positions, key=lambda p: (_key(rows[p]["ended_at"]) is not None,
                                                     _key(rows[p]["ended_at"]) or "",
                                                     rows[p]["path"]))
            replaced.update({old: order[-1] for old in order[:-1]})
    return replaced
