"""Paired comparisons along any swept axis, among runs that are otherwise identical.

For an axis (``downsample``, ``init``, any key a sweep varied), two runs share a *context* when
all but that axis, the seed and the lr is the same, protocol keys included except those the
axis itself sets: so ``init=xavier,kaiming``, in two protocol sections of the tables, is still
compared. Each side (one value of the axis) gets its own lr, chosen on validation error as the
tables choose it; the sides are paired by seed and compared with :mod:`ablate.report.evidence`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from ablate import stages
from ablate.report import evidence, per_example, reference, stats
from ablate.report.load import NOT_SETTINGS, parsed, related
from ablate.rows import CONSISTENCY_FLIP
from ablate.status import Status

# Never compared along: seed pairs the runs, lr is chosen per side on validation error, and
# runs on different datasets have different test sets (and chance levels) to be paired on.
NOT_AXES = ("seed", "lr", "dataset")
# Left out of a table's grouping: each per-model table lists its variants as rows.
ROW_KEYS = ("downsample",)


@dataclass(frozen=True)
class Metric:
    """What a comparison measures (a numeric column of the runs DataFrame) and which way is
    better, so that one paired test and one verdict rule serve error and invariance alike."""

    column: str
    label: str
    higher_is_better: bool


TEST_ERROR = "test_error"
METRICS = ("test_error", "consistency_<k> (k px)", CONSISTENCY_FLIP)  # for error messages


def metric(column: str) -> Metric:
    """The metric of a column: test error, or a consistency at any shift the runs measured
    (``consistency_<k>``) or under the flip; ``KeyError`` for anything else."""
    if column == TEST_ERROR:
        return Metric(TEST_ERROR, "test error", False)
    if column == CONSISTENCY_FLIP:
        return Metric(column, "consistency under a flip", True)
    step = column.removeprefix("consistency_")
    if column.startswith("consistency_") and step.isdigit():
        return Metric(column, f"consistency at {int(step)} px", True)
    raise KeyError(column)


# The shift the Comparisons section tests consistency at: 2 px, the stride of every
# downsampling layer (3x3 max-pooling or convolution with stride 2), the move one pooling stage
# is said to absorb. One shift keeps one question, one Holm family, per table; the invariance
# table and figure show every shift.
COMPARED_CONSISTENCY = "consistency_2"


def text(value: Any) -> str:
    """A cell value as the report shows it (and groups on it)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def value_order(axis: str, values: Iterable[str]) -> list[str]:
    """The paper's order where it has one, numbers numerically, anything else alphabetically."""
    known = {"downsample": reference.DOWNSAMPLES, "model": reference.MODELS,
             "augmentation": ("none", "flip_translate", "large")}.get(axis, ())
    return stats.in_order(values, known)


def comparable_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that count and have a config: not superseded, not running."""
    runs = stats.current(frame)
    return runs[(runs["status"] != Status.RUNNING) & runs["protocol_spec"].notna()
                & runs["cell"].notna()]


@functools.lru_cache(maxsize=1 << 17)  # runs of many reports in one process: bounded
def _setting(cell: str) -> str:
    """A cell's JSON without its seed and lr (never axes): what the runs of one setting share."""
    return json.dumps({k: v for k, v in parsed(cell).items() if k not in ("seed", "lr")},
                      sort_keys=True)


def _by_setting(runs: pd.DataFrame) -> dict[tuple[str, str], list[int]]:
    """Positions of the runs per (setting, protocol spec): a grid of thousands of seeds and lrs
    has a few dozen settings, so each is parsed and keyed once, not once per run."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for position, (cell, spec) in enumerate(zip(runs["cell"], runs["protocol_spec"],
                                                strict=True)):
        grouped.setdefault((_setting(cell), spec), []).append(position)
    return grouped


@dataclass
class Context:
    """The runs of one context along one axis, split by the axis' value."""

    axis: str
    cell: dict[str, str]  # the context's cell keys (axis, seed and lr left out)
    sides: dict[str, pd.DataFrame] = field(default_factory=dict)


def contexts(frame: pd.DataFrame, axis: str) -> list[Context]:
    """Every context with runs along ``axis``, in a fixed order."""
    runs = comparable_runs(frame)
    grouped: dict[str, tuple[dict[str, str], dict[str, list[int]]]] = {}
    for (setting, spec), positions in _by_setting(runs).items():
        cell = parsed(setting)
        if axis not in cell:
            continue
        keyed = {k: text(v) for k, v in cell.items()
                 if k not in (axis, *NOT_SETTINGS)}
        protocol = {k: v for k, v in parsed(spec).items() if not related(k, axis)}
        key = json.dumps([keyed, protocol], sort_keys=True)
        grouped.setdefault(key, (keyed, {}))[1].setdefault(text(cell[axis]), []).extend(positions)
    found = []
    for key in sorted(grouped):
        keyed, by_value = grouped[key]
        context = Context(axis, keyed)
        for value in value_order(axis, by_value):
            context.sides[value] = runs.iloc[sorted(by_value[value])]  # in the frame's order
        found.append(context)
    return found


def axes(frame: pd.DataFrame) -> list[str]:
    """Cell keys with two or more values within some context: ``downsample`` first."""
    settings = _by_setting(comparable_runs(frame))
    keys = sorted({k for setting, _ in settings for k in parsed(setting)}
                  - {*NOT_AXES, *NOT_SETTINGS})
    found = [k for k in keys if any(len(c.sides) > 1 for c in contexts(frame, k))]
    return sorted(found, key=lambda k: (k != "downsample", k))


@dataclass
class Side:
    value: str
    name: str
    lr: float | None
    by_seed: dict[Any, pd.Series]  # finished runs at the chosen lr
    protocols: tuple[str, ...]


