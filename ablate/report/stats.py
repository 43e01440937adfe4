"""Numbers behind the tables and figures: per-lr statistics and the per-model lr choice.

A *group* is one (protocol, dataset, augmentation): the runs one Table 3 layout compares.
Within it each model's lr is chosen by ``ablate.stages.choose_lr``; its test error is the mean
over the seeds at that lr, with the sample std and the 95 % t interval (``evidence.summarize``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ablate import stages
from ablate.report import evidence, reference
from ablate.status import Status

GROUP = ["protocol", "dataset", "augmentation"]
RULE_COLUMNS = ["lr", "status", "val_error", "test_error"]  # what the lr rule reads of a run
STAT_COLUMNS = ["name", "lr", "n", "val_mean", "test_mean", "test_std", "test_ci",
                *stages.COUNTED]


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
    """One row per (model name, lr): finished seeds, mean val/test error, failure counts, as
    ``ablate.stages.lr_counts`` counts them for the final stage too."""
    rows = []
    for name, mine in runs.groupby("name", sort=True):
        for entry in stages.lr_counts(mine[RULE_COLUMNS].to_dict("records")):
            test = evidence.summarize(entry.pop("test_errors"))
            rows.append({"name": name, **entry, "test_mean": test.mean, "test_std": test.std,
                         "test_ci": test.half_width})
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def finished_at(runs: pd.DataFrame, lr: float) -> pd.DataFrame:
    """The finished runs at ``lr`` with a test error: the seeds its mean test error is over."""
    return runs[(runs["lr"] == lr) & (runs["status"] == Status.FINISHED)
                & runs["test_error"].notna()]


def selected(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per model name in ``runs``: the chosen lr's statistics plus totals over all its lrs."""
    stats = lr_stats(runs)
    result = {}
    for name in ordered_names(runs["name"].dropna().unique()):
        mine, lrs = runs[runs["name"] == name], stats[stats["name"] == name]
        result[name] = {
            "model": mine["model"].iloc[0], "downsample": mine["downsample"].iloc[0],
            "chosen": stages.choose_lr(lrs.to_dict("records")),
            **{s: int(lrs[s].sum()) for s in stages.COUNTED},
            "runs": len(mine), "params": sorted({int(p) for p in mine["params"].dropna()}),
        }
    return result


def at_chosen_lr(runs: pd.DataFrame) -> dict[str, tuple[dict[str, Any], pd.DataFrame]]:
    """Per model name with a chosen lr, in the paper's order: ``selected``'s entry and the
    finished runs at that lr, so that every table and figure that goes beyond test error
    (per-seed errors, consistency) shows the very seeds the test error is the mean of."""
    return {name: (entry, finished_at(runs[runs["name"] == name], entry["chosen"]["lr"]))
            for name, entry in selected(runs).items() if entry["chosen"] is not None}


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
