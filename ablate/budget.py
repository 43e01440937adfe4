"""How much a run does and how long that is, in the terms of Lightning's Trainer.

The one definition behind the estimates of a sweep's plan (before anything is built) and of a
run (after timing real steps). No torch here: the planner must not need it.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import OmegaConf


def planned_batches(available: int, limit: int | float | None) -> int:
    """Batches an epoch runs of ``available``, under ``limit_*_batches`` (a fraction or count)."""
    if limit is None:
        return available
    if isinstance(limit, float) and limit <= 1.0:
        return int(math.floor(available * limit)) if limit < 1.0 else available
    return min(int(limit), available)


def held_out(pool: int, val_size: int | float | None) -> int:
    """Validation images ``dataset.val_size`` (a fraction below 1, else a count) takes."""
    fraction = isinstance(val_size, float) and val_size < 1
    return round(pool * val_size) if fraction else int(val_size or 0)


def planned_epochs(max_epochs: int | None, max_steps: int | None, train_batches: int) -> int:
    """``max_epochs`` (unset or -1, no limit, counts as 1), or fewer where ``max_steps`` ends it."""
    epochs = max_epochs if max_epochs and max_epochs > 0 else 1
    return min(epochs, math.ceil(max_steps / train_batches)) if (
        max_steps and max_steps > 0 and train_batches) else epochs


def batches_of(images: int, batch_size: int) -> int:
    """Batches in one pass over ``images`` (the last one may be short)."""
    return math.ceil(images / batch_size) if images else 0


def duration(seconds: float | None) -> str:
    """A wall time for people: seconds, minutes or hours, whichever reads best."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def count(value: Any) -> int | None:
    """A count of devices or nodes as Lightning's Trainer reads it: an int, a digit string, a
    list of device ids (``[0, 1]`` or ``"0,1"``); None for ``auto`` and -1 (all there are: known
    only on the machine)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        text = value.strip()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        return int(text) if text.isdigit() and int(text) > 0 else None
    if isinstance(value, list | tuple) or (hasattr(value, "__len__") and hasattr(value, "index")):
        return len(value)
    return None


def devices_and_nodes(cfg: Any) -> tuple[int, int]:
    """A run config's ``trainer.devices`` and ``trainer.num_nodes`` as counts (1 where absent
    or not a count: ``auto``, -1)."""
    devices = count(OmegaConf.select(cfg, "trainer.devices", default=1)) or 1
    return devices, count(OmegaConf.select(cfg, "trainer.num_nodes", default=1)) or 1


def processes(cfg: Any) -> int:
    """The processes one run of ``cfg`` trains in under data parallelism: devices x nodes."""
    devices, nodes = devices_and_nodes(cfg)
    return devices * nodes
