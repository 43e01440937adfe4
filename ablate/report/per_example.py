"""A record's per-example predictions, verified while the runs are loaded.

A run whose predictions can be trusted gets its test-set fingerprint and per-example
correctness in the runs DataFrame; one whose file is missing, truncated or altered gets neither,
a warning, and "n/a (no predictions)" wherever a per-example test (McNemar) would have used it.
Records made before predictions existed, and W&B-only runs, get seed-level tests only, and no
warning (nothing is wrong with them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate import predictions
from ablate.records import Record
from ablate.status import Status

NA = "n/a (no predictions)"
UNUSABLE = "runs whose predictions.npz cannot be used (per-example tests n/a)"
TEST_SETS_DIFFER = "seed pairs on different test sets (per-example test refused)"


def row_fields(record: Record, path: Path, issues: Any,
               display: str | None = None) -> dict[str, Any]:
    """``{"test_fingerprint", "correct"}`` for the runs DataFrame; empty when there are none."""
    entry = record.predictions
    if entry is None or record.status != Status.FINISHED:
        return {}
    try:
        loaded = predictions.read_predictions(path.parent, entry)
    except predictions.PredictionsError as error:
        issues.add(UNUSABLE, f"{display or path}: {error}; per-example tests for this run are "
                             "n/a (rerun it to write the file again)")
        return {}
    return {"test_fingerprint": entry["test_fingerprint"], "correct": loaded.correct}
