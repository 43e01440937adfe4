"""Runs -> one pandas DataFrame, one row per run, from three sources.

- ``result.json`` records under sweep folders (the reference source: written by every run);
- offline (or local) W&B run folders, read with W&B's own ``wandb leet inspect --summary --json``
  (``wandb.Api`` cannot read offline runs);
- a W&B project online, through ``wandb.Api`` and its filters.

Nothing is dropped silently: unreadable records, W&B folders that cannot be read, job folders
without a record (runs in progress, or killed), duplicate runs of a cell and mixed protocols are
all noted in :class:`Issues`, which the report prints with counts. Superseded duplicates stay in
the DataFrame (``superseded`` is True) so a reader can see what was set aside.

No torch here: the report side never imports the training side.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate import records
from ablate.report import per_example

METRICS = ("test_error", "val_error", "train_error", "train_loss", "val_loss", "test_loss")
# Prediction consistency under the moves of ``metrics.invariance``: ``consistency_<k>`` (the
# mean over 8 directions at a shift of k px) for every shift the runs' records hold, whichever
# ``callbacks.test_predictions.shifts`` they were run with, and the left-right flip. A shift a
# run did not measure (older records, or ``shifts=[]``) is NaN, which the report shows as "n/a".
CONSISTENCY_FLIP = "consistency_flip"
COLUMNS = (
    "source", "path", "sweep", "wandb_id", "cell_id", "name", *records.CELL_AXES, "lr", "seed",
    "status", *METRICS, CONSISTENCY_FLIP, "params", "epochs", "train_images", "wall_seconds",
    "started_at", "ended_at", "protocol", "protocol_spec", "cell", "error", "history",
    "superseded", "test_fingerprint", "correct", "code", "versions", "config_id",
)
# The package versions the report's Inputs name, per run (the record keeps every one).
KEY_PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "wandb")
RUNNING = "running"

# Kinds of issue, as the report's counts name them. INFO kinds are bookkeeping, not warnings.
UNREADABLE_RECORDS = "unreadable records (skipped)"
UNREADABLE_WANDB = "unreadable W&B runs (skipped)"
NOT_ABLATE = "W&B runs not made by ablate (no cell in their config; skipped)"
IN_PROGRESS = "runs in progress or killed (job folder, no record yet)"
DUPLICATES = "duplicate runs of a cell (older ones superseded)"
VARIANTS = "settings varied within a table cell (each value a row of its own)"
MIXED_DATASETS = "datasets mixed (one table each)"
MIXED_PROTOCOLS = "protocols mixed (one section each)"
WANDB_DISAGREES = "W&B runs that disagree with their record"
WANDB_MIRRORED = "W&B runs described by a record (the record is used)"
WANDB_IGNORED = "W&B run folders not read (--wandb-offline none)"
WITHOUT_METRICS = "finished runs without a finite test_error (counted as failed)"
INFO = (WANDB_MIRRORED, WANDB_IGNORED, VARIANTS)

# What makes two runs comparable (``records.PROTOCOL_KEYS``, ``records.protocol_of``): defined
# beside the cell, so that a W&B run can carry its protocol and be read back without its config.
PROTOCOL_KEYS = records.PROTOCOL_KEYS
protocol_of = records.protocol_of


# The keys in which the final stage differs from the selection stage, by design: it trains on
# every training image (no validation split, no validation loop). A run without a validation
# split is a final-stage run.
STAGE_KEYS = ("dataset.val_size", "trainer.limit_val_batches")
SELECTION, FINAL = "selection", "final"
# A downsampling mode's settings besides these name a variant of it: downsample=lppool at
# p = 4 is the mode "lppool p=4", beside pool and conv in every table and comparison.
NOT_VARIANT_SETTINGS = records.NOT_VARIANT_SETTINGS


@dataclass
class Issues:
    """What the loader set aside, guessed or merged; the report prints all of it with counts."""

    counts: Counter = field(default_factory=Counter)
    messages: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.messages.append((kind, message))

    def sorted_messages(self) -> list[tuple[str, str]]:
        return sorted(set(self.messages))


class WandbReadError(RuntimeError):
    """``wandb leet inspect`` could not read a W&B run folder."""


# ---------------------------------------------------------------- protocol

def protocol_id(protocol: Mapping[str, Any]) -> str:
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:7]


def stage_of(protocol: Mapping[str, Any]) -> str:
    """``final`` for runs trained without a validation split (the final stage), else
    ``selection``: runs whose validation error can choose an lr."""
    return FINAL if protocol.get("dataset.val_size") in (0, 0.0) else SELECTION


def study_protocol(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol without ``STAGE_KEYS``: equal for a selection stage and its final stage."""
    return {key: value for key, value in protocol.items() if key not in STAGE_KEYS}


