"""What the composed config means: Trainer arguments, validation, the cell a run belongs to.

Hydra composes ``conf/``; this module adds the parts a YAML file cannot hold: every argument of
Lightning's ``Trainer`` as an overridable default (read from its signature, so ``trainer.<arg>``
works for any Lightning version without a hand-kept list), checks of values Hydra cannot type,
and hints for misspelt keys.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import records

CONFIG_MODULE = "ablate.conf"
CONFIG_NAME = "config"
# Trainer arguments that the runner builds itself from other config groups.
MANAGED_TRAINER_ARGS = ("logger", "callbacks", "plugins", "default_root_dir")
GROUP_CELL_KEYS = ("model", "downsample", "dataset", "augmentation")
# Overrides that say how a run is launched, not what it trains: never part of its cell.
NOT_CELL_KEYS = ("sweep", *records.CONTROL_KEYS)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the valid values, the fix."""


def lightning_trainer_defaults() -> dict[str, Any]:
    """Every ``pytorch_lightning.Trainer`` argument with a plain default, as a config node."""
    import pytorch_lightning as pl

    defaults: dict[str, Any] = {}
    for name, parameter in inspect.signature(pl.Trainer.__init__).parameters.items():
        if name == "self" or name in MANAGED_TRAINER_ARGS:
            continue
        value = parameter.default
        if value is inspect.Parameter.empty:
            continue
        if value is None or isinstance(value, bool | int | float | str):
            defaults[name] = value
    return defaults


def register_configs() -> None:
    """Make ``trainer/lightning`` (all Trainer arguments) available to ``conf/trainer/*.yaml``,
    and this project's Hydra plugins (sweeper, Ray launcher) known to Hydra."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="trainer", name="lightning", node=lightning_trainer_defaults())
    register_plugins()


def register_plugins() -> None:
    """Register ``hydra_plugins/ablate_sweeper`` with Hydra by hand.

    Hydra finds plugins by listing the ``hydra_plugins`` namespace package on disk, which does
    not see them in a (default, strict) editable install: importing them works everywhere.
    Importing also stores their configs (``hydra/sweeper=ablate``, ``hydra/launcher=ablate_ray``).
    """
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # scans first: whatever discovery finds is kept as found
    from hydra_plugins.ablate_sweeper.ray_launcher import AblateRayLauncher
    from hydra_plugins.ablate_sweeper.sweeper import AblateSweeper

    for plugin in (AblateSweeper, AblateRayLauncher):
        if f"{plugin.__module__}.{plugin.__name__}" not in plugins.class_name_to_class:
            plugins.register(plugin)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Reject values that would waste a run or fail deep inside torch with an opaque message."""
    lr = cfg.get("lr")
    _require(
        isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
        f"lr={lr!r} is not a positive number; the paper's grid is lr=0.25,0.1,0.05,0.01",
    )
    seed = cfg.get("seed")
    _require(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
        f"seed={seed!r} must be a non-negative integer, e.g. seed=0 or seed=0,1,2 with -m",
    )
    batch = cfg.get("batch_size")
    _require(
        isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1,
        f"batch_size={batch!r} must be a positive integer, e.g. batch_size=128",
    )
    width = cfg.get("width")
    _require(
        isinstance(width, int | float) and not isinstance(width, bool) and width > 0,
        f"width={width!r} must be a positive number (1.0 is the paper's network)",
    )
    resume = cfg.get("resume_from")
    _require(
        resume is None or isinstance(resume, str),
        f"resume_from={resume!r} must be the path of a checkpoint (a run's checkpoints/last.ckpt)",
    )
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    _require(
        epochs is None or (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)),
        f"trainer.max_epochs={epochs!r} must be a positive integer (or -1 for no limit)",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def cell_of(cfg: DictConfig, choices: Mapping[str, Any], task_overrides: Sequence[str]) -> dict:
    """The values that identify a run in its grid, as the user typed them.

    Always the four study axes and ``seed``/``lr``; then every override of this job (a swept
    value, or a fixed one such as ``trainer.max_epochs=2``), so that runs made under different
    settings can never be mistaken for the same cell.
    """
    cell: dict[str, Any] = {key: choices.get(key) for key in GROUP_CELL_KEYS}
    cell["seed"] = cfg.seed
    cell["lr"] = cfg.lr
    for override in task_overrides:
        key, _, raw = override.partition("=")
        key = key.lstrip("+~")
        if key in cell or key.startswith("hydra") or key in NOT_CELL_KEYS:
            continue
        if key in choices:
            cell[key] = choices[key]
        else:
            value = OmegaConf.select(cfg, key, default=raw)
            cell[key] = _plain(value)
    return cell


def config_id_of(cfg: DictConfig) -> str:
    """``records.config_id`` of a composed config (Hydra's node, if present, is left out)."""
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    return records.config_id(container)


def _key_of(override: str) -> str | None:
    if override.startswith(("+", "~", "-")) or "=" not in override:
        return None
    key = override.split("=", 1)[0]
    return None if key.startswith("hydra") or "@" in key else key


def unknown_key_hints(
    cfg: DictConfig, overrides: Sequence[str], groups: Sequence[str] = ()
) -> list[str]:
    """For each override whose key is neither a config group nor in ``cfg``, the closest keys."""
    hints = []
    for override in overrides:
        key = _key_of(override)
        if key is None or key in groups:
            continue
        if OmegaConf.select(cfg, key, default="__missing__") != "__missing__":
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig):
            continue
        valid = sorted(str(k) for k in node.keys())
        close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6)
        where = f"'{parent}'" if parent else "the top level"
        prefix = f"{parent}." if parent else ""
        hint = f"unknown config key '{key}'."
        if close:
            hint += " Did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?"
        hint += f" Valid keys in {where}: {', '.join(valid)}."
        hints.append(hint)
    return hints
