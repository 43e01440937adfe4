"""Result records: the one interface between running a cell and reporting on it.

Every run leaves ``result.json`` in its output directory, written atomically (temporary file in
the same directory, fsync, ``os.replace``), so a reader sees either the whole record or none.
This module must stay free of torch: the report side imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
# Written when a run starts, so that a sweep can tell an interrupted run (marker, checkpoint, no
# record) from one that never started; it is not a record and carries no status.
MARKER_FILE = "cell.json"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
SCHEMA_VERSION = 1
STATUSES = ("finished", "failed", "diverged")
CELL_KEYS = ("model", "downsample", "dataset", "augmentation", "seed", "lr")
PACKAGES = (
    "ablate",
    "torch",
    "pytorch-lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "wandb",
    "numpy",
    "pandas",
    "scikit-learn",
)


class RecordError(ValueError):
    """A result file that cannot be read as a record (truncated, corrupt, wrong schema)."""


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON so that ``path`` is never seen half-written, even after a crash."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True, default=str) + "\n"
    return write_atomic(path, text)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text or bytes so that ``path`` is never seen half-written (temp file + rename)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one record; a damaged file raises ``RecordError`` naming the file and the problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: not a readable result record ({error})") from error
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a result record must be a JSON object")
    missing = [key for key in ("status", "cell") if key not in record]
    if missing:
        raise RecordError(f"{path}: result record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(
            f"{path}: unknown status {record['status']!r}; expected one of {STATUSES}"
        )
    return record


def cell_id(cell: Mapping[str, Any]) -> str:
    """A stable short hash of a cell's values, independent of key order or directory names."""
    canonical = json.dumps(dict(cell), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# Launch controls: how a run is started, not what it trains (never part of a cell either).
CONTROL_KEYS = ("resume_from", "sweep_name")
# Left out of ``config_id`` besides the controls: how a run is shown and logged. Relaunching a
# grid with another logger or progress bar finds its finished runs instead of training again.
PRESENTATION_KEYS = (
    "logger",
    "progress_refresh_rate",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)


def config_id(config: Mapping[str, Any]) -> str:
    """A stable short hash of a run's effective config, the identity a resumed sweep matches on.

    ``config`` is the composed config as a plain mapping, interpolations left unresolved: a
    value such as ``${oc.env:ABLATE_DATA,data}`` or ``${hydra:runtime.output_dir}`` enters as
    written, so the same grid gives the same ids on another machine or in another directory,
    while any change to a value that reaches training (a default in a YAML file included)
    gives a new id. Hydra's own node, ``CONTROL_KEYS`` and ``PRESENTATION_KEYS`` are left out.
    """
    kept = json.loads(json.dumps(dict(config), default=str))
    kept.pop("hydra", None)
    for dotted in (*CONTROL_KEYS, *PRESENTATION_KEYS):
        *parents, leaf = dotted.split(".")
        node = kept
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return cell_id(kept)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (no imports, so no torch here)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the project checkout; ``None`` when it is not a git checkout."""
    directory = Path(directory) if directory else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
