"""Where a run came from: package versions, the project's commit and edits, its process.

A record names the exact source a run used, so that a relaunch after an edit can tell its
earlier runs came from other code; a start marker names its process, so that a sweep can tell
a run that is still at it from one that was killed. Processes are read through ``psutil``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

CHECKOUT = Path(__file__).resolve().parent.parent  # the project's source tree
PACKAGES = ("ablate", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf",
            "wandb", "numpy", "pandas", "scikit-learn")


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if there is none.

    A pid alone can be reused after a reboot or a long time; pid and start time cannot.
    """
    with contextlib.suppress(psutil.Error):  # no such process, or not ours to read
        return round(psutil.Process(pid).create_time(), 2)
    return None


def process_alive(host: Any, pid: Any, pid_start: Any) -> bool:
    """Whether the process that wrote a start marker still runs (knowable on its own host).

    A marker written before start times were read through psutil (a string of clock ticks)
    cannot be matched: its process counts as alive while its pid exists.
    """
    if host != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    start = process_start(pid)
    return start is not None and (not isinstance(pid_start, float) or pid_start == start)


def slurm_job_id() -> str | None:
    """The SLURM job (``<array job>_<task>`` for an array task) this process runs in."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def cpu_name() -> str:
    """The CPU's model as Linux names it, else the architecture ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def subprocess_env() -> dict[str, str]:
    """This checkout first on the path, so workers and runs use the code being measured."""
    path = os.pathsep.join(p for p in [str(CHECKOUT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (no imports, so no torch here)."""
    versions: dict[str, str | None] = dict.fromkeys(PACKAGES)  # None: not installed
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


# What "dirty" means for a record: edits that can change what a run does. Regenerating
# reports/ or writing sweeps/ must not mark every later run dirty.
SOURCE_PATHS = ("ablate", "conf", "hydra_plugins", "pyproject.toml")


def git_state(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the project's source (``SOURCE_PATHS``) in its checkout;
    ``None`` when it is not a git checkout."""
    directory = Path(directory) if directory else CHECKOUT

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = (git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
              if commit else None)
    # The exact source a run used: its commit plus any uncommitted edit of it, so that a
    # relaunch after editing ablate/spec.py can tell its earlier runs came from other code.
    diff = git("diff", "HEAD", "--", *SOURCE_PATHS) if status else ""
    source = (hashlib.sha256(f"{commit}\n{diff}".encode()).hexdigest()[:12]
              if commit and diff is not None else None)
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "source": source}
