"""Result records: the one interface between running a cell and reporting on it.

Every run leaves ``result.json`` in its output directory (started with :func:`start_record`,
completed and written by :func:`end_record`), written atomically (temporary file in the same
directory, fsync, ``os.replace``), so a reader sees either the whole record or none. A start
marker, ``started.json``, is written when the run begins, so that a sweep can tell an
interrupted run from one that never started. What identifies a run (its cell and its config)
is defined here too, once, for the runner, the sweeper and the report alike.

This module must stay free of torch: the report and the sweep planner import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

from ablate.errors import RecordError

RESULT_FILE = "result.json"
# Written by the sweeper into the sweep's directory before its first job: the plan, the axes.
SWEEP_FILE = "sweep.json"
# Written when a run starts, so that a sweep can tell an interrupted run (marker, checkpoint, no
# record) from one that never started; it is not a record and carries no status.
START_FILE = "started.json"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
SCHEMA_VERSION = 2  # 2: start marker renamed, trainer config holds only the keys set
STATUSES = ("finished", "failed", "diverged")
# The study's axes: config groups whose choice names a cell in every table. Together with
# ``seed`` and ``lr`` (replicates, see ``REPLICATE_KEYS``) they open every cell.
CELL_AXES = ("model", "downsample", "dataset", "augmentation")
REPLICATE_KEYS = ("lr", "seed")
# The other axes of the study, in every cell with their value, defaults included, so that runs
# that did not override them are not gaps in a W&B table or a parallel-coordinates panel. The
# downsampling mode's own settings (``downsample.p`` of lppool) join it as ``downsample.<key>``.
DEFAULT_AXES = ("preprocess", "init", "width", "batch_size")
# The axes a run's name shows in the paper's terms (``ablate.tracking.run_name``); any other
# swept axis is added to the name as ``key=value``.
PAPER_AXES = (*CELL_AXES, *REPLICATE_KEYS)
# A group's settings that do not make a variant of its choice (see ``cell_of``).
NOT_VARIANT_SETTINGS = ("name", "label", "transform")
# Launch controls: how a run is started, not what it trains (never part of a cell either).
# ``selection`` (a final stage's selection sweep) only decides the lr, which is a key of its own.
CONTROL_KEYS = ("resume_from", "resume_any", "resume_fallback", "sweep_name", "selection")
# Overrides that select a grid rather than a value of it: never part of a cell.
NOT_CELL_KEYS = ("sweep", *CONTROL_KEYS)
# Left out of ``config_id`` besides the controls: how a run is shown and logged. Relaunching a
# grid with another logger or progress bar finds its finished runs instead of training again.
PRESENTATION_KEYS = (
    "logger",
    "callbacks",
    "progress_refresh_rate",
    "verbose",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)
# Left out of ``config_id`` too: how a run stores its files (``ablate.checkpoint_io``), which
# never changes what it trains; adding the atomic checkpoint writer kept every earlier id.
STORAGE_KEYS = ("trainer.plugins",)
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


# ---------------------------------------------------------------- writing files


def umask_mode(base: int = 0o666) -> int:
    """The mode ``open()`` (0o666) or ``mkdir`` (0o777) would give: ``base`` less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary stream whose content appears at ``path`` whole, or not at all.

    The temporary file sits beside ``path`` (same filesystem, so the rename is atomic) and is
    fsynced before it replaces ``path``; on any error it is removed and ``path`` is untouched.
    The file gets the mode a plain ``open()`` would (the umask decides), not ``mkstemp``'s
    private 0600: teammates sharing a sweep or data folder must be able to read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, umask_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text or bytes so that ``path`` is never seen half-written (see ``atomic_file``)."""
    with atomic_file(path) as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON so that ``path`` is never seen half-written, even after a crash."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True, default=str) + "\n"
    return write_atomic(path, text)


# ---------------------------------------------------------------- reading files


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


# ---------------------------------------------------------------- identity


def cell_id(cell: Mapping[str, Any]) -> str:
    """A stable short hash of a cell's values, independent of key order or directory names."""
    canonical = json.dumps(dict(cell), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def without_resume(overrides: Iterable[Any]) -> list[str]:
    """``overrides`` less where a run continues from (``resume_from``, ``resume_fallback``),
    which a launch sets for itself: what the run is, to be launched or resumed again."""
    return [str(o) for o in overrides
            if not str(o).lstrip("+").startswith(("resume_from=", "resume_fallback="))]


def cell_of(cfg: DictConfig, choices: Mapping[str, Any], task_overrides: Sequence[str]) -> dict:
    """The values that identify a run in its grid, as the user typed them.

    Always the study's axes, ``seed``/``lr`` and ``DEFAULT_AXES`` (defaults included); then
    every override of this job (a swept value, or a fixed one such as ``trainer.max_epochs=2``),
    so that runs made under different settings can never be mistaken for the same cell.
    """
    cell: dict[str, Any] = {key: choices.get(key) for key in CELL_AXES}
    cell["seed"] = cfg.seed
    cell["lr"] = cfg.lr
    for key in DEFAULT_AXES:
        if key in choices:
            cell[key] = choices[key]
        elif key in cfg:
            cell[key] = _plain(cfg.get(key))
    mode = cfg.get("downsample")
    for key, value in (mode.items() if isinstance(mode, DictConfig) else ()):
        if key not in NOT_VARIANT_SETTINGS and not OmegaConf.is_config(value):
            cell[f"downsample.{key}"] = value
    for override in task_overrides:
        key, _, raw = override.partition("=")
        key = key.lstrip("+~")
        if key in cell or key.startswith("hydra") or key in NOT_CELL_KEYS:
            continue
        if key in choices:
            cell[key] = choices[key]
        else:
            cell[key] = _plain(OmegaConf.select(cfg, key, default=raw))
    return cell


def swept_axes(sweep_dir: str | os.PathLike[str]) -> list[str] | None:
    """The keys a sweep varies (two or more values), from its ``sweep.json``; None without one."""
    plan = read_json(Path(sweep_dir) / SWEEP_FILE)
    if plan is None or not isinstance(plan.get("axes"), list):
        return None
    return [str(key).lstrip("+~") for key, values in plan["axes"]
            if isinstance(values, list) and len(values) > 1]


def config_id(config: Mapping[str, Any] | DictConfig) -> str:
    """A stable short hash of a run's effective config, the identity a resumed sweep matches on.

    ``config`` is the composed config (a ``DictConfig``, or the same as a plain mapping),
    interpolations left unresolved: a value such as ``${oc.env:ABLATE_DATA,data}`` or
    ``${hydra:runtime.output_dir}`` enters as written, so the same grid gives the same ids on
    another machine or in another directory, while any change to a value that reaches training
    (a default in a YAML file included) gives a new id. Only what the config itself says
    counts: a library's defaults never enter, so upgrading Lightning keeps every id. Hydra's own
    node, ``CONTROL_KEYS``, ``PRESENTATION_KEYS`` and ``STORAGE_KEYS`` are left out.
    """
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    kept = json.loads(json.dumps(dict(config), default=str))
    kept.pop("hydra", None)
    for dotted in (*CONTROL_KEYS, *PRESENTATION_KEYS, *STORAGE_KEYS):
        *parents, leaf = dotted.split(".")
        node = kept
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return cell_id(kept)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two resolved configs (launch controls and
    presentation aside, as in ``config_id``), sorted: what makes them different runs."""
    ignored = (*CONTROL_KEYS, *PRESENTATION_KEYS, *STORAGE_KEYS, "hydra")
    flat_a, flat_b = _flat(a), _flat(b)
    return sorted(key for key in set(flat_a) | set(flat_b)
                  if flat_a.get(key) != flat_b.get(key)
                  and not any(key == i or key.startswith(f"{i}.") for i in ignored))


# ---------------------------------------------------------------- protocol

# What makes two runs comparable (the report's sections, a final stage's selection), read
# from the resolved config. The study's own axes (model, downsample, dataset, augmentation,
# lr, seed) are left out: the tables pivot over them. Keys
# that cannot change a result (logger, progress bar, devices, compile, eval batch size) are left
# out too, so that they never split a table.
PROTOCOL_KEYS = (
    "preprocess", "init", "optimizer", "scheduler", "batch_size", "width",
    "dataset.image_size", "dataset.val_size", "dataset.split_seed",
    "trainer.max_epochs", "trainer.max_steps", "trainer.min_epochs",
    "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches",
    "trainer.fast_dev_run", "trainer.precision", "trainer.gradient_clip_val",
    "trainer.accumulate_grad_batches",
)


def select_dotted(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``a.b`` in a plain (resolved) config; None where it is absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def canonical(value: Any) -> Any:
    """The same config gives the same value from every source: a JSON round trip, with
    integral floats as ints (W&B's reader turns ``1.0`` into ``1``)."""
    def integral(node: Any) -> Any:
        if isinstance(node, float) and node.is_integer():
            return int(node)
        if isinstance(node, dict):
            return {key: integral(item) for key, item in node.items()}
        if isinstance(node, list):
            return [integral(item) for item in node]
        return node

    return integral(json.loads(json.dumps(value, sort_keys=True, default=str)))


def protocol_of(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The protocol-defining part of a resolved config (see ``PROTOCOL_KEYS``)."""
    config = config or {}
    protocol: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        value = select_dotted(config, key)
        if key == "optimizer" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k != "lr"}  # lr is a study axis
        protocol[key] = value
    canon = canonical(protocol)  # one round trip for all keys: the report reads thousands
    return {key: canon[key] for key in PROTOCOL_KEYS}


# ---------------------------------------------------------------- a run's record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_record(
    *,
    name: str,
    cell: Mapping[str, Any],
    params: int,
    config: Mapping[str, Any],
    config_id: str,
    output_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """The part of a record known before training: identity, config, provenance."""
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "cell": dict(cell),
        "cell_id": cell_id(cell),
        "params": params,
        "config": dict(config),
        "config_id": config_id,
        "versions": package_versions(),
        "started_at": _now(),
        "output_dir": str(output_dir),
        "host": socket.gethostname(),  # a sweep calibrates its estimates on this host's runs only
    }
    record.update({f"git_{key}": value for key, value in git_state().items()})
    return record


def end_record(record: dict[str, Any], *, status: str, **fields: Any) -> Path:
    """Complete ``record`` with its outcome and write ``result.json``; returns its path.

    ``fields`` are the outcome's own keys (``error``, ``metrics``, ``epochs``, ``history``,
    ``wall_seconds``, ...): whatever the run could measure, also when it failed.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    record.update(status=status, ended_at=_now(), **fields)
    return write_json_atomic(Path(record["output_dir"]) / RESULT_FILE, record)


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux clock ticks since boot), None if there is none.

    A pid alone can be reused after a reboot or a long time; pid and start time cannot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None  # Linux, and no such process
        try:  # elsewhere: whether the pid exists at all
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(host: Any, pid: Any, pid_start: Any) -> bool:
    """Whether the process that wrote a start marker still runs (knowable on its own host)."""
    if host != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    start = process_start(pid)
    return start is not None and pid_start in (None, "unknown", start)


def _slurm_job_id() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def write_start(record: Mapping[str, Any]) -> Path:
    """Mark the record's output directory as holding a started run of its ``config_id``."""
    keys = ("config_id", "cell_id", "cell", "name", "started_at", "resumed_from", "resumed_epoch")
    marker = {key: record.get(key) for key in keys}
    marker.update(
        host=socket.gethostname(),
        pid=os.getpid(),
        pid_start=process_start(os.getpid()),
        slurm_job_id=_slurm_job_id(),
        started_time=time.time(),
    )
    return write_json_atomic(Path(record["output_dir"]) / START_FILE, marker)


# ---------------------------------------------------------------- provenance


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (no imports, so no torch here)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# What "dirty" means for a record: edits that can change what a run does. Regenerating
# reports/ or writing sweeps/ must not mark every later run dirty.
SOURCE_PATHS = ("ablate", "conf", "hydra_plugins", "pyproject.toml")


def git_state(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the project's source (``SOURCE_PATHS``) in its checkout;
    ``None`` when it is not a git checkout."""
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
    status = (git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
              if commit else None)
    # The exact source a run used: its commit plus any uncommitted edit of it, so that a
    # relaunch after editing ablate/spec.py can tell its earlier runs came from other code.
    diff = git("diff", "HEAD", "--", *SOURCE_PATHS) if status else ""
    source = (hashlib.sha256(f"{commit}\n{diff}".encode()).hexdigest()[:12]
              if commit and diff is not None else None)
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "source": source}
