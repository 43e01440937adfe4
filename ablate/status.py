"""The one vocabulary of run states, shared by the record, the sweeper, the report and W&B.

A status is an enum member, never a string typed twice: a typo is an ``AttributeError`` at
import, not a state that silently matches nothing. ``StrEnum`` keeps the JSON of a record and
the text of a table exactly the words they were before.
"""

from __future__ import annotations

try:
    from enum import StrEnum
except ImportError:  # Python 3.10: the same behaviour, spelt out
    from enum import Enum

    class StrEnum(str, Enum):  # type: ignore[no-redef]
        __str__ = str.__str__
        __format__ = str.__format__


class Status(StrEnum):
    """What one run is: the first three are written in its record when it ends; the last two
    are read from disk for a run that left no record (``ablate.sweep.state``)."""

    FINISHED = "finished"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # started, then stopped by a signal or killed before its record
    RUNNING = "running"  # its process is alive: another launch is still at it


# What a record may say when its run ended (the run leaves it whatever stopped it).
ENDED = (Status.FINISHED, Status.FAILED, Status.DIVERGED)


class Outcome(StrEnum):
    """What one job of a sweep came to in this launch: its summary line and ``sweep.json``."""

    FINISHED = Status.FINISHED.value
    FAILED = Status.FAILED.value
    DIVERGED = Status.DIVERGED.value
    SKIPPED = "skipped"  # an earlier launch finished (or diverged) it
    ELSEWHERE = "elsewhere"  # another live launch holds its cell


class Action(StrEnum):
    """What a launch does with one job of the grid."""

    RUN = "run"
    RESUME = "resume"
    SKIP = "skip"
