"""Runs -> one pandas DataFrame, one row per run: records and job folders without one
(``ablate.rows``, the reference source), W&B run folders and a W&B project online
(``report.wandb_runs``).

Nothing is dropped silently: what was set aside, guessed or merged is noted in
:class:`~ablate.report.issues.Issues`, and superseded duplicates stay in the DataFrame
(``superseded`` is True). The cell and the protocol are JSON text in the DataFrame (hashable,
for grouping): read them through :func:`parsed`, which parses each distinct text once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ablate import identity, records, rows
from ablate.report import issues as kinds
from ablate.report import per_example
from ablate.report.history import History
from ablate.report.issues import Issues
from ablate.report.wandb_runs import load_wandb_api, load_wandb_offline
from ablate.rows import COLUMNS, TABLE_CELL, WITHOUT_METRICS
from ablate.status import Status


@functools.lru_cache(maxsize=1 << 17)  # the runs of many reports in one process: bounded
def parsed(text: str) -> Mapping[str, Any]:
    """A ``cell`` or ``protocol_spec`` of the DataFrame as a mapping, parsed once per distinct
    text (the same object for every caller: read it, never change it)."""
    return json.loads(text)


def shift_columns(frame: pd.DataFrame) -> dict[int, str]:
    """Shift in px -> its consistency column, in order: the shifts some run measured."""
    steps = [column.removeprefix("consistency_") for column in frame.columns]
    return {int(step): f"consistency_{step}" for step in sorted(
        (s for s in steps if s.isdigit()), key=int)}


def load_records(paths: Sequence[Path], issues: Issues) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, row)`` for every readable record; the others are counted as unreadable."""
    def unreadable(path: Path, error: Exception) -> None:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        text = text.removeprefix(f"{path}: ")  # RecordError names the path already
        issues.add(kinds.UNREADABLE_RECORDS, f"{rows.display(path)}: {text}")

    loaded = rows.read_records(paths, unreadable)
    for path, record, row in loaded:
        row.update(history=History.of(row["history"]),
                   **per_example.row_fields(record, path, issues, row["path"]))
    return [(path, row) for path, _, row in loaded]


# Cell keys that never tell two settings apart: the replicates, and how a run was launched,
# shown or logged.
NOT_SETTINGS = ("seed", "lr", *identity.IGNORED_KEYS)


