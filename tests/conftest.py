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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with the most end-to-end (``slow``) tests first: each worker takes the next
    file as it frees up (``--dist=loadfile``), so the long files start early and the short ones
    fill the gaps at the end, instead of a long file starting last while the other worker idles.
    The order within a file is kept."""
    slow: dict[str, int] = {}
    for item in items:
        slow[item.nodeid.split("::")[0]] = slow.get(item.nodeid.split("::")[0], 0) + (
            item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])  # stable: file order kept