def downsample_mode(choice: Any, node: Any) -> Any:
    """The downsampling mode a run used: its choice, with the choice's own settings (``p``)."""
    if not isinstance(node, Mapping) or choice is None:
        return choice
    settings = sorted((key, value) for key, value in node.items()
                      if key not in NOT_VARIANT_SETTINGS and not isinstance(value, Mapping | list))
    return " ".join([str(choice), *(f"{key}={records.canonical(value)}" for key, value in settings)])


def report_cell(cell: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cell as the report groups it: ``downsample.p=4`` folded into ``downsample``, so that
    every downsampling mode sits on one axis (and ``p`` left at its default is shown too)."""
    folded = {key: value for key, value in cell.items() if not key.startswith("downsample.")}
    node = (config or {}).get("downsample")
    if not isinstance(node, Mapping):  # a compact W&B config: the mode's settings are in the cell
        node = {key.removeprefix("downsample."): value for key, value in cell.items()
                if key.startswith("downsample.")}
    if "downsample" in cell:
        folded["downsample"] = downsample_mode(cell["downsample"], node)
    return folded


# ---------------------------------------------------------------- rows

class History(Sequence):
    """A run's per-epoch rows (``{"epoch": 0, "val_error": ...}``), held as one array per key.

    As a list of dicts, a 350-epoch history takes about 150 kB of memory; 24,000 records would
    not fit in 2 GiB. Columns take a tenth of that; rows are rebuilt when read, with the same
    keys and values as in the record (a key a row lacked is still absent).
    """

    __slots__ = ("_columns", "_length")

    def __init__(self, columns: dict[str, tuple[np.ndarray, np.ndarray | None]], length: int):
        self._columns = columns  # key -> (values, where present, or None when in every row)
        self._length = length

    @classmethod
    def of(cls, rows: Any) -> History | Any:
        """Columns for a list of rows of numbers; anything else is returned as it is."""
        if not isinstance(rows, list) or not set(map(type, rows)) <= {dict}:
            return rows
        keys = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
        every = set(map(len, rows)) <= {len(keys)}  # every row has every key
        columns = {}
        for key in keys:
            present = None if every else [key in row for row in rows]
            values = (list(map(operator.itemgetter(key), rows)) if every
                      else [row.get(key, 0) for row in rows])
            types = set(map(type, values))
            if not types <= {int, float}:
                return rows  # text, explicit nulls or booleans: rare, kept as they are
            try:
                array = np.array(values, dtype=np.int64 if types == {int} else np.float64)
            except OverflowError:
                return rows
            columns[key] = (array, None if present is None or all(present)
                            else np.array(present))
        return cls(columns, len(rows))

    def __len__(self) -> int:
        return self._length

    def series(self, key: str, index: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
        """``index`` and ``key`` over the rows that have both, as two arrays: a curve over
        thousands of runs without a dict per row."""
        if key not in self._columns or index not in self._columns:
            return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
        (indices, has_index), (values, has_value) = self._columns[index], self._columns[key]
        keep = np.ones(self._length, dtype=bool)
        for mask in (has_index, has_value):
            if mask is not None:
                keep &= mask
        return indices[keep], values[keep].astype(np.float64)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        columns = [(key, values.tolist(), None if present is None else present.tolist())
                   for key, (values, present) in self._columns.items()]
        for index in range(self._length):
            yield {key: values[index] for key, values, present in columns
                   if present is None or present[index]}

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return {key: values[index].item() for key, (values, present) in self._columns.items()
                if present is None or present[index]}

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return f"History({self._length} epochs: {', '.join(self._columns)})"

def series(history: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and finite values of ``key`` in a run's history, whichever form it was kept in."""
    if isinstance(history, History):
        epochs, values = history.series(key)
    else:
        pairs = [(entry["epoch"], _float(entry.get(key))) for entry in history or []
                 if isinstance(entry, Mapping) and entry.get("epoch") is not None]
        epochs = np.array([int(e) for e, v in pairs if v is not None], dtype=np.int64)
        values = np.array([v for _, v in pairs if v is not None], dtype=np.float64)
    keep = ~np.isnan(values) & np.isfinite(epochs)  # a float column of epochs may hold NaN
    return epochs[keep].astype(np.int64), values[keep]


def _display(path: Path) -> str:
    """A path as the report shows it: relative to the working directory where possible."""
    here = Path.cwd()
    try:
        return str(Path(os.path.abspath(path)).relative_to(here))  # no filesystem calls
    except ValueError:
        pass
    try:
        return str(path.resolve().relative_to(here.resolve()))  # through symbolic links
    except ValueError:
        return str(path)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _metric(value: Any) -> float:
    """A metric as a number the tables can use: NaN for missing, NaN and inf alike."""
    number = _float(value)
    return number if number is not None and math.isfinite(number) else math.nan


def consistency_fields(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``consistency_<k>`` for every ``shift_<k>`` of ``metrics.invariance`` and
    ``consistency_flip``; NaN where the run has none, so that means and tests over seeds skip
    it rather than count it as 0."""
    invariance = metrics.get("invariance")
    invariance = invariance if isinstance(invariance, Mapping) else {}

    def consistency(key: str) -> float:
        entry = invariance.get(key)
        value = _float(entry.get("consistency")) if isinstance(entry, Mapping) else None
        return math.nan if value is None else value

    shifts = [key for key in invariance if key.startswith("shift_") and key[6:].isdigit()]
    return {**{f"consistency_{int(key[6:])}": consistency(key) for key in shifts},
            CONSISTENCY_FLIP: consistency("flip")}


def shift_columns(frame: pd.DataFrame) -> dict[int, str]:
    """Shift in px -> its consistency column, in order: the shifts some run measured."""
    steps = [column.removeprefix("consistency_") for column in frame.columns]
    return {int(step): f"consistency_{step}" for step in sorted(
        (s for s in steps if s.isdigit()), key=int)}


def _row(*, source: str, path: str, sweep: str | None, cell: Mapping[str, Any], name: str | None,
         status: str, metrics: Mapping[str, Any], config: Mapping[str, Any] | None,
         **extra: Any) -> dict[str, Any]:
    protocol = protocol_of(config) if config else None
    if config and isinstance(config.get("protocol"), str):  # a compact W&B config carries it
        protocol = json.loads(config["protocol"])
    cell = report_cell(cell, config)
    model, downsample = cell.get("model"), cell.get("downsample")
    row = {column: None for column in COLUMNS}
    row.update(
        source=source, path=path, sweep=sweep, status=status,
        cell_id=records.cell_id(cell), cell=json.dumps(dict(cell), sort_keys=True, default=str),
        # every ablate run records the paper's name of its network; a foreign one gets its axes
        name=name or (f"{model}-{downsample}" if model and downsample else None),
        **{axis: cell.get(axis) for axis in records.CELL_AXES},
        lr=_float(cell.get("lr")), seed=cell.get("seed"),
        protocol=protocol_id(protocol) if protocol is not None else None,
        protocol_spec=json.dumps(protocol, sort_keys=True) if protocol is not None else None,
        superseded=False,
    )
    row.update({key: _metric(metrics.get(key)) for key in METRICS})
    if status == "finished" and math.isnan(row["test_error"]):
        # NaN or inf (a run whose test loop broke): no number to average, so it counts as
        # failed in every count and table alike, and is named in the warnings (load_runs)
        row.update(status="failed", error=f"{WITHOUT_METRICS}: test_error is "
                                          f"{metrics.get('test_error', 'missing')}")
    row.update(consistency_fields(metrics))
    row.update({key: value for key, value in extra.items() if key in row and value is not None})
    return row


def _sweep_of(path: Path, sweep_name: str | None) -> str:
    """``<sweep_name>/<time dir>``, the same group name W&B gets (ablate.tracking)."""
    job_dir = path.parent
    sweep_dir = job_dir.parent if (job_dir.parent / "multirun.yaml").exists() else job_dir
    return f"{sweep_name or sweep_dir.parent.name}/{sweep_dir.name}"


def row_from_record(record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    config = record.get("config") or {}
    wandb_info = record.get("wandb") or {}
    return _row(
        source="record", path=_display(path),
        sweep=wandb_info.get("group") or _sweep_of(path, config.get("sweep_name")),
        cell=record["cell"], name=record.get("name"), status=record["status"],
        metrics=record.get("metrics") or {}, config=config,
        wandb_id=wandb_info.get("id"), cell_id=record.get("cell_id"),
        config_id=record.get("config_id"),
        params=record.get("params"), epochs=record.get("epochs"),
        train_images=(record.get("images") or {}).get("train"),
        wall_seconds=record.get("wall_seconds"), started_at=record.get("started_at"),
        ended_at=record.get("ended_at"), error=record.get("error"),
        history=History.of(record.get("history")), code=code_of(record),
        versions=versions_of(record.get("versions")),
    )


def code_of(record: Mapping[str, Any]) -> str | None:
    """The commit a run's code came from, short, with ``+dirty`` where its source was edited."""
    commit = record.get("git_commit")
    if not commit:
        return None
    return str(commit)[:7] + ("+dirty" if record.get("git_dirty") else "")


def versions_of(versions: Any) -> str | None:
    """``torch 2.13.0, pytorch-lightning 2.6.6, ...`` for ``KEY_PACKAGES``."""
    if not isinstance(versions, Mapping):
        return None
    return ", ".join(f"{name} {versions[name]}" for name in KEY_PACKAGES
                     if versions.get(name)) or None


def _unwrap_config(config: Any) -> dict[str, Any]:
    """W&B config as plain values (some tools keep W&B's ``{"value": ...}`` wrappers)."""
    if not isinstance(config, Mapping):
        return {}
    plain = {}
    for key, value in config.items():
        if str(key).startswith("_wandb"):
            continue
        if isinstance(value, Mapping) and set(value) <= {"value", "desc"} and "value" in value:
            value = value["value"]
        plain[str(key)] = value
    return plain


_STATE_TO_STATUS = {"finished": "finished", "failed": "failed", "crashed": "failed",
                    "killed": "failed", "running": RUNNING, "pending": RUNNING}


def row_from_wandb(meta: Mapping[str, Any], *, source: str, path: str,
                   issues: Issues) -> dict[str, Any] | None:
    """One run as W&B shows it: ``meta`` has run_id, state, config, summary, (group).

    ``meta`` has the shape of ``wandb leet inspect --summary --json``; :func:`load_wandb_api`
    builds the same shape from ``wandb.Api`` run objects, so both go through this one function.
    """
    config = _unwrap_config(meta.get("config"))
    summary = meta.get("summary") if isinstance(meta.get("summary"), Mapping) else {}
    cell = config.get("cell")
    if not isinstance(cell, Mapping):
        issues.add(NOT_ABLATE, path)
        return None
    status = summary.get("status")
    state = str(meta.get("state") or "").lower()
    if state in ("running", "pending") and status is None:
        status = RUNNING
    elif status not in records.STATUSES:
        status = _STATE_TO_STATUS.get(state, "failed")
    if status == RUNNING:
        issues.add(IN_PROGRESS, path)
    run_id = meta.get("run_id") or meta.get("id")
    sweep = meta.get("group") or config.get("sweep") or None
    return _row(
        source=source, path=path, sweep=sweep, cell=cell, name=config.get("name"), status=status,
        metrics=summary, config=config, wandb_id=run_id, cell_id=config.get("cell_id"),
        params=summary.get("params", config.get("params")), epochs=summary.get("epochs"),
        wall_seconds=summary.get("wall_seconds"),
        error=summary.get("error"),
    )


# ---------------------------------------------------------------- discovery

@dataclass
class Found:
    records: list[Path] = field(default_factory=list)
    wandb_runs: list[Path] = field(default_factory=list)
    job_dirs: list[Path] = field(default_factory=list)


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
    found.records = sorted(set(found.records))
    found.wandb_runs = sorted(set(found.wandb_runs))
    found.job_dirs = sorted(set(found.job_dirs))
    return found


# ---------------------------------------------------------------- loaders

def load_records(paths: Sequence[Path], issues: Issues) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, row)`` for every readable record; the others are counted as unreadable."""
    loaded = []
    for path in paths:
        try:
            record = records.read_record(path)
            if not isinstance(record.get("cell"), Mapping):
                raise records.RecordError(f"{path}: 'cell' is not an object")
            row = row_from_record(record, path)
            row.update(per_example.row_fields(record, path, issues, row["path"]))
            loaded.append((path, row))
        except (records.RecordError, KeyError, TypeError, AttributeError, ValueError) as error:
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            text = text.removeprefix(f"{path}: ")  # RecordError names the path already
            issues.add(UNREADABLE_RECORDS, f"{_display(path)}: {text}")
    return loaded


def inspect_wandb_run(run_dir: Path, timeout: float = 120) -> dict[str, Any]:
    """``wandb leet inspect --summary --json RUN_DIR``: W&B's own reader of offline runs."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json",
               str(run_dir)]
    # offline: the reader must never try to reach a server (nor report errors to one).
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false",
           "WANDB_SILENT": "true"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WandbReadError(f"{run_dir}: {error}") from error
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise WandbReadError(f"wandb leet inspect failed ({message})")
    try:
        meta = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise WandbReadError(f"wandb leet inspect printed no JSON ({error})") from error
    if not isinstance(meta, dict):
        raise WandbReadError("wandb leet inspect printed no JSON object")
    return meta


