"""What a run prints: one switch (``verbose``, default false), and every filter in one place.

A sweep of 27 short runs used to print ~55 lines per job besides its progress bars (W&B's
footer, Lightning's tips, the same warnings on every run). Quiet (the default) keeps what a
person acts on: errors, warnings that are news, one line per epoch for a single run, and nothing
per job in a multirun, where the sweeper prints one ``[k/N]`` line per job instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (regular expression on the message, why it carries no information here); others still show
KNOWN_WARNINGS = (
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
     "torch>=2.9 deprecated LeafSpec, Lightning's pytree helper still uses it"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval",
     "short runs (quick preset, tests): metrics are logged per epoch, not per interval"),
    (r".*does not have many workers which may be a bottleneck",
     "the data is one tensor on the device (ablate.data.module): workers would copy it"),
    (r"Your `IterableDataset` has `__len__` defined",
     "dataset=imagenet's shard streams give each worker its own shards and steps "
     "(ablate/data/shards.py): their length is exact"),
    (r"The `srun` command is available on your system but is not used",
     "a local run on a machine that has SLURM's tools: running locally is what was asked"),
)

# Loggers whose INFO lines repeat on every run of a sweep: "GPU available: False", "TPU
# available", "💡 Tip: ... litlogger". Their warnings still show.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")


def interactive() -> bool:
    """Whether a person watches stdout: a redrawn progress bar only helps on a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams (Ray workers, pytest)
        return False


def configure(verbose: bool, multirun: bool) -> None:
    """Set what this process prints for one run, before anything else; in a quiet multirun the
    job's INFO lines go only to its log file (Hydra's ``<job dir>/<task>.log``)."""
    if verbose:
        return
    for pattern, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # W&B's banner, its deprecation notes and its ~30-line footer on every run say what the
    # record says; WANDB_SILENT is W&B's documented switch, read by wandb.init and its printer.
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if multirun:
        console_warnings_only()


def console_warnings_only() -> None:
    """The terminal gets warnings and errors only, the log files everything: a job of a
    multirun, and every process but the first of a data-parallel run (its lines repeat the
    first's)."""
    for handler in logging.getLogger().handlers:  # console ones to WARNING, files keep all
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
