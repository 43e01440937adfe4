"""Which checkpoint a run continues from, checked before Lightning is handed it.

A sweep passes ``resume_from`` for a run that was interrupted in an earlier launch; a SLURM job
requeued after preemption or timeout starts again in its own directory and finds its own
``checkpoints/last.ckpt``. Either way the file is opened here first with
``torch.load(weights_only=True)`` (no code from the file runs), so a truncated or foreign file
is reported and the run starts from scratch instead of failing deep inside ``Trainer.fit``.
``Trainer.fit`` then loads it again with ``weights_only=True`` as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ablate import records


@dataclass(frozen=True)
class Resume:
    """Where training continues: ``path`` None means from scratch; ``note`` says why, if odd."""

    path: Path | None = None
    epoch: int | None = None  # epochs completed in the checkpoint
    note: str | None = None


def checkpoint_epochs(path: Path) -> int:
    """Completed epochs stored in a Lightning checkpoint; raises if it cannot be read safely."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("not a Lightning checkpoint (no state_dict)")
    return int(checkpoint.get("epoch", -1)) + 1


def _same_config(output_dir: Path, config_id: str) -> bool:
    """Whether the run that left ``output_dir``'s checkpoint had this config (its marker says)."""
    marker = records.read_json(output_dir / records.START_FILE)
    return marker is not None and marker.get("config_id") == config_id


def resume_point(requested: str | None, output_dir: Path, config_id: str) -> Resume:
    """The checkpoint to continue from: ``requested``, else this directory's own, else none."""
    if requested:
        path, origin = Path(requested), "resume_from"
    else:
        path, origin = output_dir / records.CHECKPOINT_FILE, "own"
        if not path.is_file() or not _same_config(output_dir, config_id):
            return Resume()
    try:
        epochs = checkpoint_epochs(path)
    except Exception as error:  # missing, truncated, or not safe to unpickle
        return Resume(note=f"cannot resume from {path} ({origin}): {error}; starting from scratch")
    return Resume(path=path.resolve(), epoch=epochs)
