"""Numbers behind the tables and figures: per-lr statistics and the per-model lr choice.

A *group* is one (protocol, dataset, augmentation): the runs that one Table 3 layout compares.
Within a group, each model's learning rate is chosen on mean validation error over its seeds,
as the paper did; its test error is then the mean over the seeds at that lr, with the sample
std and the half-width of the 95 % t interval (``evidence.summarize``).
A learning rate at which any run failed or diverged is only chosen when no lr is free of
failures (the table still counts every failed and diverged run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ablate.report import evidence, reference
from ablate.report.load import RUNNING

GROUP = ["protocol", "dataset", "augmentation"]
STAT_COLUMNS = ["name", "lr", "n", "val_mean", "test_mean", "test_std", "test_ci", "failed",
                "diverged", "running"]


def current(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that count: superseded duplicates left out."""
    return frame[~frame["superseded"].astype(bool)]


def groups(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Every (protocol, dataset, augmentation) with runs, in a fixed order."""
    keys = current(frame)[GROUP].dropna().drop_duplicates()
    order = {"none": 0}
    return sorted((tuple(str(v) for v in row) for row in keys.itertuples(index=False)),
                  key=lambda k: (k[0], k[1], order.get(k[2], 1), k[2]))


def runs_of(frame: pd.DataFrame, protocol: str, dataset: str, augmentation: str) -> pd.DataFrame:
    runs = current(frame)
    return runs[(runs["protocol"] == protocol) & (runs["dataset"] == dataset)
                & (runs["augmentation"] == augmentation)]


def lr_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model name, lr): finished seeds, mean val/test error, failure counts."""
    rows = []
    for (name, lr), cell in runs.groupby(["name", "lr"], sort=True, dropna=True):
        done = cell[(cell["status"] == "finished") & cell["test_error"].notna()]
        n = len(done)
        rows.append({
            "name": name, "lr": float(lr), "n": n,
            "val_mean": float(done["val_error"].mean()) if n else math.nan,
            "test_mean": float(done["test_error"].mean()) if n else math.nan,
            "test_std": float(done["test_error"].std(ddof=1)) if n > 1 else math.nan,
            "test_ci": evidence.summarize(done["test_error"]).half_width,
            "failed": int(((cell["status"] == "failed")
                           | ((cell["status"] == "finished") & cell["test_error"].isna())).sum()),
            "diverged": int((cell["status"] == "diverged").sum()),
            "running": int((cell["status"] == RUNNING).sum()),
        })
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def choose_lr(stats: pd.DataFrame) -> pd.Series | None:
    """The row of ``stats`` (one model's lrs) with the lowest mean validation error."""
    finished = stats[stats["n"] > 0]
    clean = finished[(finished["failed"] + finished["diverged"]) == 0]
    pool = clean if len(clean) else finished
    if not len(pool):
        return None
    pool = pool.assign(_neg_n=-pool["n"]).sort_values(["val_mean", "_neg_n", "lr"],
                                                      na_position="last", kind="stable")
    return pool.iloc[0].drop("_neg_n")


def selected(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per model name in ``runs``: the chosen lr's statistics plus totals over all its lrs."""
    stats = lr_stats(runs)
    result = {}
    for name in ordered_names(runs["name"].dropna().unique()):
        mine = stats[stats["name"] == name]
        chosen = choose_lr(mine)
        params = sorted({int(p) for p in runs.loc[runs["name"] == name, "params"].dropna()})
        first = runs[runs["name"] == name].iloc[0]
        result[name] = {
            "model": first["model"], "downsample": first["downsample"],
            "chosen": None if chosen is None else chosen.to_dict(),
            "failed": int(mine["failed"].sum()), "diverged": int(mine["diverged"].sum()),
            "running": int(mine["running"].sum()), "runs": int(len(runs[runs["name"] == name])),
            "params": params,
        }
    return result


def at_chosen_lr(runs: pd.DataFrame) -> dict[str, tuple[dict[str, Any], pd.DataFrame]]:
    """Per model name with a chosen lr, in the paper's order: ``selected``'s entry and the
    finished runs at that lr, so that every table and figure that goes beyond test error
    (per-seed errors, consistency) shows the very seeds the test error is the mean of."""
    picked = {}
    for name, mine in selected(runs).items():
        pick = mine["chosen"]
        if pick is None:
            continue
        picked[name] = (mine, runs[(runs["name"] == name) & (runs["lr"] == pick["lr"])
                                   & (runs["status"] == "finished") & runs["test_error"].notna()])
    return picked


def _order_key(value: str) -> tuple[int, float, tuple[tuple[int, float, str], ...]]:
    """Numbers numerically; other text with the numbers inside it compared as numbers, so that
    ``lppool p=2`` comes before ``lppool p=16`` and ``LP4-CNN-C`` before ``LP16-CNN-C``."""
    try:
        return 0, float(value), ()
    except ValueError:
        parts = re.split(r"(\d+(?:\.\d+)?)", value)
        return 1, 0.0, tuple((1, float(part), "") if index % 2 else (0, 0.0, part)
                             for index, part in enumerate(parts))


def in_order(values: Iterable[Any], known: Sequence[str] = ()) -> list[str]:
    """``known`` first, in its order (those present), then the rest as ``_order_key`` sorts."""
    values = {str(v) for v in values}
    first = [v for v in known if v in values]
    return first + sorted(values - set(first), key=_order_key)


def ordered_names(names: Any) -> list[str]:
    """The paper's Table 3 order, then any other names (``LP2-CNN-C`` before ``LP16-CNN-C``)."""
    return in_order(names, list(reference.table3()["name"]))
