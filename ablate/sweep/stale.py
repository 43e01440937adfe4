"""Finished runs made by other code than this launch's: said in the plan, skipped or rerun.

A run is matched by its config (``config_id``), which says nothing of the code that trained it:
after a new commit, or an edit of ``ablate/spec.py``, a relaunch would skip every finished run
without a word. Each record keeps ``git_commit`` and ``git_source`` (the commit plus any
uncommitted edit of the source, ``records.git_state``); a finished run whose source differs
from this launch's is *stale*. The plan says how many and from which commits; they are still
skipped (results do not go stale by default: most commits change no result), unless
``hydra.sweeper.rerun_stale=true``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ablate.status import Action
from ablate.sweep.plan import PlannedRun


def made_by_other_code(record: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether ``record`` was made by other code than ``current`` (``records.git_state()``);
    unknown on either side (no git) is never stale."""
    if not record or not current.get("commit") or not record.get("git_commit"):
        return False
    if record.get("git_source") and current.get("source"):
        return record["git_source"] != current["source"]
    return record["git_commit"] != current["commit"] or bool(current.get("dirty"))


def _code(record: Mapping[str, Any]) -> str:
    return str(record.get("git_commit"))[:7] + ("+edits" if record.get("git_dirty") else "")


def mark(jobs: Sequence[PlannedRun], current: Mapping[str, Any], rerun: bool) -> str | None:
    """The plan's line about stale finished runs (None if there are none); with ``rerun`` their
    jobs are turned from skip into run."""
    stale = [job for job in jobs if job.decision.action == Action.SKIP and job.decision.previous
             and made_by_other_code(job.decision.previous.code, current)]
    if not stale:
        return None
    codes = Counter(_code(job.decision.previous.code or {}) for job in stale)
    now = str(current.get("commit"))[:7] + ("+edits" if current.get("dirty") else "")
    where = ", ".join(f"{code} ({count})" for code, count in sorted(codes.items()))
    if rerun:
        for job in stale:
            job.decision = replace(job.decision, action=Action.RUN,
                                   reason="finished with other code; rerun_stale=true")
        return (f"  note: {len(stale)} finished runs came from other code ({where}; this is "
                f"{now}): rerun (hydra.sweeper.rerun_stale=true)")
    return (f"  note: {len(stale)} finished runs came from other code ({where}; this is {now}): "
            "still skipped; hydra.sweeper.rerun_stale=true reruns them")
