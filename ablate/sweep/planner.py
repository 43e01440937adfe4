"""From a grid to planned runs: each job composed once, matched to earlier runs by config id,
checked, and priced; then the cells another launch holds, and the runs made by other code.
Nothing here launches or writes a run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ablate import config as config_lib
from ablate import identity, provenance
from ablate import overrides as overrides_lib
from ablate.errors import ConfigError, SpecError
from ablate.status import Action, Status
from ablate.sweep import estimate, index, lease, state
from ablate.sweep.grid import Axes
from ablate.sweep.plan import PlannedRun

log = logging.getLogger(__name__)


def plan_runs(grid: Sequence[Sequence[str]], axes: Axes, root: Path,
              compose: Callable[[Sequence[str]], DictConfig], resume: bool = True,
              rerun_diverged: bool = False, lease_timeout_hours: float = lease.DEFAULT_TIMEOUT_HOURS
              ) -> tuple[list[PlannedRun], str]:
    """Every job of ``grid`` as a planned run, and the note on how its time was estimated.
    ``compose`` gives a job's config (the sweeper's composition, without Hydra's node)."""
    past = index.past_runs(root) if resume else {}
    finished = [run.measured for runs in past.values() for run in runs
                if run.state == Status.FINISHED and run.measured]
    finished, elsewhere = estimate.this_machine(finished)
    factors = estimate.calibration(finished)
    swept = {key for key, values in axes if len(values) > 1}
    runs, kinds = [], set()
    # Jobs that differ only in their replicate values (seed, lr) do the same work: the estimate
    # reads the network, data sizes and trainer budget, none derived from those.
    works: dict[tuple[str, ...], estimate.Work] = {}
    for number, overrides in enumerate(grid):
        cfg = compose(overrides)
        label = " ".join(o for o in overrides
                         if overrides_lib.parse(o).get_key_element() in swept) or "(no axes)"
        config_id = identity.config_id(cfg)
        decision = state.decide(past.get(config_id, []), rerun_diverged)
        run = PlannedRun(number, list(overrides), label, config_id, decision)
        runs.append(run)
        if "network" not in cfg:  # another Hydra app's job (Hydra's sweeper tests): not priced
            continue
        try:
            config_lib.validate(cfg)
            same_work = tuple(overrides_lib.without(overrides, identity.REPLICATE_KEYS))
            if same_work not in works:
                works[same_work] = estimate.work_of(cfg)
            work = works[same_work]
        except (ConfigError, SpecError) as error:
            run.problem = str(error)
        except Exception as error:  # an estimate is best effort, never a reason to stop
            log.warning("no time estimate for job #%d: %s", number, error)
        else:
            kinds.add(work.device)
            factor = factors.get(work.device) or 1.0
            run.seconds = work.seconds() * factor
            run.device_seconds = work.device_seconds() * factor
    if resume:  # the cells another launch holds right now: named in the plan
        held = lease.held_elsewhere(root, [run.config_id for run in runs if run.decision.action
                                           != Action.SKIP], lease_timeout_hours)
        for run in runs:
            run.held_by = held[run.config_id].describe() if run.config_id in held else None
    note = "/".join(sorted(kinds)) or "cpu"
    if any(kind in factors for kind in kinds):
        note += f"; calibrated on {len(finished)} finished runs of this machine"
    else:
        note += "; built-in throughput, not yet calibrated"
    if elsewhere:
        note += f"; {elsewhere} finished runs of other machines not used"
    return runs, note


def made_by_other_code(record: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether ``record`` was made by other code than ``current`` (``provenance.git_state()``);
    unknown on either side (no git) is never other code."""
    if not record or not current.get("commit") or not record.get("git_commit"):
        return False
    if record.get("git_source") and current.get("source"):
        return record["git_source"] != current["source"]
    return record["git_commit"] != current["commit"] or bool(current.get("dirty"))


def _code(commit: Any, dirty: Any) -> str:
    return str(commit)[:7] + ("+edits" if dirty else "")


def mark_other_code(runs: Sequence[PlannedRun], current: Mapping[str, Any] | None = None,
                    rerun: bool = False) -> str | None:
    """The plan's line about finished runs of other code than ``current`` (this checkout's), as
    their records' ``git_commit`` and ``git_source`` (the commit plus any uncommitted edit) say;
    None if there are none. A run is matched by its config, which says nothing of the code that
    trained it: without this line, a relaunch after a commit would skip every finished run
    without a word. They are still skipped (most commits change no result) unless ``rerun``."""
    current = provenance.git_state() if current is None else current
    other = [run for run in runs if run.decision.action == Action.SKIP and run.decision.previous
             and made_by_other_code(run.decision.previous.code, current)]
    if not other:
        return None
    codes = Counter(_code(code.get("git_commit"), code.get("git_dirty"))
                    for code in (run.decision.previous.code or {} for run in other))
    where = ", ".join(f"{code} ({count})" for code, count in sorted(codes.items()))
    said = (f"  note: {len(other)} finished runs came from other code ({where}; this is "
            f"{_code(current.get('commit'), current.get('dirty'))}): ")
    if not rerun:
        return said + "still skipped; hydra.sweeper.rerun_stale=true reruns them"
    for run in other:
        run.decision = replace(run.decision, action=Action.RUN,
                               reason="finished with other code; rerun_stale=true")
    return said + "rerun (hydra.sweeper.rerun_stale=true)"
