"""The final stage's learning rates, read from the selection stage's records.

The paper chose each model's lr from {0.25, 0.1, 0.05, 0.01} on held-out data; its
preprocessing recipe (pylearn2's maxout scripts) then retrains on all training images. The
selection stage is a sweep with a validation split (``+sweep=table3``); the final stage
(``+sweep=table3_final selection=<its folder>``) retrains each model at the lr chosen there.
The choice is the report's own (``ablate.report.stats.choose_lr`` over the same rows), so the
lr a final run trains at is the lr the report shows as chosen, by construction.

The sweeper calls :func:`final_grid` before planning (each job gets its lr, or the stage does
not start); the runner calls :func:`verify` (a final-stage run at another lr is refused). No
torch here: this reads records only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablate.errors import SelectionError
from ablate.report import load, stats

SELECTED = "selected"  # the lr of a final-stage grid: each job's own, from the selection
DONE = ("finished", "diverged")  # a run that counts as an outcome of the selection


def _protocol(cfg: DictConfig) -> dict[str, Any]:
    """The protocol of a composed config (only the nodes that define it are resolved: the rest
    may hold ``${hydra:...}``, which resolves only inside a job)."""
    tops = {key.split(".")[0] for key in load.PROTOCOL_KEYS}
    plain = {top: (OmegaConf.to_container(cfg[top], resolve=True)
                   if OmegaConf.is_config(cfg[top]) else cfg[top])
             for top in sorted(tops) if top in cfg}
    return load.protocol_of(plain)


def _cell(cfg: DictConfig, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The job's axes as the report names them (``lppool p=4``)."""
    downsample = OmegaConf.to_container(cfg.downsample, resolve=True)
    return {"model": choices.get("model"), "dataset": choices.get("dataset"),
            "augmentation": choices.get("augmentation"),
            "downsample": load.downsample_mode(choices.get("downsample"), downsample)}


def _where(cell: Mapping[str, Any]) -> str:
    return f"{cell['model']}/{cell['downsample']} ({cell['dataset']}, {cell['augmentation']})"


def _differences(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    keys = [k for k in load.PROTOCOL_KEYS if k not in load.STAGE_KEYS
            and mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k} {json.dumps(theirs.get(k))} there, {json.dumps(mine.get(k))} here"
                     for k in keys)


class Selection:
    """The runs of one selection sweep, loaded once, asked for one cell's lr at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not Path(path).exists():
            raise SelectionError(f"selection={path}: no such folder; pass the folder of the "
                                 "selection sweep (e.g. selection=sweeps/table3)")
        frame, _ = load.load_runs([path], wandb_offline="none")
        self.runs = stats.current(frame)
        self.runs = self.runs[self.runs["protocol_spec"].notna()]
        if self.runs.empty:
            raise SelectionError(f"selection={path} holds no runs (no result.json below it): "
                                 "it is not a sweep; run the selection stage first, e.g. "
                                 "python -m ablate.run -m +sweep=table3")
        specs = [json.loads(spec) for spec in self.runs["protocol_spec"]]
        studies = [load.study_protocol(spec) for spec in specs]
        ids = [load.protocol_id(study) for study in studies]
        self.runs = self.runs.assign(stage=[load.stage_of(spec) for spec in specs], study=ids)
        self.specs = dict(zip(ids, studies, strict=True))

    def _comparable(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> pd.DataFrame:
        """The selection-stage runs of this dataset and protocol, or why there are none."""
        runs = self.runs[self.runs["dataset"] == cell["dataset"]]
        if runs.empty:
            found = ", ".join(sorted(str(d) for d in self.runs["dataset"].dropna().unique()))
            raise SelectionError(f"selection={self.path} holds runs on {found}, not on "
                                 f"{cell['dataset']}: point it at the selection sweep of "
                                 f"{cell['dataset']}")
        runs = runs[runs["stage"] == load.SELECTION]
        if runs.empty:
            raise SelectionError(f"selection={self.path} holds only final-stage runs (no "
                                 "validation split, so no validation error to choose by); "
                                 "point it at the selection stage's sweep (+sweep=table3)")
        study = load.protocol_id(load.study_protocol(protocol))
        mine = runs[runs["study"] == study]
        if mine.empty:
            theirs = self.specs[runs["study"].value_counts().index[0]]
            raise SelectionError(
                f"selection={self.path} was run under another protocol than this stage: "
                f"{_differences(load.study_protocol(protocol), theirs)}; run the final stage "
                "with the selection's settings, or select again with these")
        return mine

    def _cell_runs(self, cell: Mapping[str, Any],
                   protocol: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The comparable runs (whose lrs and seeds make the selection's grid) and, among
        them, this cell's."""
        runs = self._comparable(cell, protocol)
        mine = runs[(runs["model"] == cell["model"]) & (runs["downsample"] == cell["downsample"])
                    & (runs["augmentation"] == cell["augmentation"])]
        return runs, mine

    def missing(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[str]:
        """The selection's runs this cell still lacks: one line per (lr, seed) of its grid."""
        return self._gaps(cell, *self._cell_runs(cell, protocol))

    def _gaps(self, cell: Mapping[str, Any], runs: pd.DataFrame, mine: pd.DataFrame) -> list[str]:
        lrs, seeds = sorted(runs["lr"].dropna().unique()), sorted(runs["seed"].dropna().unique())
        lines = []
        for lr in lrs:
            for seed in seeds:
                there = mine[(mine["lr"] == lr) & (mine["seed"] == seed)]
                states = set(there["status"])
                if not states & set(DONE):
                    state = "/".join(sorted(states)) or "no run"
                    lines.append(f"{_where(cell)} lr {lr:g} seed {seed} ({state})")
        return lines

    def chosen_lr(self, cell: Mapping[str, Any], protocol: Mapping[str, Any]) -> float:
        """The lr the report chooses for this cell; ``SelectionError`` if it cannot yet."""
        runs, mine = self._cell_runs(cell, protocol)
        missing = self._gaps(cell, runs, mine)
        if missing:
            raise SelectionError(self._incomplete(missing))
        chosen = stats.choose_lr(stats.lr_stats(mine))
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


def _lr_of(overrides: Sequence[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("lr=")), None)


def final_grid(grid: Sequence[Sequence[str]],
               compose: Callable[[list[str]], DictConfig]) -> list[list[str]]:
    """Each job of a final-stage grid with ``lr=<its chosen lr>``; ``SelectionError`` naming
    every problem (all missing cells at once) when the stage cannot start.

    ``compose`` gives a job's config from its overrides (the sweeper's config loader).
    """
    jobs, problems, missing = [], [], []
    selection: Selection | None = None
    for overrides in grid:
        rest = [o for o in overrides if _lr_of([o]) is None]
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
        typed = _lr_of(overrides)
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

