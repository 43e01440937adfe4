"""A run's per-epoch history as the report keeps it: one array per key, not a dict per epoch.

The learning-curve figure reads it through :func:`series`, whichever form it was kept in.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ablate.stages import number


class History(Sequence):
    """A run's per-epoch rows (``{"epoch": 0, "val_error": ...}``), held as one array per key:
    as dicts, 24,000 350-epoch histories would not fit in 2 GiB; columns take a tenth of that.
    Rows read back have the record's keys and values (a key a row lacked is still absent)."""

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

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(self._length)[index]]
        index = range(self._length)[index]  # a negative index counts from the end; IndexError
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
        pairs = [(entry["epoch"], number(entry.get(key))) for entry in history or []
                 if isinstance(entry, Mapping) and entry.get("epoch") is not None]
        epochs = np.array([int(e) for e, v in pairs if not math.isnan(v)], dtype=np.int64)
        values = np.array([v for _, v in pairs if not math.isnan(v)], dtype=np.float64)
    keep = ~np.isnan(values) & np.isfinite(epochs)  # a float column of epochs may hold NaN
    return epochs[keep].astype(np.int64), values[keep]
