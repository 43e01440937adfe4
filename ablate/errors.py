"""Every exception this project raises on purpose, in one place.

Callers catch by meaning: the runner turns the ``CONFIG_ERRORS`` into a one-line message and
no record, a :class:`Diverged` into a ``diverged`` record, anything else into a ``failed`` one.
No imports, so training, sweeps and report can all use it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the valid values, the fix."""


class SpecError(ValueError):
    """A layer spec that cannot describe a network (or not for the given input)."""


class SelectionError(ConfigError):
    """A final stage whose selection sweep is missing, incomplete, or of another dataset or
    protocol: the message names what."""


class DatasetError(RuntimeError):
    """A dataset that is missing, corrupt or does not match its config; the message says the fix."""


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written (a full disk, a read-only one); the one before it,
    if any, is intact, and the message says where to make room."""


class RecordError(ValueError):
    """A result file that cannot be read as a record (truncated, corrupt, wrong schema)."""


class Diverged(RuntimeError):
    """The training loss stopped being a finite number: the run is recorded as diverged."""


class RunFailed(RuntimeError):
    """Raised after the record of a failed or diverged run is safely on disk."""


class InvalidConfig(RuntimeError):
    """A config problem in one job of a sweep: reported in the sweep's summary, no record."""


# Errors that mean "this config cannot run": reported in one line, no record is written.
CONFIG_ERRORS = (ConfigError, SpecError, DatasetError)


class SweepFailed(SystemExit):
    """Raised after the summary when runs failed: the command exits with status 1."""

    def __init__(self) -> None:
        super().__init__(1)


class SweepIncomplete(SystemExit):
    """Raised after the summary when no run failed but some cells are held by another launch of
    the same sweep (``ablate.sweep.lease``): status 3, so a wrapper can wait and relaunch."""

    def __init__(self) -> None:
        super().__init__(3)


class SweepInvalid(SystemExit):
    """Raised before launching when jobs of the grid have an invalid config: status 2."""

    def __init__(self) -> None:
        super().__init__(2)


class Interrupted(BaseException):
    """The job was stopped from outside by a signal (SIGTERM, SIGINT, SIGHUP).

    A ``BaseException``, so that no ``except Exception`` on the way up swallows it: the command
    always ends with ``exit_code``, 128 + the signal's number (143, 130, 129).
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.name}")
