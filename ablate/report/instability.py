"""How often training went wrong, per model and lr: finished, diverged, failed, stalled at chance.

A run *stalled at chance* finished with a final training error within ``stalled_margin``
(``claims.yaml``) of chance, ``1 - 1/num_classes``: it never left the starting plateau. It still
counts as finished, but stalling is the instability reimplementations of the paper report, so
the reader sees how often it happened.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from typing import Any

import pandas as pd
import yaml

from ablate.report.history import series
from ablate.status import Status

COLUMNS = ["name", "lr", "runs", Status.FINISHED, "stalled", Status.DIVERGED, Status.FAILED,
           Status.RUNNING]


@functools.cache
def chance_error(dataset: str) -> float | None:
    """``1 - 1/num_classes``, the classes read from the dataset's config file
    (``conf/dataset/<name>.yaml``); None where that is unknown."""
    try:
        text = importlib.resources.files("ablate.conf").joinpath(
            "dataset", f"{dataset}.yaml").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return None
    classes = (yaml.safe_load(text) or {}).get("num_classes")
    return 1 - 1 / classes if isinstance(classes, int) and classes else None


def stalled(run: pd.Series, margin: float) -> bool:
    """The run's last training error (its metrics, else the last finite one in its history)
    within ``margin`` of chance."""
    chance, error = chance_error(str(run["dataset"])), run.get("train_error")
    if error is None or (isinstance(error, float) and math.isnan(error)):
        _, values = series(run.get("history"), "train_error")
        error = values[-1] if len(values) else None
    return chance is not None and error is not None and float(error) >= chance - margin


def counts(runs: pd.DataFrame, margin: float) -> pd.DataFrame:
    """One row per (model name, lr) with runs, in name then lr order."""
    rows: list[dict[str, Any]] = []
    for (name, lr), cell in runs.groupby(["name", "lr"], sort=True, dropna=True):
        finished = cell[cell["status"] == Status.FINISHED]
        rows.append({
            "name": name, "lr": float(lr), "runs": len(cell), Status.FINISHED: len(finished),
            "stalled": sum(stalled(run, margin) for _, run in finished.iterrows()),
            **{s: int((cell["status"] == s).sum()) for s in COLUMNS[-3:]},
        })
    return pd.DataFrame(rows, columns=COLUMNS)