def load_wandb_offline(run_dirs: Sequence[Path], issues: Issues,
                       workers: int = 4) -> list[dict[str, Any]]:
    """Rows for local W&B run folders, read in parallel (one ``wandb leet`` process each)."""
    def read(run_dir: Path) -> tuple[Path, dict[str, Any] | Exception]:
        try:
            return run_dir, inspect_wandb_run(run_dir)
        except WandbReadError as error:
            return run_dir, error

    rows = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(run_dirs) or 1))) as pool:
        for run_dir, meta in pool.map(read, run_dirs):
            if isinstance(meta, Exception):
                issues.add(UNREADABLE_WANDB, f"{_display(run_dir)}: {meta}")
                continue
            row = row_from_wandb(meta, source="wandb-offline", path=_display(run_dir),
                                 issues=issues)
            if row is not None:
                rows.append(row)
    return rows


def load_wandb_api(project: str, filters: Mapping[str, Any] | None, issues: Issues,
                   api: Any = None) -> list[dict[str, Any]]:
    """Rows for the runs of an online W&B project (``entity/project``), MongoDB-style filters.

    Example filters: ``{"group": "table3/2026-12-01_10-00-00"}``, ``{"tags": "dataset=cifar10"}``,
    ``{"state": "finished"}``. Needs a W&B login.
    """
    import wandb

    api = api or wandb.Api(timeout=60)
    rows = []
    for run in api.runs(project, filters=dict(filters or {}), order="+created_at"):
        meta = {
            "run_id": run.id, "name": run.name, "state": run.state, "group": run.group,
            "config": dict(run.config), "summary": dict(run.summary_metrics or {}),
            "tags": list(run.tags or []),
        }
        row = row_from_wandb(meta, source="wandb-api", path=f"{project}/{run.id}", issues=issues)
        if row is not None:
            rows.append(row)
    return rows


