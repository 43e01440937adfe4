"""Compose a sweep's jobs at the cost of their distinct config compositions, not of their number.

Hydra's ``load_sweep_config`` composes every job from scratch: it builds the defaults list, loads
and merges every YAML file, then applies the job's value overrides (``lr=0.1``, ``seed=3``,
``trainer.max_epochs=2``) with ``OmegaConf.update``. The first part depends only on the
overrides that pick config-group options or change the defaults (``model=A``, ``+sweep=table3``,
``~callbacks``, ``hydra.*``); in a grid of seeds and learning rates it is the same for most jobs
and takes nearly all the time (about 0.14 s a job on a 2-core machine).

:class:`JobComposer` composes once per distinct tuple of those structural overrides and applies
each job's plain value overrides to a copy, exactly as Hydra would (same parser, same
``OmegaConf.update(..., merge=True)`` on a struct config), then writes the bookkeeping Hydra
derives from the overrides (``hydra.overrides.task``, ``hydra.job.override_dirname``). The result
equals a full composition (``tests/test_sweep_scale.py`` checks every job of the presets); an
override it cannot apply that way is handed to a full composition, whose error is Hydra's own.

The leading underscore keeps Hydra's plugin scan from executing this module (see
``_hydra_internals``).
"""

# No `from __future__ import annotations`: see sweeper.py.
import pickle
from collections.abc import Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.ablate_sweeper._hydra_internals import get_overrides_dirname


class JobComposer:
    """The composed config of each job of a sweep, each composed in full at most once."""

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader = loader
        self.master = master
        self.parser = OverridesParser.create(config_loader=loader)
        # Each distinct composition, pickled with and without its ``hydra`` node: unpickling
        # copies a config about ten times faster than copy.deepcopy (1 ms against 11 ms for
        # this project's), flags and nodes included.
        self.bases: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        self.full_compositions = 0  # Hydra compositions run: the cost that matters
        self._is_group: dict[str, bool] = {}
        # Hydra's override grammar is slow to run (about 5 ms a job); a grid repeats its values.
        self._parsed: dict[str, Override] = {}

    def _parse(self, overrides: Sequence[str]) -> list[Override]:
        for line in overrides:
            if line not in self._parsed:
                [self._parsed[line]] = self.parser.parse_overrides([line])
        return [self._parsed[line] for line in overrides]

    def _group_exists(self, key: str) -> bool:
        # Hydra's own test (defaults_list.Overrides): a key naming a config group is a choice.
        if key not in self._is_group:
            self._is_group[key] = any(source.is_group(key)
                                      for source in self.loader.get_sources())
        return self._is_group[key]

    def is_plain_value(self, override: Override) -> bool:
        """Whether ``override`` only sets a value after composition (``lr=0.1``), so that it can
        be applied to a copy; anything that may change which files are composed is not."""
        return (override.type == OverrideType.CHANGE
                and override.package is None
                and not override.is_sweep_override()
                and not override.is_hydra_override()
                and "/" not in override.key_or_group
                and not self._group_exists(override.key_or_group))

    def _full(self, overrides: list[str]) -> DictConfig:
        self.full_compositions += 1
        return self.loader.load_sweep_config(self.master, overrides)

    def _base(self, structural: tuple[str, ...], with_hydra: bool) -> DictConfig:
        if structural not in self.bases:
            cfg = self._full(list(structural))
            whole = pickle.dumps(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            self.bases[structural] = whole, pickle.dumps(cfg)
        return pickle.loads(self.bases[structural][0 if with_hydra else 1])

    def compose(self, overrides: Sequence[str], with_hydra: bool = True) -> DictConfig:
        """What ``load_sweep_config(master, overrides)`` returns, from a shared composition.

        ``with_hydra=False`` leaves out the ``hydra`` node (Hydra's settings for the job, which
        ``identity.config_id`` ignores too) and takes half the time; the rest is the same.
        """
        parsed = self._parse(overrides)
        structural = tuple(o.input_line for o in parsed if not self.is_plain_value(o))
        cfg = self._base(structural, with_hydra)
        try:
            for override in parsed:  # as Hydra's ConfigLoaderImpl._apply_overrides_to_config
                if self.is_plain_value(override):
                    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except Exception:  # noqa: BLE001 - Hydra's composition reports it in its own words
            cfg = self._full(list(overrides))
            if not with_hydra:
                with open_dict(cfg):
                    del cfg["hydra"]
            return cfg
        if with_hydra:  # what Hydra's composition derives from the job's overrides
            task = [o for o in parsed if not o.is_hydra_override()]
            naming = cfg.hydra.job.config.override_dirname
            with open_dict(cfg.hydra):
                cfg.hydra.overrides.task = [o.input_line for o in task]
                cfg.hydra.job.override_dirname = get_overrides_dirname(
                    overrides=task, kv_sep=naming.kv_sep, item_sep=naming.item_sep,
                    exclude_keys=naming.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg
