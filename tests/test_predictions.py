"""predictions.npz: written atomically, read back only when checksum and fingerprint agree."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import cli_env

from ablate import predictions


def _arrays(n: int = 50, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    return logits.argmax(1), logits, labels


def test_round_trip_and_record_entry(tmp_path):
    predicted, logits, labels = _arrays()
    entry = predictions.write_predictions(tmp_path, predicted, logits, labels)
    path = tmp_path / predictions.PREDICTIONS_FILE
    assert entry == {"file": "predictions.npz",
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "test_fingerprint": hashlib.sha256(
                         labels.astype("<i8").tobytes()).hexdigest()}
    loaded = predictions.read_predictions(tmp_path, entry)
    assert loaded.predicted.dtype == np.int64 and loaded.labels.dtype == np.int64
    assert loaded.logits.dtype == np.float16 and loaded.logits.shape == (50, 10)
    np.testing.assert_array_equal(loaded.predicted, predicted)
    np.testing.assert_array_equal(loaded.correct, predicted == labels)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left no temporary behind


def test_fingerprint_is_order_and_dtype_aware():
    labels = np.array([3, 1, 2])
    assert predictions.fingerprint(labels) == predictions.fingerprint(labels.astype(np.int32))
    assert predictions.fingerprint(labels) != predictions.fingerprint(labels[::-1])
    # little-endian int64 bytes, by hand: 3 = 03 00 00 00 00 00 00 00
    raw = b"".join(v.to_bytes(8, "little") for v in (3, 1, 2))
    assert predictions.fingerprint(labels) == hashlib.sha256(raw).hexdigest()
    with pytest.raises(predictions.PredictionsError, match="1-d integer"):
        predictions.fingerprint(np.zeros((2, 2)))


def test_truncated_altered_and_missing_files_are_refused(tmp_path):
    entry = predictions.write_predictions(tmp_path, *_arrays())
    path = tmp_path / entry["file"]
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(predictions.PredictionsError, match="truncated or replaced"):
        predictions.read_predictions(tmp_path, entry)
    path.unlink()
    with pytest.raises(predictions.PredictionsError, match="cannot be read"):
        predictions.read_predictions(tmp_path, entry)
    with pytest.raises(predictions.PredictionsError, match="malformed"):
        predictions.read_predictions(tmp_path, {"file": "predictions.npz"})
    with pytest.raises(predictions.PredictionsError, match="plain file name"):
        predictions.read_predictions(tmp_path, {**entry, "file": "../x.npz"})


def test_fingerprint_in_record_must_match_the_labels(tmp_path):
    entry = predictions.write_predictions(tmp_path, *_arrays())
    with pytest.raises(predictions.PredictionsError, match="fingerprint"):
        predictions.read_predictions(tmp_path, {**entry, "test_fingerprint": "0" * 64})


def test_shapes_must_agree(tmp_path):
    predicted, logits, labels = _arrays()
    with pytest.raises(predictions.PredictionsError, match="49 rows but labels has 50"):
        predictions.write_predictions(tmp_path, predicted[:-1], logits, labels)
    with pytest.raises(predictions.PredictionsError, match="expected 2"):
        predictions.write_predictions(tmp_path, predicted, logits[:, 0], labels)


def test_no_torch_on_the_report_side():
    code = ("import sys, ablate.predictions, ablate.report.tables, ablate.report.compare, "
            "ablate.report.claims; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=cli_env())
