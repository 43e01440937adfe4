"""The run record: one typed ``Record``, the only interface between running a cell and
reporting on it.

Every run leaves ``result.json`` in its output directory: started with :meth:`Record.start`,
completed and written by :meth:`Record.end`, read back by :func:`load`. This module is the
only one that knows the record's fields; every other module reads attributes. A record that
does not parse (unknown field, wrong type, a metric out of range, a status that is no
``Status``) raises ``RecordError`` naming the file and the field: it is never counted as a
finished run, and nothing is filled in with a silent default. Free of torch: the report and
the sweep planner import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablate import provenance
from ablate.atomic import read_json, write_json_atomic
from ablate.errors import RecordError
from ablate.identity import cell_id
from ablate.status import ENDED, Status

RESULT_FILE = "result.json"
# Written by the sweeper into the sweep's directory before its first job: the plan, the axes.
SWEEP_FILE = "sweep.json"
# Written when a run starts, so that a sweep can tell an interrupted run (marker, checkpoint, no
# record) from one that never started; it is not a record and carries no status.
START_FILE = "started.json"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
SCHEMA_VERSION = 2  # 2: start marker renamed, trainer config holds only the keys set


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Record:
    """One run: what it is (cell, config, provenance) and, once ended, what it came to.

    Only ``status`` and ``cell`` are required when a record is read: records of schema 1 and
    hand-written ones in tests carry little else. An absent field is None (or empty), which
    every reader treats as "not measured", never as a value.
    """

    cell: dict[str, Any]
    status: Status | None = None  # None only while the run is going: never on disk
    schema: int | None = None
    name: str | None = None
    cell_id: str | None = None
    params: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_id: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    output_dir: str | None = None
    host: str | None = None  # a sweep calibrates its estimates on this host's runs only
    git_commit: str | None = None
    git_dirty: bool | None = None
    git_source: str | None = None
    # The network as built (width applied), and the study around the run (``ablate.job``).
    network: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    choices: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    resumed_epoch: int | None = None
    resume_note: str | None = None
    # The outcome: whatever the run could measure, also when it failed.
    ended_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str | None = None
    wall_seconds: float | None = None
    first_step_at: float | None = None
    error: str | None = None
    interrupted: bool | None = None  # a failed run stopped from outside: resumable
    traceback: str | None = None
    images: dict[str, int] | None = None
    # the hash of the source the data was prepared from, where the dataset has one (shards):
    # two runs of one cell on other sources are not reruns (the report tables them apart)
    data_fingerprint: str | None = None
    predictions: dict[str, Any] | None = None
    invariance_seconds: float | None = None
    wandb: dict[str, Any] | None = None

    @classmethod
    def start(cls, *, name: str, cell: Mapping[str, Any], params: int,
              config: Mapping[str, Any], config_id: str,
              output_dir: str | os.PathLike[str], **study: Any) -> Record:
        """The part of a record known before training: identity, config, provenance."""
        git = provenance.git_state()
        return cls(schema=SCHEMA_VERSION, name=name, cell=dict(cell), cell_id=cell_id(cell),
                   params=params, config=dict(config), config_id=config_id,
                   versions=provenance.package_versions(), started_at=_now(),
                   output_dir=str(output_dir), host=socket.gethostname(), git_commit=git["commit"],
                   git_dirty=git["dirty"], git_source=git["source"], **study)

    def note(self, **fields: Any) -> None:
        """Set fields known after the start (the resume point); unknown names are an error."""
        for key, value in fields.items():
            if key not in _FIELDS:
                raise TypeError(f"a record has no field {key!r}")
            setattr(self, key, value)

    def end(self, status: Status, **outcome: Any) -> Path:
        """Complete the record with its outcome and write ``result.json``; returns its path."""
        if status not in ENDED:
            raise ValueError(f"status {status!r} is not one of {[str(s) for s in ENDED]}")
        self.note(status=Status(status), ended_at=_now(), **outcome)
        return write_json_atomic(Path(str(self.output_dir)) / RESULT_FILE, self.to_json())

    @property
    def finished(self) -> bool:
        return self.status == Status.FINISHED

    def to_json(self) -> dict[str, Any]:
        """The record as JSON: every field, None included, so that its schema is visible."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["status"] = None if self.status is None else self.status.value
        return data

    @classmethod
    def from_json(cls, data: Any, source: str | os.PathLike[str] = "record") -> Record:
        """Parse and validate; ``RecordError`` names ``source`` and the first bad field."""
        if not isinstance(data, dict):
            raise RecordError(f"{source}: a result record must be a JSON object")
        missing = [key for key in ("status", "cell") if key not in data]
        if missing:
            raise RecordError(f"{source}: result record lacks {', '.join(missing)}")
        for key, value in data.items():
            problem = _check(key, value)
            if problem:
                raise RecordError(f"{source}: field {key!r} {problem}")
        return cls(**{**data, "status": Status(data["status"])})


