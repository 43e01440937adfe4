"""What a composed config may hold, beyond what Hydra itself checks: the checks a YAML file
cannot express (positive learning rates, Trainer argument names, ...) and hints for misspelt
keys. Nothing of sweeps, records or the report.

The ``trainer`` node holds only what the project sets (``conf/trainer/*.yaml``), so a Lightning
upgrade never changes a run's config or its ``config_id``; any other Trainer argument is still a
plain ``trainer.<arg>=...`` override (:func:`register`), checked against ``Trainer``'s signature.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import math
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from ablate import overrides
from ablate.errors import CONFIG_ERRORS, ConfigError, InvalidConfig

CONFIG_MODULE = "ablate.conf"
CONFIG_NAME = "config"
# Trainer arguments that the runner builds itself from other config groups.
MANAGED_TRAINER_ARGS = ("logger", "callbacks", "default_root_dir")


def register() -> None:
    """Store ``trainer/open``, the base of ``conf/trainer/*.yaml``: an empty node that accepts new
    keys, so ``trainer.gradient_clip_val=1.0`` works without Hydra's ``+`` (no YAML can set that
    flag). Called once by the entry point and by tests that compose configs; idempotent."""
    from hydra.core.config_store import ConfigStore

    node = OmegaConf.create({})
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(group="trainer", name="open", node=node)


@functools.cache
def trainer_arguments() -> tuple[str, ...]:
    """The keyword arguments of ``pytorch_lightning.Trainer`` that a config may set."""
    import pytorch_lightning as pl

    names = inspect.signature(pl.Trainer.__init__).parameters
    return tuple(sorted(n for n in names if n != "self" and n not in MANAGED_TRAINER_ARGS))


def _positive_number(value: object) -> bool:
    """A finite number above zero (not a bool, which Python counts as an int)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _integer(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def did_you_mean(leaf: str, valid: Sequence[str], prefix: str = "") -> str:
    """`` Did you mean 'trainer.max_epochs'?`` for the closest valid keys; empty if none is."""
    close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6)
    return (" Did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?") if close else ""


def validate_trainer(trainer: DictConfig) -> None:
    """Every key of ``trainer`` must be an argument of ``Trainer`` (``_target_`` aside)."""
    valid = trainer_arguments()
    for key in trainer:
        if key == "_target_" or key in valid:
            continue
        if key in MANAGED_TRAINER_ARGS:
            raise ConfigError(f"trainer.{key} is built by ablate from its own config group "
                              f"({key} -> the '{key}' group); set it there instead")
        hint = did_you_mean(str(key), valid, "trainer.")
        raise ConfigError(f"unknown config key 'trainer.{key}': not an argument of "
                          f"pytorch_lightning.Trainer.{hint} Valid keys: {', '.join(valid)}.")


def validate(cfg: DictConfig) -> None:
    """Reject values that would waste a run or fail deep inside torch with an opaque message."""
    lr, seed, batch, width = (cfg.get(key) for key in ("lr", "seed", "batch_size", "width"))
    p = OmegaConf.select(cfg, "downsample.p", default=None)
    resume = cfg.get("resume_from")
    held_out = OmegaConf.select(cfg, "dataset.val_size", default=None)
    val_batches = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None)
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    checks = (
        (_positive_number(lr),
         f"lr={lr!r} is not a positive number; the paper's grid is lr=0.25,0.1,0.05,0.01"),
        (_integer(seed, 0),
         f"seed={seed!r} must be a non-negative integer, e.g. seed=0 or seed=0,1,2 with -m"),
        (_integer(batch, 1),
         f"batch_size={batch!r} must be a positive integer, e.g. batch_size=128"),
        (_positive_number(width),
         f"width={width!r} must be a positive number (1.0 is the paper's network)"),
        (p is None or _positive_number(p),
         f"downsample.p={p!r} must be a positive, finite number (1 = the window's sum, 2 = its "
         "L2 norm, larger p comes closer to the max); max-pooling, p = infinity, is "
         "downsample=pool"),
        (resume is None or isinstance(resume, str),
         f"resume_from={resume!r} must be the path of a run's directory or of a checkpoint (a "
         "run's checkpoints/last.ckpt)"),
        (held_out not in (0, 0.0) or val_batches in (0, 0.0),
         "dataset.val_size=0 holds out no validation images, so there is nothing to validate "
         "on: add trainer.limit_val_batches=0 (train on every image, as the final stage does: "
         "+sweep=table3_final), or hold some out (dataset.val_size=0.1)"),
        (epochs is None or (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)),
         f"trainer.max_epochs={epochs!r} must be a positive integer (or -1 for no limit)"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if isinstance(cfg.get("trainer"), DictConfig):
        validate_trainer(cfg.trainer)


def unknown_key_hints(cfg: DictConfig, given: Sequence[str],
                      groups: Sequence[str] = ()) -> list[str]:
    """For each override whose key is neither a config group nor in ``cfg``, the closest keys."""
    hints = []
    for override in given:
        if override.startswith(("+", "~", "-")) or "=" not in override:
            continue
        try:
            key = overrides.key(override)
        except Exception:  # noqa: BLE001 - Hydra reports an override it cannot parse itself
            continue
        if key.startswith("hydra") or "@" in key or key in groups:
            continue
        if OmegaConf.select(cfg, key, default="__missing__") != "__missing__":
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig):
            continue
        if parent == "trainer" and leaf in trainer_arguments():
            continue  # the open trainer node takes any of Lightning's Trainer arguments
        valid = sorted(str(k) for k in node.keys())
        prefix = f"{parent}." if parent else ""
        where = f"'{parent}'" if parent else "the top level"
        hints.append(f"unknown config key '{key}'.{did_you_mean(leaf, valid, prefix)} "
                     f"Valid keys in {where}: {', '.join(valid)}.")
    return hints


def key_hints(arguments: list[str]) -> list[str]:
    """After Hydra rejected an override, which key was probably meant."""
    import importlib.resources

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    given = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = [overrides.parse(a) for a in given]
    except Exception:
        return []
    conf_root = importlib.resources.files(CONFIG_MODULE)
    groups = sorted(entry.name for entry in conf_root.iterdir() if entry.is_dir())
    choices = [f"{o.key_or_group}={next(iter(o.sweep_string_iterator()))}"
               if o.is_sweep_override() else f"{o.key_or_group}={o.get_value_element_as_str()}"
               for o in parsed if o.key_or_group in groups and not (o.is_add() or o.is_delete())]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=choices)
    except Exception:
        return []
    return unknown_key_hints(cfg, given, groups)


def _discard(output_dir: Path, job_name: str) -> None:
    """Remove a rejected run's directory if it holds only what Hydra wrote before the run began
    (``.hydra/``, the job's log): a folder there would look like a run to the report."""
    hydra_files = {".hydra", f"{job_name}.log"}
    with contextlib.suppress(OSError):  # best effort: what is left is only Hydra's own files
        if output_dir.is_dir() and {p.name for p in output_dir.iterdir()} <= hydra_files:
            shutil.rmtree(output_dir)


def reject(error: Exception, multirun: bool, output_dir: Path, job_name: str) -> NoReturn:
    """A config that cannot run is not a run: one line, no record, no folder, exit 2 (a sweep
    goes on)."""
    problem: BaseException | None = error
    while problem is not None and not isinstance(problem, CONFIG_ERRORS):
        problem = problem.__cause__  # Hydra wraps errors raised while instantiating
    if problem is None:
        raise error
    print(f"ablate: invalid config: {problem}", file=sys.stderr)
    _discard(output_dir, job_name)
    raise (InvalidConfig(f"invalid config: {problem}") if multirun else SystemExit(2)) from None


def exit_for(stop: SystemExit) -> SystemExit:
    """The exit the command ends with: Hydra exits 1 for a config it cannot compose
    (``model=D``, a misspelt key), the same kind of problem this project rejects with 2."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    composition = (ConfigCompositionException, MissingConfigException, OverrideParseException)
    # Hydra 1.3's run_and_report prints the error and calls sys.exit(1): the exception it
    # caught is the SystemExit's context, the only place Hydra leaves it.
    return SystemExit(2) if stop.code == 1 and isinstance(stop.__context__, composition) else stop


SWEEP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def sweep_name_problem(name: Any) -> str | None:
    """What is wrong with ``sweep_name=name``; None when it is a valid folder name."""
    if isinstance(name, str) and SWEEP_NAME.fullmatch(name):
        return None
    return (f"sweep_name={name!r} is not a folder name: use a single path component of "
            "letters, digits, '.', '_' and '-', not starting with '.' (e.g. sweep_name=table3)")


def values_given(arguments: Sequence[str], wanted: str) -> Iterator[tuple[int, Any]]:
    """Where ``wanted=...`` (or ``+wanted=...``) is among command-line arguments, and its parsed
    value; an override Hydra cannot parse is left for Hydra to report."""
    for index, argument in enumerate(arguments):
        if argument.lstrip("+").startswith(f"{wanted}="):
            try:
                value = overrides.parse(argument).value()
            except Exception:  # noqa: BLE001 - Hydra reports an override it cannot parse itself
                continue
            yield index, value


def check_sweep_name(arguments: Sequence[str]) -> None:
    """Refuse a bad ``sweep_name=`` on the command line, single runs included: Hydra makes
    ``sweeps/<sweep_name>/...`` before any of the run's code could check it."""
    for _, value in values_given(arguments, "sweep_name"):
        if problem := sweep_name_problem(value):
            raise ConfigError(problem)
