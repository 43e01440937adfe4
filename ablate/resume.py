"""Which checkpoint a run continues from, checked before Lightning is handed it.

The user names a checkpoint or a run's directory (``resume_from=...``; a directory brings the
run's own overrides: :func:`expand_run_directory`); a sweep relaunch names an interrupted run's
checkpoint (with ``resume_fallback=true``); a requeued SLURM job finds its own directory's.

The file is opened with ``torch.load(weights_only=True)`` (no code from it runs) and must carry
this run's ``config_id`` (written by ``ablate.callbacks.ConfigStamp``): a checkpoint of another
config would continue under its own optimiser state while the record claimed the new cell, so it
is refused, naming
the keys that differ, unless ``resume_any=true``. A named checkpoint that cannot be loaded is an
error; only the sweep's own resumes fall back to a fresh start, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import atomic, identity, records
from ablate.config import values_given
from ablate.errors import ConfigError, RecordError

IDENTITY_KEY = "ablate_identity"


@dataclass(frozen=True)
class Resume:
    """Where training continues: ``path`` None means from scratch; ``note`` says why, if odd."""

    path: Path | None = None
    epoch: int | None = None  # epochs completed in the checkpoint
    note: str | None = None


def read_checkpoint(path: Path) -> tuple[int, dict[str, Any] | None]:
    """Completed epochs and the writer's identity; raises if it cannot be read safely."""
    import torch  # here: the entry point reads run directories before any run starts

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("not a Lightning checkpoint (no state_dict)")
    identity = checkpoint.get(IDENTITY_KEY)
    return int(checkpoint.get("epoch", -1)) + 1, identity if isinstance(identity, dict) else None


def _why_unreadable(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    text = str(error).strip()
    if isinstance(error, KeyError) or len(text) < 12:  # torch's bare messages ("101", ...)
        return f"not a readable checkpoint ({type(error).__name__}: {text or 'no detail'})"
    return text.splitlines()[0]


def _run_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was composed from: its record's (``overrides``), else Hydra's copy
    in ``.hydra/overrides.yaml`` (a killed run has no record)."""
    record = atomic.read_json(run_dir / records.RESULT_FILE) or {}  # a damaged one too
    task = record.get("overrides")
    if not isinstance(task, list):
        from omegaconf import OmegaConf

        saved = run_dir / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            raise ConfigError(f"resume_from={run_dir}: neither a record with its overrides nor "
                              f"{saved.relative_to(run_dir)}: not a run directory of ablate")
        task = list(OmegaConf.to_container(OmegaConf.load(saved)))
    return identity.without_resume(task)


def expand_run_directory(arguments: list[str]) -> list[str]:
    """``resume_from=<run dir>`` -> that run's own overrides, then ``resume_from=<its
    checkpoint>``, then the other arguments (which win: ``trainer.max_epochs=60`` with
    ``resume_any=true`` trains longer); the checkpoint is then checked as any other
    (:func:`resume_point`). Any other command line comes back as it is."""
    if any(a in ("-m", "--multirun") for a in arguments):
        return arguments
    for index, value in values_given(arguments, "resume_from"):
        if not value or not Path(str(value)).is_dir():
            continue
        run_dir = Path(value)
        checkpoint = run_dir / records.CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise ConfigError(f"resume_from={value}: {records.CHECKPOINT_FILE} is not there (the "
                              "run ended before its first epoch); run it again instead")
        rest = arguments[:index] + arguments[index + 1:]
        return [*_run_overrides(run_dir), f"resume_from={checkpoint}", *rest]
    return arguments


def resume_point(requested: str | None, output_dir: Path, config_id: str, config: Mapping[str, Any],
                 *, resume_any: bool = False, fallback: bool = False) -> Resume:
    """The checkpoint to continue from: ``requested``, else this directory's own, else none;
    a ``ConfigError`` for a named one that cannot be loaded (unless ``fallback``) or belongs to
    another config (unless ``resume_any``)."""
    if requested:
        path = Path(requested)
    else:
        path = output_dir / records.CHECKPOINT_FILE
        marker = atomic.read_json(output_dir / records.START_FILE) or {}  # of the run that left it
        if not path.is_file() or marker.get("config_id") != config_id:
            return Resume()
        fallback = resume_any = True  # its own checkpoint: the marker proved the config
    try:
        epochs, stamp = read_checkpoint(path)
    except Exception as error:  # missing, truncated, or not safe to unpickle
        why = _why_unreadable(error)
        if not fallback:
            raise ConfigError(f"resume_from={requested}: {why}. Give the path of a run's "
                              "checkpoints/last.ckpt, or drop resume_from to start afresh"
                              ) from None
        return Resume(note=f"cannot resume from {path}: {why}; starting from scratch")
    if not resume_any and (stamp is None or stamp.get("config_id") != config_id):
        if stamp is None:
            differs = "it carries no config id (written by another tool or an older ablate)"
        else:
            keys = identity.config_differences(stamp.get("config") or {}, config)
            more = f" and {len(keys) - 12} more" if len(keys) > 12 else ""
            differs = (f"its run differs in {', '.join(keys[:12])}{more}" if keys
                       else "its config id differs")
        raise ConfigError(f"resume_from={path} is a checkpoint of another config: {differs}. "
                          "Resume it with the overrides of its own run, or set resume_any=true "
                          "to continue it under this config anyway")
    if requested:
        _refuse_finished(path, config_id)
    return Resume(path=path.resolve(), epoch=epochs)


def _refuse_finished(checkpoint: Path, config_id: str) -> None:
    """A finished run continued under its own config would train nothing and leave a second
    finished record of its cell: the first one is the result."""
    path = checkpoint.resolve().parent.parent / records.RESULT_FILE
    try:
        record = records.load(path)
    except RecordError:
        return  # no record, or a damaged one: the run did not provably finish
    if record.finished and record.config_id == config_id:
        raise ConfigError(
            f"resume_from={checkpoint}: that run finished already (its record: {path}); "
            "resuming it under the same config would train nothing. Change what it trains "
            "(e.g. trainer.max_epochs=<more> resume_any=true) to continue it, or drop "
            "resume_from to train the cell afresh")
