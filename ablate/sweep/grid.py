"""A sweep's grid: the product of its swept values, and the union of grids a sweep's variants add.

The overrides come parsed by Hydra's own ``OverridesParser`` (the sweeper passes its
``parse_overrides``, which knows the config groups for ``glob(...)``); this module expands them
as Hydra's basic sweeper does: a later override of a key replaces an earlier one, each discrete
sweep (``a=1,2``, ``range(...)``, ``choice(...)``, ``glob(...)``) is an axis, and jobs are the
cartesian product in the order the keys were first given.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

Axes = list[tuple[str, list[str]]]  # each key and the values it takes, in the grid's order


def values_of(overrides: Sequence[Override]) -> dict[str, list[str]]:
    """Each key and its values (one for a plain override); later overrides win."""
    found: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            found[key] = [override.get_value_element_as_str()]
        elif override.is_discrete_sweep():
            found[key] = [str(value) for value in override.sweep_string_iterator()]
        else:
            kind = override.value_type.name if override.value_type else "?"
            raise HydraException(f"the ablate sweeper does not support sweep type: {kind} "
                                 f"({override.input_line})")
    return found


def product(axes: Mapping[str, list[str]]) -> list[list[str]]:
    """Every job of one grid, as its ``key=value`` overrides."""
    return [[f"{key}={value}" for key, value in zip(axes, values, strict=True)]
            for values in itertools.product(*axes.values())]


def union(parse: Callable[[list[str]], list[Any]], params: Mapping[str, str],
          variants: Sequence[Mapping[str, str]], arguments: Sequence[str]
          ) -> tuple[list[list[str]], Axes]:
    """The jobs of the grid ``params`` + ``arguments``, and of each variant (``params`` with
    some axes replaced), each job once; and every value each key takes somewhere in them."""
    jobs: list[list[str]] = []
    axes: dict[str, list[str]] = {}
    for variant in [{}, *variants]:
        merged = {**params, **variant}
        found = values_of(parse([*(f"{k}={v}" for k, v in merged.items()), *arguments]))
        jobs += [job for job in product(found) if job not in jobs]
        for key, values in found.items():
            known = axes.setdefault(key, [])
            known += [value for value in values if value not in known]
    return jobs, list(axes.items())
