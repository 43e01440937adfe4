"""Compose a sweep's jobs at the cost of their distinct config compositions, not of their number.

Hydra's ``load_sweep_config`` composes every job from scratch (about 0.14 s a job on a 2-core
machine): the defaults list, every YAML file merged, then the job's value overrides (``lr=0.1``)
applied with ``OmegaConf.update``. All but the last step depend only on the overrides that pick
config-group options or change the defaults (``model=A``, ``+sweep=table3``, ``~callbacks``,
``hydra.*``), which most jobs of a grid share. :class:`JobComposer` composes once per distinct
tuple of those and applies each job's value overrides to a copy as Hydra does (same parser,
same ``OmegaConf.update(..., merge=True)``), without Hydra's own node, which the launcher composes
again for each job; ``tests/test_sweep_scale.py`` checks it against a full composition for every
job of the presets. An override it cannot apply so gets a full composition, and Hydra's error.

The leading underscore keeps Hydra's plugin scan from executing this module.
"""

# No `from __future__ import annotations`: see sweeper.py.
import pickle
from collections.abc import Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

from ablate import overrides as overrides_lib


class JobComposer:
    """The composed config of each job of a sweep, each composed in full at most once."""

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader = loader
        self.master = master
        # Each distinct composition, pickled: unpickling copies a config about ten times faster
        # than copy.deepcopy (1 ms against 11 ms for this project's), flags and nodes included.
        self.bases: dict[tuple[str, ...], bytes] = {}
        self.full_compositions = 0  # Hydra compositions run: the cost that matters
        self._is_group: dict[str, bool] = {}

    def is_plain_value(self, override: Override) -> bool:
        """Whether ``override`` only sets a value after composition (``lr=0.1``), so that it can
        be applied to a copy; anything that may change which files are composed is not."""
        key = override.key_or_group
        if (override.type != OverrideType.CHANGE or override.package is not None or "/" in key
                or override.is_sweep_override() or override.is_hydra_override()):
            return False
        # Hydra's own test (defaults_list.Overrides): a key naming a config group is a choice.
        if key not in self._is_group:
            self._is_group[key] = any(source.is_group(key) for source in self.loader.get_sources())
        return not self._is_group[key]

    def _full(self, overrides: Sequence[str]) -> DictConfig:
        self.full_compositions += 1
        cfg = self.loader.load_sweep_config(self.master, list(overrides))
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """What ``load_sweep_config(master, overrides)`` returns, less its ``hydra`` node (which
        ``identity.config_id`` ignores too), from a shared composition."""
        # Hydra's grammar is slow to run (about 5 ms a job): ablate.overrides caches each line.
        parsed = [overrides_lib.parse(line) for line in overrides]
        structural = tuple(o.input_line for o in parsed if not self.is_plain_value(o))
        if structural not in self.bases:
            self.bases[structural] = pickle.dumps(self._full(structural))
        cfg = pickle.loads(self.bases[structural])
        try:
            for override in parsed:  # as Hydra's ConfigLoaderImpl._apply_overrides_to_config
                if self.is_plain_value(override):
                    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except Exception:  # noqa: BLE001 - Hydra's composition reports it in its own words
            return self._full(overrides)
        return cfg