@dataclass
class Comparison:
    cell: dict[str, str]
    a: Side
    b: Side
    seeds: list[Any]
    paired: evidence.Paired
    mcnemar: tuple[evidence.McNemar, ...]  # one exact test per seed pair, never pooled
    mcnemar_note: str | None  # why there is none
    setting: dict[str, Any]  # cell + protocol of a run of side A: for notes on the setting

    @property
    def n(self) -> int:
        return len(self.seeds)

    def on(self, column: str) -> evidence.Paired:
        """The paired test on another column (a consistency), over the seeds where both sides
        measured it: runs recorded before it existed drop out rather than count as 0."""
        if column == TEST_ERROR:
            return self.paired
        a, b = self.values(column)
        return evidence.paired(list(a.values()), list(b.values()))

    def values(self, column: str) -> tuple[dict[Any, float], dict[Any, float]]:
        """``column`` on each side, per seed that has it on both, in seed order."""
        a, b = self.a.by_seed, self.b.by_seed
        seeds = [s for s in self.seeds
                 if not (pd.isna(a[s].get(column)) or pd.isna(b[s].get(column)))]
        return {s: float(a[s][column]) for s in seeds}, {s: float(b[s][column]) for s in seeds}

    def measured(self, column: str) -> bool:
        """Whether any run of either side has ``column`` (none: leave its table out)."""
        return any(not pd.isna(run.get(column))
                   for side in (self.a, self.b) for run in side.by_seed.values())


def side(value: str, runs: pd.DataFrame) -> Side:
    """One side at its own validation-chosen lr."""
    chosen = stages.choose_lr(stats.lr_stats(runs).to_dict("records"))
    name = str(runs["name"].dropna().iloc[0]) if runs["name"].notna().any() else value
    protocols = tuple(sorted({str(p) for p in runs["protocol"].dropna()}))
    if chosen is None:
        return Side(value, name, None, {}, protocols)
    at_lr = stats.finished_at(runs, chosen["lr"])
    by_seed = {row["seed"]: row for _, row in at_lr.sort_values("seed", kind="stable").iterrows()}
    return Side(value, name, float(chosen["lr"]), by_seed, protocols)


def _refusal(axis: str, cell: Mapping[str, str], seed: Any, runs: dict[str, pd.Series]) -> str:
    """One message per seed pair, whichever side a claim or a table calls A."""
    (first, run_1), (second, run_2) = [(v, runs[v]) for v in value_order(axis, runs)]
    where = ", ".join(f"{k} {v}" for k, v in sorted(cell.items()))
    return (f"{axis} {first} vs {second} ({where}), seed {seed}: {run_1['path']} has test set "
            f"{run_1['test_fingerprint']}, {run_2['path']} has {run_2['test_fingerprint']}; "
            "McNemar refused for this pair (compare runs made on the same test split)")


def compare(axis: str, cell: Mapping[str, str], a: Side, b: Side,
            warnings: set[str]) -> Comparison:
    """A minus B, paired by seed; McNemar within each seed pair that shares a test set (the
    others are named in ``warnings``); a pair without usable predictions is "n/a"."""
    seeds = sorted(set(a.by_seed) & set(b.by_seed), key=lambda s: (str(type(s)), s))
    result = evidence.paired([a.by_seed[s]["test_error"] for s in seeds],
                             [b.by_seed[s]["test_error"] for s in seeds])
    pairs, differ = [], 0
    for seed in seeds:
        run_a, run_b = a.by_seed[seed], b.by_seed[seed]
        correct_a, correct_b = run_a.get("correct"), run_b.get("correct")
        if not (isinstance(correct_a, np.ndarray) and isinstance(correct_b, np.ndarray)):
            continue  # no usable predictions on one side: this pair is "n/a"
        if run_a["test_fingerprint"] == run_b["test_fingerprint"]:
            pairs.append(evidence.mcnemar_exact(*evidence.discordant(correct_a, correct_b)))
        else:
            differ += 1
            warnings.add(_refusal(axis, cell, seed, {a.value: run_a, b.value: run_b}))
    note = None if pairs else "n/a (test sets differ)" if differ else per_example.NA
    first = next(iter(a.by_seed.values()), None)
    setting = {} if first is None else {**parsed(first["protocol_spec"]),
                                        **parsed(first["cell"])}
    return Comparison(dict(cell), a, b, seeds, result, tuple(pairs) if len(seeds) > 1 else (),
                      note, setting)


def tables(frame: pd.DataFrame, axis: str,
           warnings: set[str]) -> list[tuple[dict[str, str], list[Comparison]]]:
    """Comparison tables along ``axis``: one per model and setting, rows in a fixed order."""
    grouped: dict[str, list[Comparison]] = {}
    cells: dict[str, dict[str, str]] = {}
    for context in contexts(frame, axis):
        if len(context.sides) < 2:
            continue
        # contexts equal but for ROW_KEYS share one table (and one Holm family)
        cell = {k: v for k, v in context.cell.items() if k not in ROW_KEYS}
        key = json.dumps(cell, sort_keys=True)
        cells[key] = cell
        # every pair of values, each once, A before B in ``value_order``
        sides = {value: side(value, runs) for value, runs in context.sides.items()}
        grouped.setdefault(key, []).extend(compare(axis, context.cell, sides[a], sides[b], warnings)
                                           for a, b in combinations(list(sides), 2))
    models = {m: i for i, m in enumerate(reference.MODELS)}
    keys = sorted(grouped, key=lambda k: (models.get(cells[k].get("model", ""), len(models)), k))

    modes = value_order("downsample", {c.cell.get("downsample", "") for key in keys
                                       for c in grouped[key]})
    return [(cells[key], sorted(grouped[key], key=lambda c: modes.index(
        c.cell.get("downsample", "")))) for key in keys]
