"""Fixtures shared by the test modules (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory for CLI runs: their sweeps/ folder lands inside it."""
    return tmp_path
