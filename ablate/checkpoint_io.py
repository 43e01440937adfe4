"""Checkpoints written the way records are: whole, in their own folder, or not at all.

Lightning's ``TorchCheckpointIO`` writes a temporary file in ``/tmp`` and *moves* it onto
``last.ckpt``: across filesystems that is a copy, so a full disk or a kill during it can leave a
truncated ``last.ckpt`` and the run that should resume from it starts over (or fails).
:class:`AtomicCheckpointIO` (the Trainer's ``plugins`` in ``conf/trainer/default.yaml``) writes
beside the target, fsyncs and renames; on any error the previous checkpoint is untouched.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from ablate import atomic
from ablate.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose save is a same-directory write, fsync and rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:  # as Lightning's own: nothing here would use them
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        # Serialised in memory first (as Lightning does): torch's zip writer reports a failed
        # write as a RuntimeError with no errno, while a plain write raises the OSError that
        # says what happened (ENOSPC).
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            with atomic.atomic_file(path) as stream:
                stream.write(buffer.getbuffer())
        except OSError as error:  # ENOSPC, EDQUOT, EROFS, EIO: the run cannot go on
            kept = "the previous one is kept" if path.is_file() else "there is none yet"
            raise CheckpointError(
                f"could not write the checkpoint {path} ({error.strerror or error}); {kept}. "
                f"Free space (or fix the disk) under {path.parent} and relaunch: the run resumes "
                "from its last good checkpoint") from error
