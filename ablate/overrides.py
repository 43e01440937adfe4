"""Command-line overrides read with Hydra's own parser, never split by hand.

``key=value``, ``+key=value``, ``~key``, ``key='a=b'``, ``key=[1,2]`` and sweeps
(``key=1,2``) mean what Hydra says they mean only if Hydra parses them: a hand-written
``split("=")`` gets quoting and nested values wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


@lru_cache(maxsize=1)
def _parser() -> OverridesParser:
    return OverridesParser.create()


@lru_cache(maxsize=4096)
def parse(override: str) -> Override:
    """One override, parsed (cached: a sweep reads the same strings for every job)."""
    return _parser().parse_override(str(override))


def key(override: str) -> str:
    """The override's key without ``+``, ``++`` or ``~``: ``+lr=0.1`` -> ``lr``."""
    return parse(override).key_or_group


def value(override: str) -> str | None:
    """The override's value as written on the command line (``0.1``, ``'a=b'``, ``1,2``);
    None for ``~key``."""
    parsed = parse(override)
    return None if parsed.is_delete() and parsed.value() is None else parsed.get_value_string()


def keys(overrides: Iterable[str]) -> list[str]:
    """The keys of a list of overrides, in order."""
    return [key(o) for o in overrides]


def find(overrides: Iterable[str], wanted: str) -> str | None:
    """The value ``wanted`` is given in ``overrides`` (the last one wins, as in Hydra)."""
    found = None
    for override in overrides:
        if key(override) == wanted:
            found = value(override)
    return found


def without(overrides: Iterable[str], unwanted: Iterable[str]) -> list[str]:
    """``overrides`` less those whose key is one of ``unwanted``."""
    drop = set(unwanted)
    return [str(o) for o in overrides if key(o) not in drop]
