"""A sweep's grid: the product of its swept values, and the union of grids a sweep's variants add.

Overrides parsed by Hydra's ``parse_overrides`` (the sweeper's knows the config groups, for
``glob(...)``) are expanded as Hydra's basic sweeper does: a later override of a key replaces an
earlier one, each discrete sweep is an axis, the jobs are the product in the keys' first order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.errors import HydraException

Axes = list[tuple[str, list[str]]]  # each key and the values it takes, in the grid's order


def values_of(overrides: Sequence[Any]) -> dict[str, list[str]]:
    """Each key of parsed ``overrides`` and its values (one for a plain override)."""
    found: dict[str, list[str]] = {}
    for override in overrides:
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise HydraException(f"the ablate sweeper does not support sweep type: "
                                 f"{override.value_type.name} ({override.input_line})")
        found[override.get_key_element()] = (
            [str(value) for value in override.sweep_string_iterator()]
            if override.is_sweep_override() else [override.get_value_element_as_str()])
    return found


def union(parse: Callable[[list[str]], list[Any]], params: Mapping[str, str],
          variants: Sequence[Mapping[str, str]], arguments: Sequence[str]
          ) -> tuple[list[list[str]], Axes]:
    """The jobs of the grid ``params`` + ``arguments``, and of each variant (``params`` with
    some axes replaced), each job once; and every value each key takes somewhere in them."""
    jobs: list[list[str]] = []
    axes: dict[str, list[str]] = {}
    for variant in [{}, *variants]:
        found = values_of(parse([*(f"{k}={v}" for k, v in {**params, **variant}.items()),
                                 *arguments]))
        jobs += [job for job in ([f"{k}={v}" for k, v in zip(found, values, strict=True)]
                                 for values in itertools.product(*found.values()))
                 if job not in jobs]
        for key, values in found.items():
            known = axes.setdefault(key, [])
            known += [value for value in values if value not in known]
    return jobs, list(axes.items())