_FIELDS = {f.name for f in dataclasses.fields(Record)}
_TYPES = typing.get_type_hints(Record)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a field's type: a bool is no number, an int is a float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in typing.get_args(hint))
    base = typing.get_origin(hint) or hint
    if base is Status:
        return value in ENDED
    if isinstance(value, bool):
        return base is bool
    return isinstance(value, int | float if base is float else base)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(key: str, value: Any) -> str | None:
    """What is wrong with one field of a record read from disk, or None."""
    if key not in _FIELDS:
        return "is unknown (a record of a newer ablate, or edited by hand)"
    hint = _TYPES[key]
    if not _conforms(value, hint):
        if key == "status":
            return f"names an unknown status {value!r}; expected one of {list(map(str, ENDED))}"
        return f"is {value!r} ({type(value).__name__}); expected {hint}"
    if key in ("params", "epochs", "wall_seconds") and value is not None and value < 0:
        return f"is {value!r}; expected a number >= 0"
    if key == "cell":
        for name, kind in (("lr", _is_number), ("seed", lambda v: _is_number(v)
                                                 and float(v).is_integer())):
            if name in value and value[name] is not None and not kind(value[name]):
                return f"has {name} {value[name]!r}; expected a number"
    if key == "metrics":
        for name, metric in value.items():
            if isinstance(metric, dict):
                continue  # a structured metric (invariance): its own reader checks it
            if metric is not None and not _is_number(metric):
                return f"has {name} {metric!r}; expected a number"
            # nan or inf: the run measured no error (the report counts it as failed)
            if (name.endswith("_error") and metric is not None and math.isfinite(metric)
                    and not 0 <= metric <= 1):
                return f"has {name} {metric!r}; an error rate lies in [0, 1]"
    return None


def load(path: str | os.PathLike[str]) -> Record:
    """Load one record; a damaged or invalid file raises ``RecordError`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: not a readable result record ({error})") from error
    return Record.from_json(data, path)


def write_start(record: Record) -> Path:
    """Mark the record's output directory as holding a started run of its ``config_id``."""
    marker = {key: getattr(record, key) for key in (
        "config_id", "cell_id", "cell", "name", "started_at", "resumed_from", "resumed_epoch")}
    marker.update(host=socket.gethostname(), pid=os.getpid(),
                  pid_start=provenance.process_start(os.getpid()),
                  slurm_job_id=provenance.slurm_job_id(), started_time=time.time(),
                  cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return write_json_atomic(Path(str(record.output_dir)) / START_FILE, marker)


def seed_range(sweep_dir: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The min and max seeds of a ``seeds=auto`` sweep, from its ``sweep.json``; None for any
    other sweep (or none)."""
    seeds = (read_json(Path(sweep_dir) / SWEEP_FILE) or {}).get("seeds")
    try:
        return int(seeds["min_seeds"]), int(seeds["max_seeds"])
    except (TypeError, KeyError, ValueError):
        return None


def swept_axes(sweep_dir: str | os.PathLike[str]) -> list[str] | None:
    """The keys a sweep varies (two or more values), from its ``sweep.json``; None without one."""
    plan = read_json(Path(sweep_dir) / SWEEP_FILE)
    if plan is None or not isinstance(plan.get("axes"), list):
        return None
    return [str(key).lstrip("+~") for key, values in plan["axes"]
            if isinstance(values, list) and len(values) > 1]


