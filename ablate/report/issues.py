"""What the loader set aside, guessed or merged, by kind: the report prints all of it with counts.

Nothing is dropped silently: unreadable records, W&B folders that cannot be read, job folders
without a record (runs in progress, or killed), duplicate runs of a cell and mixed protocols
each have a kind here. ``INFO`` kinds are bookkeeping, not warnings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ablate.rows import WITHOUT_METRICS  # noqa: F401 - a kind of its own, named where rows are made

UNREADABLE_RECORDS = "unreadable records (skipped)"
UNREADABLE_WANDB = "unreadable W&B runs (skipped)"
NOT_ABLATE = "W&B runs not made by ablate (no cell in their config; skipped)"
IN_PROGRESS = "runs in progress (job folder, no record yet)"
KILLED = "runs killed before their record (interrupted: a relaunch resumes them)"
DUPLICATES = "duplicate runs of a cell (older ones superseded)"
VARIANTS = "settings varied within a table cell (each value a row of its own)"
MIXED_DATASETS = "datasets mixed (one table each)"
DATA_SOURCES = "a dataset read from shards of different sources (one table per source)"
MIXED_PROTOCOLS = "protocols mixed (one section each)"
WANDB_DISAGREES = "W&B runs that disagree with their record"
WANDB_MIRRORED = "W&B runs described by a record (the record is used)"
WANDB_IGNORED = "W&B run folders not read (--wandb-offline none)"
SEED_RANGES = "seeds=auto sweeps with different seed ranges (claims decided at the default)"
INFO = (WANDB_MIRRORED, WANDB_IGNORED, VARIANTS)


@dataclass
class Issues:
    """Counts and messages per kind."""

    counts: Counter = field(default_factory=Counter)
    messages: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.messages.append((kind, message))

    def sorted_messages(self) -> list[tuple[str, str]]:
        return sorted(set(self.messages))
