"""W&B runs as rows: offline (or local) run folders, read with W&B's own
``wandb leet inspect --summary --json`` (``wandb.Api`` cannot read offline runs), and the runs
of a W&B project online, through ``wandb.Api`` and its filters. Both go through
:func:`row_from_wandb`, into the rows ``ablate.rows`` makes of records.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ablate.report.issues import IN_PROGRESS, NOT_ABLATE, UNREADABLE_WANDB, Issues
from ablate.rows import display, make_row
from ablate.status import ENDED, Status


class WandbReadError(RuntimeError):
    """``wandb leet inspect`` could not read a W&B run folder."""


# W&B's run states (its words, not ours) as the status of a run that did not log its own
_STATE_TO_STATUS = {"finished": Status.FINISHED, "failed": Status.FAILED, "crashed": Status.FAILED,
                    "killed": Status.FAILED, "running": Status.RUNNING, "pending": Status.RUNNING}


def row_from_wandb(meta: Mapping[str, Any], *, source: str, path: str,
                   issues: Issues) -> dict[str, Any] | None:
    """One run as W&B shows it: ``meta`` has the shape of ``wandb leet inspect --summary
    --json`` (run_id, state, config, summary, group), which :func:`load_wandb_api` builds too."""
    # plain values: some tools keep W&B's {"value": ...} wrappers
    raw = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    config = {str(key): value["value"] if isinstance(value, Mapping) and "value" in value
              and set(value) <= {"value", "desc"} else value
              for key, value in raw.items() if not str(key).startswith("_wandb")}
    summary = meta.get("summary") if isinstance(meta.get("summary"), Mapping) else {}
    cell = config.get("cell")
    if not isinstance(cell, Mapping):
        issues.add(NOT_ABLATE, path)
        return None
    status = summary.get("status")
    state = str(meta.get("state") or "").lower()
    if status not in ENDED:
        status = _STATE_TO_STATUS.get(state, Status.FAILED)
    if status == Status.RUNNING:
        issues.add(IN_PROGRESS, path)
    run_id = meta.get("run_id") or meta.get("id")
    sweep = meta.get("group") or config.get("sweep") or None
    return make_row(
        source=source, path=path, sweep=sweep, cell=cell, name=config.get("name"), status=status,
        metrics=summary, config=config, wandb_id=run_id, cell_id=config.get("cell_id"),
        params=summary.get("params", config.get("params")), epochs=summary.get("epochs"),
        wall_seconds=summary.get("wall_seconds"), error=summary.get("error"),
        data_fingerprint=summary.get("data_fingerprint"))


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
    with contextlib.suppress(json.JSONDecodeError):
        if isinstance(meta := json.loads(done.stdout), dict):
            return meta
    raise WandbReadError("wandb leet inspect printed no JSON object")


def load_wandb_offline(run_dirs: Sequence[Path], issues: Issues) -> list[dict[str, Any]]:
    """Rows for local W&B run folders, read four at a time (one ``wandb leet`` process each)."""
    def read(run_dir: Path) -> dict[str, Any] | Exception:
        try:
            return inspect_wandb_run(run_dir)
        except WandbReadError as error:
            return error

    rows = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for run_dir, meta in zip(run_dirs, pool.map(read, run_dirs), strict=True):
            if isinstance(meta, Exception):
                issues.add(UNREADABLE_WANDB, f"{display(run_dir)}: {meta}")
                continue
            row = row_from_wandb(meta, source="wandb-offline", path=display(run_dir),
                                 issues=issues)
            if row is not None:
                rows.append(row)
    return rows


def load_wandb_api(project: str, filters: Mapping[str, Any] | None,
                   issues: Issues) -> list[dict[str, Any]]:
    """Rows for the runs of an online W&B project (``entity/project``; needs a login), with
    MongoDB-style filters such as ``{"group": "table3/2026-12-01_10-00-00"}``."""
    import wandb

    rows = []
    for run in wandb.Api(timeout=60).runs(project, filters=dict(filters or {}),
                                          order="+created_at"):
        meta = {"run_id": run.id, "state": run.state, "group": run.group,
                "config": dict(run.config), "summary": dict(run.summary_metrics or {})}
        row = row_from_wandb(meta, source="wandb-api", path=f"{project}/{run.id}", issues=issues)
        if row is not None:
            rows.append(row)
    return rows
