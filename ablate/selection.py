"""The final stage's learning rates, read from the selection stage's records.

The paper chose each model's lr from {0.25, 0.1, 0.05, 0.01} on held-out data, then retrained
on all training images (pylearn2's maxout scripts). The final stage (``+sweep=table3_final
selection=<folder>``) retrains each model at the lr its selection sweep (``+sweep=table3``)
chose by the report's own rule (``ablate.stages.choose_lr``). The sweeper calls
:func:`final_grid` before planning (each job gets its lr, or the stage does not start); the
runner calls :func:`verify` (a final-stage run at another lr is refused). No torch, pandas or
scipy here.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import identity, rows, stages
from ablate import overrides as overrides_lib
from ablate.errors import SelectionError
from ablate.status import Status

SELECTED = "selected"  # the lr of a final-stage grid: each job's own, from the selection
DONE = (Status.FINISHED, Status.DIVERGED)  # a run that counts as an outcome of the selection
Run = dict[str, Any]  # a row of ``ablate.rows``


def _protocol(cfg: DictConfig) -> dict[str, Any]:
    """The protocol of a composed config (only the nodes that define it are resolved: the rest
    may hold ``${hydra:...}``, which resolves only inside a job)."""
    tops = {key.split(".")[0] for key in identity.PROTOCOL_KEYS}
    plain = {top: (OmegaConf.to_container(cfg[top], resolve=True)
                   if OmegaConf.is_config(cfg[top]) else cfg[top])
             for top in sorted(tops) if top in cfg}
    return identity.protocol_of(plain)


def _cell(cfg: DictConfig, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The job's axes as the report names them (``lppool p=4``)."""
    downsample = OmegaConf.to_container(cfg.downsample, resolve=True)
    return {"model": choices.get("model"), "dataset": choices.get("dataset"),
            "augmentation": choices.get("augmentation"),
            "downsample": stages.downsample_mode(choices.get("downsample"), downsample)}


def _where(cell: Mapping[str, Any]) -> str:
    return f"{cell['model']}/{cell['downsample']} ({cell['dataset']}, {cell['augmentation']})"


