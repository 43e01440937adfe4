"""Throughput measured by ``python -m ablate.bench.gpu``, read back for the sweep's time estimate.

The benchmark's report (``reports/benchmarks/gpu.txt``) ends with a few ``key: value`` lines for
programs; this module writes and reads them, so that the writer and the reader cannot drift
apart. No torch here: the estimate runs before anything heavy is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ablate.provenance import CHECKOUT

GPU_REPORT = Path("reports") / "benchmarks" / "gpu.txt"
# Written first in the block, so a reader knows the numbers that follow are machine-readable.
MARKER = "machine-readable"
DEVICE_KIND = "device_kind"
BEST_MACS = "macs_per_second_best"


def format_fields(fields: Mapping[str, object]) -> str:
    """``key: value`` lines; floats as ``%.4e``, which ``float()`` reads back."""
    lines = [f"{key}: {f'{value:.4e}' if isinstance(value, float) else value}"
             for key, value in fields.items()]
    return "\n".join([f"# {MARKER} (ablate.sweep.measured reads these)", *lines]) + "\n"


def read_fields(text: str) -> dict[str, str]:
    """Every ``key: value`` line after the marker line (later lines win)."""
    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("#") and MARKER in line),
                 len(lines))
    fields = (line.partition(":") for line in lines[start + 1:])
    return {key.strip(): value.strip() for key, colon, value in fields
            if colon and key.strip() and " " not in key.strip()}


def measured_gpu_macs_per_second(path: str | os.PathLike[str]) -> float | None:
    """The GPU throughput a report states (forward MACs per second, as ``estimate.Device``
    counts them), or None when there is no such report, it was measured on a CPU (the smoke
    test), or the number is not a positive finite float."""
    try:
        fields = read_fields(Path(path).read_text(encoding="utf-8"))
        value = float(fields.get(BEST_MACS, "nan")) if fields.get(DEVICE_KIND) == "cuda" else 0
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def latest_gpu_report(roots: Iterable[Path] | None = None) -> Path | None:
    """The most recently written ``reports/benchmarks/gpu.txt`` under the working directory or
    this checkout: the benchmark writes where it is run, the sweep may be run elsewhere."""
    roots = [Path.cwd(), CHECKOUT] if roots is None else list(roots)
    found = [root / GPU_REPORT for root in roots if (root / GPU_REPORT).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
