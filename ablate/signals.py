"""Signals that stop a run: each becomes :class:`ablate.errors.Interrupted`, with its exit code.

Left to Lightning, SIGTERM (``kill``, ``docker stop``, a CI timeout) ended training with a
``SystemExit(None)``, exit 0: every scheduler took the stopped job for a success. Here each
signal raises one exception that the record notes as ``interrupted`` and the entry point turns
into 143, 130 or 129. A handler somebody else installed first is left alone: submitit (SLURM)
bypasses SIGTERM so that a preempted job can be requeued.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ablate.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise ``Interrupted``; restored after."""
    previous = {}
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler, None):
            try:
                previous[signum] = signal.signal(signum, _raise)
            except ValueError:  # not the main thread (a Ray worker's thread): leave it be
                continue
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
