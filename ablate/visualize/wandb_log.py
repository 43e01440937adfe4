"""Attach the figures to each run's own W&B run, online or offline, and never fail for it.

The record's ``wandb`` entry (written by ``ablate.tracking.start``) names the W&B run; it is
resumed (``resume="allow"``) in the mode it ran in, so offline runs get their images in their
own offline folder and show them once synced. The report is already on disk when this runs:
any W&B problem is a warning, not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ablate.records import Record

log = logging.getLogger("ablate.visualize")


def log_figures(record: Record, figures: Mapping[str, Path]) -> bool:
    """Log ``figures`` (name -> PNG path) as images to the record's W&B run; True if done."""
    entry = record.wandb
    if not entry or not entry.get("id") or entry.get("mode") == "disabled":
        return False
    try:
        import wandb

        if wandb.run is not None:  # never log into a run some earlier caller left open
            wandb.run.finish()
        directory = Path(entry.get("dir") or ".")
        # the record holds <save_dir>/wandb; wandb.init(dir=...) appends the /wandb itself
        save_dir = directory.parent if directory.name == "wandb" else directory
        save_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(id=entry["id"], project=entry.get("project"), entity=entry.get("entity"),
                         dir=str(save_dir), mode=entry.get("mode") or "offline",
                         resume="allow", job_type="visualize", settings=wandb.Settings(
                             silent=True, console="off"))
        try:
            run.log({f"visualize/{Path(name).stem.removeprefix('visualize_')}":
                     wandb.Image(str(path))
                     for name, path in sorted(figures.items())})
        finally:
            run.finish()
        return True
    except Exception as error:  # noqa: BLE001 - the written report must not be lost over W&B
        log.warning("W&B: could not log the figures to run %s: %s", entry.get("id"), error)
        return False