def _in_progress_row(job_dir: Path, issues: Issues) -> dict[str, Any] | None:
    """A Hydra job folder with no record: still running (or killed before it could write one)."""
    from omegaconf import OmegaConf

    try:
        hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
        choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
        config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    except Exception as error:  # noqa: BLE001 - a half-written folder is what we expect here
        issues.add(IN_PROGRESS, f"{_display(job_dir)} (unreadable: {error})")
        return None
    for key in ("logger", "callbacks"):  # ${hydra:...} only resolves inside the job
        config.pop(key, None)
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001
        resolved = None
    cell = {key: choices.get(key) for key in records.CELL_AXES}
    cell.update(seed=config.get("seed"), lr=config.get("lr"))
    issues.add(IN_PROGRESS, _display(job_dir))
    name = ((resolved or {}).get("network") or {}).get("name")
    return _row(source="job folder", path=_display(job_dir),
                sweep=_sweep_of(job_dir / records.RESULT_FILE, config.get("sweep_name")),
                cell=cell, name=name, status=RUNNING, metrics={}, config=resolved)


# ---------------------------------------------------------------- all together

# A table cell: the runs of one row, lr and seed. Two runs here are reruns of each other,
# unless they were made with different configs (``_split_variants``).
TABLE_CELL = ["protocol", "dataset", "augmentation", "name", "lr", "seed"]
# Cell keys that never tell two settings apart: the replicates, and how a run was launched,
# shown or logged.
NOT_SETTINGS = ("seed", "lr", *records.CONTROL_KEYS, *records.PRESENTATION_KEYS,
                *records.STORAGE_KEYS)


