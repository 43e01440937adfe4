"""What a run prints: one switch (``verbose``, default false), and every filter in one place.

A sweep of 27 short runs used to print ~55 lines per job besides its progress bars (W&B's
footer, Lightning's tips, the same warnings on every run); redirected to a file, the bars' carriage
returns made a 1,500-line log. Quiet (the default) keeps what a person acts on: errors, warnings
that are news, one line per epoch for a single run, and nothing per job in a multirun, where the
sweeper prints one ``[k/N]`` line per job instead. ``verbose=true`` shows everything again.

Known warnings are filtered here, each with the reason it carries no information for this
project; anything not listed still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (regular expression on the message, why it is noise here)
KNOWN_WARNINGS = (
    # torch deprecated LeafSpec; Lightning's own pytree helper still uses it. Nothing to fix on
    # our side; it goes when Lightning updates.
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning internals, torch>=2.9"),
    # Short runs (the quick preset, tests) have fewer batches than Lightning's logging interval:
    # the metrics this project uses are logged per epoch, so the interval is irrelevant.
    (r"The number of training batches \(\d+\) is smaller than the logging interval",
     "per-epoch metrics only"),
    # The data is one tensor on the device (ablate.data.module); worker processes would copy it.
    (r".*does not have many workers which may be a bottleneck", "on-device data, no workers"),
)

# Loggers whose INFO lines repeat on every run of a sweep: "GPU available: False", "TPU
# available", "💡 Tip: ... litlogger". Their warnings still show.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")
ABLATE_LOGGER = "ablate"


def interactive() -> bool:
    """Whether a person watches stdout: a redrawn progress bar only helps on a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams (Ray workers, pytest)
        return False


def filter_known_warnings() -> None:
    """Hide the warnings listed in ``KNOWN_WARNINGS`` (in this process, from now on)."""
    for pattern, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def configure(verbose: bool, multirun: bool) -> None:
    """Set what this process prints for one run; called by the runner before anything else.

    In a quiet multirun the job's own INFO lines (its network, its estimate, its final line)
    go only to its log file (Hydra's ``<job dir>/<task>.log``), not to the console.
    """
    if verbose:
        return
    filter_known_warnings()
    # W&B's banner, its deprecation notes and its ~30-line footer on every run say what the
    # record says; WANDB_SILENT is W&B's documented switch, read by wandb.init and its printer.
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if multirun:
        quiet_console_handlers(logging.getLogger())


def quiet_console_handlers(root: logging.Logger) -> None:
    """Raise the console handlers of ``root`` to WARNING; its file handlers keep everything."""
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