def _setting_values(path: str, cell: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A run's ``keys`` from its cell, else from its record's config (read only then; a config
    group's choice by its name); None where that is unknown."""
    config: Mapping[str, Any] = {}
    if any(key not in cell for key in keys):
        with contextlib.suppress(records.RecordError):
            config = records.load(path).config or {}

    def from_config(key: str) -> Any:
        value = identity.select_dotted(config, key)
        return value.get("name") if isinstance(value, Mapping) else value

    return {key: cell[key] if key in cell else from_config(key) for key in keys}


def related(protocol_key: str, key: str) -> bool:
    """Whether setting ``key`` changes ``protocol_key`` (``optimizer.momentum`` changes
    ``optimizer``; ``dataset`` changes ``dataset.image_size``)."""
    return (protocol_key == key or protocol_key.startswith(key + ".")
            or key.startswith(protocol_key + "."))


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
    done = frame[(frame["status"] != Status.RUNNING) & frame["config_id"].notna()]
    done = done[done.duplicated(TABLE_CELL, keep=False)]
    configs = done.groupby(list(TABLE_CELL), dropna=False)["config_id"].nunique()
    clashing = configs[configs > 1].index
    names = sorted({tuple(key[:4]) for key in clashing}, key=str)
    for protocol, dataset, augmentation, name in names:
        mine = frame[_matching(frame, TABLE_CELL[:4], (protocol, dataset, augmentation, name))
                     & (frame["status"] != Status.RUNNING) & frame["cell"].notna()]
        cells = {index: parsed(cell) for index, cell in mine["cell"].items()}
        # a key of the protocol (``init``, ``trainer.max_epochs``) splits protocols already
        keys = sorted(key for key in {key for cell in cells.values() for key in cell}
                      if key not in (*NOT_SETTINGS, *identity.CELL_AXES)
                      and not any(related(p, key) for p in identity.PROTOCOL_KEYS))
        values = {index: _setting_values(mine.at[index, "path"], cell, keys)
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
            shown = ", ".join(f"{key}={identity.canonical(setting[key])}" for key in varying)
            frame.at[index, "name"] = f"{name} ({shown})"
        issues.add(kinds.VARIANTS, f"{name} ({dataset}, augmentation {augmentation}, protocol "
                             f"{protocol}): {', '.join(varying)}")


def _split_sources(frame: pd.DataFrame, issues: Issues) -> None:
    """Runs of one dataset read from shards of different sources saw different images: they
    are not reruns of each other, so each source becomes a dataset of its own (its tables
    named by the source's hash). A run that records no source (older records, datasets
    without shards) keeps the plain name: it cannot be told apart."""
    known = frame[frame["data_fingerprint"].notna()]
    for dataset, runs in known.groupby("dataset"):
        sources = sorted(runs["data_fingerprint"].unique())
        if len(sources) < 2:
            continue
        for index, source in runs["data_fingerprint"].items():
            frame.at[index, "dataset"] = f"{dataset} (source {source[:12]})"
        issues.add(kinds.DATA_SOURCES, f"{dataset}: {', '.join(s[:12] for s in sources)}")


def load_runs(paths: Sequence[str | os.PathLike[str]] = ("sweeps",), *,
              wandb_offline: str = "unmatched", wandb_project: str | None = None,
              wandb_filters: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, Issues]:
    """Every run found under ``paths`` (and in ``wandb_project``) as one DataFrame.
    ``wandb_offline``: ``unmatched`` reads only W&B run folders no record describes (the record
    is the reference), ``all`` reads and checks every one, ``none`` ignores them."""
    if wandb_offline not in ("unmatched", "all", "none"):
        raise ValueError(f"wandb_offline={wandb_offline!r}; use unmatched, all or none")
    issues = Issues()
    found = rows.discover(paths)
    loaded = load_records(found.records, issues)
    runs = [row for _, row in loaded]

    # A W&B folder inside a run's folder is that run's own: its record already says it all.
    record_dirs = {path.parent.resolve() for path, _ in loaded} if found.wandb_runs else set()
    wandb_dirs = []
    for run_dir in found.wandb_runs:
        mirrored = any(parent in record_dirs for parent in run_dir.resolve().parents)
        if wandb_offline == "none":
            issues.add(kinds.WANDB_IGNORED, rows.display(run_dir))
        elif wandb_offline == "all" or not mirrored:
            wandb_dirs.append(run_dir)
        else:
            issues.add(kinds.WANDB_MIRRORED, rows.display(run_dir))
    wandb_rows = load_wandb_offline(wandb_dirs, issues) if wandb_dirs else []
    # Elsewhere, a record and a W&B run are the same run when both the W&B id and the cell
    # agree (a resumed run shares its W&B id with the run it continued, not its cell).
    by_id = {(row["wandb_id"], row["cell_id"]): row for row in runs if row["wandb_id"]}
    for row in wandb_rows:
        twin = by_id.get((row["wandb_id"], row["cell_id"]))
        if twin is None:
            runs.append(row)
            continue
        issues.add(kinds.WANDB_MIRRORED, row["path"])
        ours, theirs = twin["test_error"], row["test_error"]
        both_missing = pd.isna(ours) and pd.isna(theirs)  # NaN != NaN, yet they agree
        if twin["status"] == row["status"] and ours != theirs and not both_missing:
            issues.add(kinds.WANDB_DISAGREES,
                       f"{row['path']}: test_error {row['test_error']} vs {twin['test_error']}")

    if wandb_project:
        runs.extend(load_wandb_api(wandb_project, wandb_filters, issues))
    # job folders without a record: named among the runs in progress or, where the process
    # is gone, among the killed ones
    in_progress = rows.in_progress_rows(found.in_progress, lambda job_dir, error: issues.add(
        kinds.IN_PROGRESS, f"{rows.display(job_dir)} (unreadable: {error})"))
    for row in in_progress:
        issues.add(kinds.KILLED if row["status"] == Status.INTERRUPTED else kinds.IN_PROGRESS,
                   row["path"])
    runs.extend(in_progress)

    for row in runs:
        if str(row["error"] or "").startswith(WITHOUT_METRICS):
            issues.add(WITHOUT_METRICS, f"{row['path']}: {row['error'].split(': ', 1)[1]}")
    shifts = {key for row in runs for key in row if key.startswith("consistency_")}
    frame = pd.DataFrame(runs, columns=[*COLUMNS, *sorted(shifts - set(COLUMNS), key=len)])
    frame = frame.sort_values(["sweep", "path"], na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)
    _split_sources(frame, issues)
    _split_variants(frame, issues)
    # Several finished/failed runs of one table cell: the newest counts, the rest are kept but
    # marked ``superseded`` (``rows.superseded``, the rule the final stage applies too).
    columns = [*TABLE_CELL, "status", "ended_at", "path"]
    for old, new in rows.superseded(frame[columns].to_dict("records")).items():
        frame.loc[old, "superseded"] = True
        issues.add(kinds.DUPLICATES,
                   f"{frame.loc[old, 'path']} superseded by {frame.loc[new, 'path']}")
    current = frame[~frame["superseded"].astype(bool)]
    # a selection stage and its final stage differ by design (STAGE_KEYS): one study, no warning
    for kind, column, by in ((kinds.MIXED_DATASETS, "dataset", "dataset"),
                             (kinds.MIXED_PROTOCOLS, "protocol", "study")):
        if current[by].nunique() > 1:
            counts = current[column].value_counts()
            issues.add(kind, ", ".join(f"{v} ({counts[v]})" for v in sorted(counts.index, key=str)))
    return frame, issues
