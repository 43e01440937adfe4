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

GPU_REPORT = Path("reports") / "benchmarks" / "gpu.txt"
CHECKOUT = Path(__file__).resolve().parent.parent.parent
# Written first in the block, so a reader knows the numbers that follow are machine-readable.
MARKER = "machine-readable"
DEVICE_KIND = "device_kind"
BEST_MACS = "macs_per_second_best"


def format_fields(fields: Mapping[str, object]) -> str:
    """``key: value`` lines; floats as ``%.4e``, which ``float()`` reads back."""
    lines = [f"# {MARKER} (ablate.sweep.measured reads these)"]
    for key, value in fields.items():
        text = f"{value:.4e}" if isinstance(value, float) else str(value)
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"


def read_fields(text: str) -> dict[str, str]:
    """Every ``key: value`` line after the marker line (later lines win)."""
    fields: dict[str, str] = {}
    seen_marker = False
    for line in text.splitlines():
        if MARKER in line and line.startswith("#"):
            seen_marker = True
            continue
        key, colon, value = line.partition(":")
        if seen_marker and colon and key.strip() and " " not in key.strip():
            fields[key.strip()] = value.strip()
    return fields


def measured_gpu_macs_per_second(path: str | os.PathLike[str]) -> float | None:
    """The GPU throughput a report states (forward MACs per second, as ``estimate.Device``
    counts them), or None when there is no such report, it was measured on a CPU (the smoke
    test), or the number is not a positive finite float."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    fields = read_fields(text)
    if fields.get(DEVICE_KIND) != "cuda":
        return None
    try:
        value = float(fields.get(BEST_MACS, "nan"))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def latest_gpu_report(roots: Iterable[Path] | None = None) -> Path | None:
    """The most recently written ``reports/benchmarks/gpu.txt`` under the working directory or
    this checkout: the benchmark writes where it is run, the sweep may be run elsewhere."""
    roots = [Path.cwd(), CHECKOUT] if roots is None else list(roots)
    found = [root / GPU_REPORT for root in roots if (root / GPU_REPORT).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
