"""Per-example test predictions: one ``predictions.npz`` beside a run's ``result.json``.

The run writes it (:func:`write_predictions`, whose entry goes into the record under
``"predictions"``), the report reads it (:func:`read_predictions`): one module, so the checksum
and the test-set fingerprint are never computed two ways. numpy only: the report imports it.

The file holds ``predicted`` (int64, [N]), ``logits`` (float16, [N, K]: half the bytes of
float32, enough to re-rank or calibrate later) and ``labels`` (int64, [N]). The entry names the
file, the SHA-256 of its bytes (a truncated or replaced file is caught) and the test-set
fingerprint (runs are paired example by example only on the same test examples, same order).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablate.atomic import write_atomic

PREDICTIONS_FILE = "predictions.npz"
PERTURBED = "perturbed/"  # prefix of the per-perturbation predicted classes
ARRAYS = {"predicted": (np.int64, 1), "logits": (np.float16, 2), "labels": (np.int64, 1)}


class PredictionsError(ValueError):
    """A predictions file that cannot be trusted (missing, truncated, altered, malformed)."""


@dataclass(frozen=True)
class Predictions:
    predicted: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """Per-example correctness: what McNemar's test pairs between two runs."""
        return self.predicted == self.labels


def fingerprint(labels: np.ndarray) -> str:
    """SHA-256 of the labels as little-endian int64 bytes, in order: the same labels give the
    same hex on every machine, and equal fingerprints let two runs be paired example by example."""
    array = np.asarray(labels)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise PredictionsError(
            f"labels must be a 1-d integer array, got shape {array.shape} dtype {array.dtype}; "
            "pass the test labels in the order the predictions were made")
    return hashlib.sha256(array.astype("<i8").tobytes()).hexdigest()


def _checked(name: str, value: Any, n: int | None) -> np.ndarray:
    dtype, ndim = ARRAYS[name]
    array = np.asarray(value)
    if array.ndim != ndim:
        raise PredictionsError(f"{name} has {array.ndim} dimensions, expected {ndim} "
                               f"({'[N]' if ndim == 1 else '[N, K]'})")
    if n is not None and len(array) != n:
        raise PredictionsError(f"{name} has {len(array)} rows but labels has {n}; "
                               "all three arrays describe the same test examples")
    return array.astype(dtype)


def write_predictions(directory: str | os.PathLike[str], predicted: Any, logits: Any,
                      labels: Any, perturbed: dict[str, Any] | None = None) -> dict[str, str]:
    """Write ``predictions.npz`` atomically; return the record's ``"predictions"`` entry.
    ``perturbed`` maps ``ablate.invariance``'s keys (``dy=-1,dx=0``, ``flip``) to the classes
    predicted under each, stored as ``perturbed/<key>`` (consistency per example)."""
    labels_array = _checked("labels", labels, None)
    arrays = {"predicted": _checked("predicted", predicted, len(labels_array)),
              "logits": _checked("logits", logits, len(labels_array)),
              "labels": labels_array}
    for key, classes in (perturbed or {}).items():
        arrays[f"{PERTURBED}{key}"] = _checked("predicted", classes, len(labels_array))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    write_atomic(Path(directory) / PREDICTIONS_FILE, payload)
    return {"file": PREDICTIONS_FILE, "sha256": hashlib.sha256(payload).hexdigest(),
            "test_fingerprint": fingerprint(labels_array)}


def read_predictions(directory: str | os.PathLike[str], entry: Any) -> Predictions:
    """The predictions a record's entry names, after checking checksum, arrays and fingerprint;
    any problem is a :class:`PredictionsError` saying what, so the report can carry on."""
    if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("file", "sha256", "test_fingerprint")):
        raise PredictionsError(f"predictions entry {entry!r} is malformed; expected "
                               "{'file': ..., 'sha256': ..., 'test_fingerprint': ...}")
    name = entry["file"]
    if Path(name).name != name:
        raise PredictionsError(f"predictions file {name!r} must be a plain file name beside "
                               "result.json")
    path = Path(directory) / name
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise PredictionsError(f"{name} cannot be read ({error.strerror or error})") from error
    digest = hashlib.sha256(payload).hexdigest()
    if digest != entry["sha256"]:
        raise PredictionsError(f"{name} has sha256 {digest[:12]}…, the record says "
                               f"{entry['sha256'][:12]}… (truncated or replaced after the run)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            arrays = {key: data[key] for key in ARRAYS if key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise PredictionsError(f"{name} is not a readable .npz ({error})") from error
    missing = sorted(set(ARRAYS) - set(arrays))
    if missing:
        raise PredictionsError(f"{name} lacks {', '.join(missing)}; expected {', '.join(ARRAYS)}")
    labels = _checked("labels", arrays["labels"], None)
    predictions = Predictions(_checked("predicted", arrays["predicted"], len(labels)),
                              _checked("logits", arrays["logits"], len(labels)), labels)
    actual = fingerprint(predictions.labels)
    if actual != entry["test_fingerprint"]:
        raise PredictionsError(f"{name}: labels have fingerprint {actual[:12]}…, the record says "
                               f"{entry['test_fingerprint'][:12]}…")
    return predictions