def _setting_values(path: str, cell: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A run's ``keys`` as its cell holds them; those its cell lacks from the config of its
    record (read once, and only then), a config group's choice by its name; None where that
    is unknown."""
    config: Mapping[str, Any] = {}
    if any(key not in cell for key in keys):
        try:
            config = records.read_record(path).get("config") or {}
        except records.RecordError:
            pass

    def from_config(key: str) -> Any:
        value = records.select_dotted(config, key)
        return value.get("name") if isinstance(value, Mapping) else value

    return {key: cell[key] if key in cell else from_config(key) for key in keys}


def _covered(key: str) -> bool:
    """Whether a cell key is part of the protocol (``trainer.max_epochs``, ``init``, a key of
    ``optimizer``): runs that differ there are in different protocols already."""
    return any(key == p or key.startswith(p + ".") or p.startswith(key + ".")
               for p in PROTOCOL_KEYS)


def _matching(frame: pd.DataFrame, columns: Sequence[str], values: Sequence[Any]) -> pd.Series:
    """Rows whose ``columns`` equal ``values``, a missing value matching a missing value (as
    ``groupby(dropna=False)`` groups them)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in zip(columns, values, strict=True):
        mask &= frame[column].isna() if pd.isna(value) else frame[column] == value
    return mask


def _split_variants(frame: pd.DataFrame, issues: Issues) -> None:
    """Runs of one table cell made with different configs are not reruns but the values of a
    setting no table has an axis for (``augmentation.transform.max_shift=1,5``): each value
    gets a row of its own, its name followed by the settings that vary, so that nothing is
    superseded or averaged across settings. The comparisons compare along the setting.
    A run still in progress keeps the plain name: its job folder holds no typed cell yet."""
    done = frame[(frame["status"] != RUNNING) & frame["config_id"].notna()]
    done = done[done.duplicated(TABLE_CELL, keep=False)]
    configs = done.groupby(TABLE_CELL, dropna=False)["config_id"].nunique()
    clashing = configs[configs > 1].index
    names = sorted({tuple(key[:4]) for key in clashing}, key=str)
    for protocol, dataset, augmentation, name in names:
        rows = frame[_matching(frame, TABLE_CELL[:4], (protocol, dataset, augmentation, name))
                     & (frame["status"] != RUNNING) & frame["cell"].notna()]
        cells = {index: json.loads(cell) for index, cell in rows["cell"].items()}
        keys = sorted(key for key in {key for cell in cells.values() for key in cell}
                      if key not in (*NOT_SETTINGS, *records.CELL_AXES) and not _covered(key))
        values = {index: _setting_values(rows.at[index, "path"], cell, keys)
                  for index, cell in cells.items()}
        # a key some run has no known value for (a choice its config does not name) cannot
        # tell runs apart; any other key whose values differ names the rows
        varying = [key for key in keys
                   if all(v[key] is not None for v in values.values())
                   and len({json.dumps(v[key], sort_keys=True, default=str)
                            for v in values.values()}) > 1]
        if not varying:  # same cell, other config (a default changed between them): reruns
            continue
        for index, setting in values.items():
            shown = ", ".join(f"{key}={records.canonical(setting[key])}" for key in varying)
            frame.at[index, "name"] = f"{name} ({shown})"
        issues.add(VARIANTS, f"{name} ({dataset}, augmentation {augmentation}, protocol "
                             f"{protocol}): {', '.join(varying)}")


def _mark_duplicates(frame: pd.DataFrame, issues: Issues) -> None:
    """Several finished/failed runs of one table cell: the newest counts, the rest are kept but
    marked ``superseded`` (so a seed is never counted twice)."""
    key = TABLE_CELL
    done = frame[frame["status"] != RUNNING]
    done = done[done.duplicated(key, keep=False)]  # most cells have one run: skip those
    for _, group in done.groupby(key, dropna=False, sort=True):
        if len(group) < 2:
            continue
        order = group.sort_values(["ended_at", "path"], na_position="first")
        keep = order.index[-1]
        for index in order.index[:-1]:
            frame.loc[index, "superseded"] = True
            issues.add(DUPLICATES,
                       f"{frame.loc[index, 'path']} superseded by {frame.loc[keep, 'path']}")


def load_runs(
    paths: Sequence[str | os.PathLike[str]] = ("sweeps",),
    *,
    wandb_offline: str = "unmatched",
    wandb_project: str | None = None,
    wandb_filters: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, Issues]:
    """Every run found under ``paths`` (and in ``wandb_project``) as one DataFrame.

    ``wandb_offline``: ``unmatched`` reads only W&B run folders that no record describes (a
    record and its W&B run are the same run: the record is the reference); ``all`` reads every
    folder and checks it against its record; ``none`` ignores W&B folders.
    """
    if wandb_offline not in ("unmatched", "all", "none"):
        raise ValueError(f"wandb_offline={wandb_offline!r}; use unmatched, all or none")
    issues = Issues()
    found = discover(paths)
    loaded = load_records(found.records, issues)
    rows = [row for _, row in loaded]

    # A W&B folder inside a run's folder is that run's own: its record already says it all.
    record_dirs = {path.parent.resolve() for path, _ in loaded} if found.wandb_runs else set()
    wandb_dirs = []
    for run_dir in found.wandb_runs:
        mirrored = any(parent in record_dirs for parent in run_dir.resolve().parents)
        if wandb_offline == "none":
            issues.add(WANDB_IGNORED, _display(run_dir))
        elif wandb_offline == "all" or not mirrored:
            wandb_dirs.append(run_dir)
        else:
            issues.add(WANDB_MIRRORED, _display(run_dir))
    wandb_rows = load_wandb_offline(wandb_dirs, issues) if wandb_dirs else []
    # Elsewhere, a record and a W&B run are the same run when both the W&B id and the cell
    # agree (a resumed run shares its W&B id with the run it continued, not its cell).
    by_id = {(row["wandb_id"], row["cell_id"]): row for row in rows if row["wandb_id"]}
    for row in wandb_rows:
        twin = by_id.get((row["wandb_id"], row["cell_id"]))
        if twin is None:
            rows.append(row)
            continue
        issues.add(WANDB_MIRRORED, row["path"])
        ours, theirs = twin["test_error"], row["test_error"]
        both_missing = pd.isna(ours) and pd.isna(theirs)  # NaN != NaN, yet they agree
        if twin["status"] == row["status"] and ours != theirs and not both_missing:
            issues.add(WANDB_DISAGREES,
                       f"{row['path']}: test_error {row['test_error']} vs {twin['test_error']}")

    if wandb_project:
        rows.extend(load_wandb_api(wandb_project, wandb_filters, issues))

    finished_dirs = ({Path(p).parent.resolve() for p in found.records} if found.job_dirs
                     else set())
    for job_dir in found.job_dirs:
        if job_dir.resolve() not in finished_dirs:
            row = _in_progress_row(job_dir, issues)
            if row is not None:
                rows.append(row)

    for row in rows:
        if str(row["error"] or "").startswith(WITHOUT_METRICS):
            issues.add(WITHOUT_METRICS, f"{row['path']}: {row['error'].split(': ', 1)[1]}")
    shifts = {key for row in rows for key in row if key.startswith("consistency_")}
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *sorted(shifts - set(COLUMNS))])
    frame = frame.sort_values(["sweep", "path"], na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)
    _split_variants(frame, issues)
    _mark_duplicates(frame, issues)
    _note_mixtures(frame, issues)
    return frame, issues


def _note_mixtures(frame: pd.DataFrame, issues: Issues) -> None:
    current = frame[~frame["superseded"].astype(bool)]
    datasets = sorted(str(d) for d in current["dataset"].dropna().unique())
    if len(datasets) > 1:
        counts = current["dataset"].value_counts()
        issues.add(MIXED_DATASETS,
                   ", ".join(f"{d} ({counts[d]})" for d in datasets))
    # a selection stage and its final stage differ by design (STAGE_KEYS): one study, no warning
    studies = {json.dumps(study_protocol(json.loads(spec)), sort_keys=True)
               for spec in current["protocol_spec"].dropna().unique()}
    protocols = sorted(str(p) for p in current["protocol"].dropna().unique())
    if len(studies) > 1:
        counts = current["protocol"].value_counts()
        issues.add(MIXED_PROTOCOLS,
                   ", ".join(f"{p} ({counts[p]})" for p in protocols))
