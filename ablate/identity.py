"""What a run is: which keys of its config name its cell, which define its protocol, which
are ignored, and the hashes built from them (``cell_id``, ``config_id``).

Identity, comparison (``ablate.report.compare``), loading and the W&B run's name all read one
table, ``KEYS``: a key's role is written once. Free of torch: the report and the sweep
planner import it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import overrides


class Role(Enum):
    """What a config key is to the study."""

    AXIS = "axis"  # a config group whose choice names a cell in every table
    REPLICATE = "replicate"  # varied within a cell: seeds average over it, lr is selected
    SETTING = "setting"  # part of the protocol, and in every cell with its value (defaults too)
    PROTOCOL = "protocol"  # makes runs comparable or not; tables pivot over the axes, not these
    GRID = "grid"  # selects a grid rather than a value of it (``+sweep=quick``): never in a cell
    CONTROL = "control"  # how a run is launched, not what it trains: never in a cell or an id
    IGNORED = "ignored"  # how a run is shown, logged or stored: never in ``config_id``


KEYS: dict[str, Role] = {
    "model": Role.AXIS, "downsample": Role.AXIS, "dataset": Role.AXIS,
    "augmentation": Role.AXIS,
    "lr": Role.REPLICATE, "seed": Role.REPLICATE,
    # Keys that cannot change a result (logger, progress bar, devices, compile, eval batch
    # size) are no protocol key, so that they never split a table.
    "preprocess": Role.SETTING, "init": Role.SETTING, "optimizer": Role.PROTOCOL,
    "scheduler": Role.PROTOCOL, "batch_size": Role.SETTING, "width": Role.SETTING,
    "dataset.image_size": Role.PROTOCOL, "dataset.val_size": Role.PROTOCOL,
    "dataset.split_seed": Role.PROTOCOL, "trainer.max_epochs": Role.PROTOCOL,
    "trainer.max_steps": Role.PROTOCOL, "trainer.min_epochs": Role.PROTOCOL,
    "trainer.limit_train_batches": Role.PROTOCOL, "trainer.limit_val_batches": Role.PROTOCOL,
    "trainer.limit_test_batches": Role.PROTOCOL, "trainer.fast_dev_run": Role.PROTOCOL,
    "trainer.precision": Role.PROTOCOL, "trainer.gradient_clip_val": Role.PROTOCOL,
    "trainer.accumulate_grad_batches": Role.PROTOCOL,
    "sweep": Role.GRID,
    # ``selection`` (a final stage's selection sweep) only decides the lr, a key of its own.
    "resume_from": Role.CONTROL, "resume_any": Role.CONTROL, "resume_fallback": Role.CONTROL,
    "sweep_name": Role.CONTROL, "selection": Role.CONTROL,
    "packed_with": Role.CONTROL,
    # Relaunching a grid with another logger or progress bar finds its finished runs; the
    # atomic checkpoint writer (``trainer.plugins``) kept every earlier id when it came.
    "logger": Role.IGNORED, "callbacks": Role.IGNORED, "progress_refresh_rate": Role.IGNORED,
    "verbose": Role.IGNORED, "trainer.enable_progress_bar": Role.IGNORED,
    "trainer.enable_model_summary": Role.IGNORED, "trainer.log_every_n_steps": Role.IGNORED,
    "trainer.plugins": Role.IGNORED}


def keys_of(*roles: Role) -> tuple[str, ...]:
    """The keys of ``KEYS`` with one of ``roles``, in the table's order."""
    return tuple(key for key, role in KEYS.items() if role in roles)


CELL_AXES = keys_of(Role.AXIS)
REPLICATE_KEYS = keys_of(Role.REPLICATE)
# In every cell with their value, defaults included, so that runs that did not override them
# are not gaps in a W&B table. The downsampling mode's own settings (``downsample.p`` of
# lppool) join it as ``downsample.<key>``.
DEFAULT_AXES = keys_of(Role.SETTING)
PAPER_AXES = (*CELL_AXES, *REPLICATE_KEYS)  # what a run's name shows in the paper's terms
PROTOCOL_KEYS = keys_of(Role.SETTING, Role.PROTOCOL)
CONTROL_KEYS = keys_of(Role.CONTROL)
NOT_CELL_KEYS = keys_of(Role.GRID, Role.CONTROL)
IGNORED_KEYS = keys_of(Role.CONTROL, Role.IGNORED)  # left out of ``config_id``
# A group's settings that do not make a variant of its choice (see ``cell_of``).
NOT_VARIANT_SETTINGS = ("name", "label", "transform")


def cell_id(cell: Mapping[str, Any]) -> str:
    """A stable short hash of a cell's values, independent of key order or directory names."""
    canonical = json.dumps(dict(cell), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def without_resume(task_overrides: Iterable[Any]) -> list[str]:
    """``task_overrides`` less where a run continues from (``resume_from``,
    ``resume_fallback``), which a launch sets for itself: what the run is, to be launched or
    resumed again."""
    return overrides.without(map(str, task_overrides),
                             ("resume_from", "resume_fallback", "packed_with"))


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
        key, raw = overrides.key(override), overrides.value(override)
        if key in cell or key.startswith("hydra") or key in NOT_CELL_KEYS:
            continue
        if key in choices:
            cell[key] = choices[key]
        else:
            cell[key] = _plain(OmegaConf.select(cfg, key, default=raw))
    return cell


def config_id(config: Mapping[str, Any] | DictConfig) -> str:
    """A stable short hash of a run's effective config, the identity a resumed sweep matches on.

    ``config`` is the composed config (a ``DictConfig``, or the same as a plain mapping),
    interpolations left unresolved: a value such as ``${oc.env:ABLATE_DATA,data}`` or
    ``${hydra:runtime.output_dir}`` enters as written, so the same grid gives the same ids on
    another machine or in another directory, while any change to a value that reaches training
    (a default in a YAML file included) gives a new id. Only what the config itself says
    counts: a library's defaults never enter, so upgrading Lightning keeps every id. Hydra's own
    node and ``IGNORED_KEYS`` are left out.
    """
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    kept = json.loads(json.dumps(dict(config), default=str))
    kept.pop("hydra", None)
    for dotted in IGNORED_KEYS:
        parent, _, leaf = dotted.rpartition(".")
        node = select_dotted(kept, parent) if parent else kept
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
    ignored = (*IGNORED_KEYS, "hydra")
    flat_a, flat_b = _flat(a), _flat(b)
    return sorted(key for key in set(flat_a) | set(flat_b)
                  if flat_a.get(key) != flat_b.get(key)
                  and not any(key == i or key.startswith(f"{i}.") for i in ignored))


# ---------------------------------------------------------------- protocol

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
    def number(text: str) -> float | int:
        return int(parsed) if (parsed := float(text)).is_integer() else parsed

    return json.loads(json.dumps(value, sort_keys=True, default=str), parse_float=number)


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


