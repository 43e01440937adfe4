"""Fixtures shared by the test modules (helpers live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest-xdist runs the test files on several workers (pyproject.toml); each worker, and each
# run it starts, gets its share of the cores for torch's threads. Oversubscribed, torch's
# spin-waiting threads make a run many times slower.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory for CLI runs: their sweeps/ folder lands inside it."""
    return tmp_path
