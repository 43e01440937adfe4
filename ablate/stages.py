"""The paper's two stages and the rule that joins them: which lr each model is reported at.

The selection stage chooses each model's lr on mean validation error over its seeds; the final
stage retrains at that lr on every training image. The report (``ablate.report.stats``) and the
final stage's check (``ablate.selection``) both apply :func:`choose_lr` to :func:`lr_counts`, so
a final run trains at the lr the report shows as chosen, by construction. Plain Python over
plain rows: a final-stage job that checks its lr loads no pandas, scipy or statsmodels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ablate import identity
from ablate.status import Status

# The keys in which the final stage differs from the selection stage, by design: it trains on
# every training image (no validation split, no validation loop). A run without a validation
# split is a final-stage run.
STAGE_KEYS = ("dataset.val_size", "trainer.limit_val_batches")
SELECTION, FINAL = "selection", "final"
# Counted per lr besides the finished runs: an lr with failed or diverged runs is chosen last.
COUNTED = (Status.FAILED, Status.DIVERGED, Status.RUNNING)


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
                      if key not in identity.NOT_VARIANT_SETTINGS
                      and not isinstance(value, Mapping | list))
    return " ".join([str(choice), *(f"{key}={identity.canonical(value)}"
                                    for key, value in settings)])


def report_cell(cell: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cell as the tables group it: ``downsample.p=4`` folded into ``downsample``, so that
    every downsampling mode sits on one axis (and ``p`` left at its default is shown too)."""
    folded = {key: value for key, value in cell.items() if not key.startswith("downsample.")}
    node = (config or {}).get("downsample")
    if not isinstance(node, Mapping):  # a compact W&B config: the mode's settings are in the cell
        node = {key.removeprefix("downsample."): value for key, value in cell.items()
                if key.startswith("downsample.")}
    if "downsample" in cell:
        folded["downsample"] = downsample_mode(cell["downsample"], node)
    return folded


def number(value: Any) -> float:
    """A value as a float; NaN where it is missing or not a number (never counted)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def lr_counts(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per lr (ascending) of one model's runs: ``n`` finished runs with a test error, the mean
    of their validation errors, their ``test_errors``, and the failed (a finished run without a
    test error among them), diverged and running counts. Runs without an lr are left out."""
    by_lr: dict[float, list[Mapping[str, Any]]] = {}
    for run in runs:
        lr = number(run.get("lr"))
        if not math.isnan(lr):
            by_lr.setdefault(lr, []).append(run)
    counts = []
    for lr in sorted(by_lr):
        done = [run for run in by_lr[lr] if run.get("status") == Status.FINISHED
                and not math.isnan(number(run.get("test_error")))]
        vals = [v for v in (number(run.get("val_error")) for run in done) if not math.isnan(v)]
        statuses = Counter(run.get("status") for run in by_lr[lr])
        counts.append({
            "lr": lr, "n": len(done), "val_mean": math.fsum(vals) / len(vals) if vals else math.nan,
            "test_errors": [number(run.get("test_error")) for run in done],
            # a run killed before its record (interrupted) did not complete either
            Status.FAILED: statuses[Status.FAILED] + statuses[Status.INTERRUPTED]
            + statuses[Status.FINISHED] - len(done),
            Status.DIVERGED: statuses[Status.DIVERGED], Status.RUNNING: statuses[Status.RUNNING],
        })
    return counts


def choose_lr(counts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The entry of ``counts`` (one model's lrs) with the lowest mean validation error: among
    the lrs with a finished run, those free of failed and diverged runs if there are any;
    ties go to more finished seeds, then the smaller lr; no validation error sorts last."""
    finished = [entry for entry in counts if entry["n"] > 0]
    pool = [e for e in finished if e[Status.FAILED] + e[Status.DIVERGED] == 0] or finished
    if not pool:
        return None
    return min(pool, key=lambda e: (math.isnan(e["val_mean"]),
                                    0.0 if math.isnan(e["val_mean"]) else e["val_mean"],
                                    -e["n"], e["lr"]))