class Selection:
    """The runs of one selection sweep, loaded once, asked for one cell's lr at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not Path(path).exists():
            raise SelectionError(f"selection={path}: no such folder; pass the folder of the "
                                 "selection sweep (e.g. selection=sweeps/table3)")
        # the rows of the runs under path that count, as the report counts them; an unreadable
        # record or job folder is a missing run here (the report names it under Warnings)
        found = rows.discover([path])
        runs = [row for _, _, row in rows.read_records(found.records, lambda *_: None)]
        runs += rows.in_progress_rows(found.in_progress, lambda *_: None)
        replaced = rows.superseded(runs)
        self.runs = [run for position, run in enumerate(runs)
                     if position not in replaced and run["protocol_spec"] is not None]
        if not self.runs:
            raise SelectionError(f"selection={path} holds no runs (no result.json below it): "
                                 "it is not a sweep; run the selection stage first, e.g. "
                                 "python -m ablate.run -m +sweep=table3")
        self.specs = {run["study"]: stages.study_protocol(json.loads(run["protocol_spec"]))
                      for run in self.runs}

    def _comparable(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[Run]:
        """The selection-stage runs of this dataset and protocol, or why there are none."""
        runs = [run for run in self.runs if run["dataset"] == cell["dataset"]]
        if not runs:
            found = ", ".join(sorted({str(run["dataset"]) for run in self.runs
                                      if run["dataset"] is not None}))
            raise SelectionError(f"selection={self.path} holds runs on {found}, not on "
                                 f"{cell['dataset']}: point it at the selection sweep of "
                                 f"{cell['dataset']}")
        runs = [run for run in runs if run["stage"] == stages.SELECTION]
        if not runs:
            raise SelectionError(f"selection={self.path} holds only final-stage runs (no "
                                 "validation split, so no validation error to choose by); "
                                 "point it at the selection stage's sweep (+sweep=table3)")
        study = stages.protocol_id(stages.study_protocol(protocol))
        mine = [run for run in runs if run["study"] == study]
        if not mine:
            theirs = self.specs[Counter(run["study"] for run in runs).most_common(1)[0][0]]
            ours = stages.study_protocol(protocol)
            differences = ", ".join(
                f"{k} {json.dumps(theirs.get(k))} there, {json.dumps(ours.get(k))} here"
                for k in identity.PROTOCOL_KEYS
                if k not in stages.STAGE_KEYS and ours.get(k) != theirs.get(k))
            raise SelectionError(
                f"selection={self.path} was run under another protocol than this stage: "
                f"{differences}; run the final stage with the selection's settings, or select "
                "again with these")
        return mine

    def _mine(self, cell: Mapping[str, Any], runs: list[Run]) -> list[Run]:
        return [run for run in runs
                if all(run[key] == cell[key] for key in ("model", "downsample", "augmentation"))]

    def missing(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[str]:
        """The selection's runs this cell still lacks: one line per (lr, seed) of the grid that
        the comparable runs' lrs and seeds make."""
        runs = self._comparable(cell, protocol)
        mine = self._mine(cell, runs)
        lrs = sorted({run["lr"] for run in runs if run["lr"] is not None
                      and not math.isnan(run["lr"])})
        seeds = sorted({run["seed"] for run in runs if run["seed"] is not None})
        lines = []
        for lr in lrs:
            for seed in seeds:
                states = {run["status"] for run in mine if run["lr"] == lr and run["seed"] == seed}
                if not states & set(DONE):
                    state = "/".join(sorted(states)) or "no run"
                    lines.append(f"{_where(cell)} lr {lr:g} seed {seed} ({state})")
        return lines

    def chosen_lr(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> float:
        """The lr the report chooses for this cell; ``SelectionError`` if it cannot yet."""
        missing = self.missing(cell, protocol)
        if missing:
            raise SelectionError(self._incomplete(missing))
        mine = self._mine(cell, self._comparable(cell, protocol))
        chosen = stages.choose_lr(stages.lr_counts(mine))
        if chosen is None:
            raise SelectionError(f"selection={self.path}: no run of {_where(cell)} finished at "
                                 "any lr (all failed or diverged): there is no lr to retrain at")
        return float(chosen["lr"])

    def _incomplete(self, missing: Sequence[str]) -> str:
        shown = "; ".join(missing[:20]) + (f"; ... and {len(missing) - 20} more"
                                           if len(missing) > 20 else "")
        return (f"the selection stage at {self.path} is not complete: {len(missing)} "
                f"run{'s' if len(missing) != 1 else ''} missing: {shown}. Finish it first "
                "(relaunching its sweep runs only what is missing)")


def final_grid(grid: Sequence[Sequence[str]],
               compose: Callable[[list[str]], DictConfig]) -> list[list[str]]:
    """Each job of a final-stage grid with ``lr=<its chosen lr>`` (``compose``: a job's config
    from its overrides); ``SelectionError`` naming every problem when the stage cannot start."""
    jobs, problems, missing = [], [], []
    selection: Selection | None = None
    for overrides in grid:
        rest = overrides_lib.without(overrides, ["lr"])
        cfg = compose(rest)
        path = cfg.get("selection")
        if not path:
            raise SelectionError("the final stage needs selection=<folder of the selection "
                                 "sweep>, e.g. selection=sweeps/table3")
        if selection is None or selection.path != str(path):
            selection = Selection(str(path))
        cell, protocol = _cell(cfg, cfg.hydra.runtime.choices), _protocol(cfg)
        gaps = selection.missing(cell, protocol)
        if gaps:
            missing += [line for line in gaps if line not in missing]
            continue
        try:
            lr = selection.chosen_lr(cell, protocol)
        except SelectionError as error:
            problems.append(str(error))
            continue
        typed = overrides_lib.find(overrides, "lr")
        if typed not in (None, SELECTED) and not math.isclose(float(typed), lr):
            problems.append(f"lr={typed} for {_where(cell)}, but its selection chose {lr:g}: "
                            "the final stage takes each model's lr from the selection (drop lr=)")
        jobs.append([*rest, f"lr={lr!r}"])
    if missing:
        assert selection is not None
        problems.insert(0, selection._incomplete(missing))
    if problems:
        raise SelectionError(" | ".join(dict.fromkeys(problems)))
    return jobs


def verify(cfg: DictConfig, choices: Mapping[str, Any]) -> None:
    """A final-stage run must train at its cell's chosen lr (a run started without the sweep,
    which sets it, would otherwise train at the default lr)."""
    selection = Selection(str(cfg.selection))
    cell = _cell(cfg, choices)
    lr = selection.chosen_lr(cell, _protocol(cfg))
    if not math.isclose(float(cfg.lr), lr):
        raise SelectionError(
            f"lr={cfg.lr} is not the lr the selection stage chose for {_where(cell)} ({lr:g}, "
            f"from {selection.path}); run the final stage as a sweep, which sets it: "
            f"python -m ablate.run -m +sweep=<name>_final selection={selection.path}")

