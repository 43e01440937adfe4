"""Figures beside the tables: error by downsampling mode per model, learning curves, and
prediction consistency against shift (does pooling buy invariance?).

Matplotlib's object API (no pyplot state, no backend switch); PNGs without a timestamp, written
atomically, so the same runs give the same files.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import atomic
from ablate.report import evidence, load, reference, stats
from ablate.report import history as history_lib
from ablate.status import Status

COLORS = {"pool": "#4c72b0", "stride": "#dd8452", "convpool": "#55a868", "conv": "#c44e52"}


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()  # savefig renders a PNG with Agg, whatever canvas the figure has
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return atomic.write_atomic(path, buffer.getvalue())


def _panels(models: list[str], draw, title: str, path: Path, xlabel: str, ylabel: str) -> Path:
    """One panel per base model (``draw(axes, model)``), labelled alike, y label on the first."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(models), 3.6))
    for i, model in enumerate(models):
        axes = figure.add_subplot(1, len(models), i + 1)
        draw(axes, model)
        axes.set_title(f"Model {model}", fontsize=10)
        axes.set_xlabel(xlabel)
        if i == 0:
            axes.set_ylabel(ylabel)
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _spread(axes, intervals: list[tuple[float, float, float]], points: list[tuple[float, float]],
            color: str, dots: str | None = None, **style) -> None:
    """The 95 % t intervals (x, mean, half-width; only where n >= 2) and every seed a point."""
    if intervals:
        xs, means, half_widths = zip(*intervals, strict=True)
        axes.errorbar(xs, means, yerr=half_widths, fmt="none", ecolor=color, capsize=3, zorder=3)
    if points:
        axes.scatter(*zip(*points, strict=True), s=9, color=dots or color, zorder=4, **style)


def error_by_downsampling(runs: pd.DataFrame, title: str, path: Path, paper: bool) -> Path | None:
    """Grouped bars: one group per base model, one bar per downsampling mode, every seed a
    point on its bar (an outlier a red cross, ``evidence.outliers``), the 95 % t interval only
    from two seeds (no whisker: one seed)."""
    from matplotlib.figure import Figure

    by_cell = {(str(entry["model"]), str(entry["downsample"])): (entry["chosen"], seeds)
               for entry, seeds in stats.at_chosen_lr(runs).values()}
    if not by_cell:
        return None
    models = stats.in_order({*reference.MODELS, *(m for m, _ in by_cell)}, reference.MODELS)
    modes = stats.in_order({*reference.DOWNSAMPLES, *(d for _, d in by_cell)},
                           reference.DOWNSAMPLES)
    table3 = reference.table3()
    figure = Figure(figsize=(7.5, 4.2))
    axes = figure.add_subplot()
    width = 0.8 / len(modes)
    seed_label, far_label = "seed", f"outlier (|modified z| > {evidence.OUTLIER_Z:g})"  # once
    for j, mode in enumerate(modes):
        xs, means, refs, intervals, points, far = [], [], [], [], [], []
        for i, model in enumerate(models):
            x = i + (j - (len(modes) - 1) / 2) * width
            if (model, mode) in by_cell:
                pick, seeds = by_cell[(model, mode)]
                xs.append(x)
                means.append(100 * pick["test_mean"])
                if pick["n"] >= 2:
                    intervals.append((x, 100 * pick["test_mean"], 100 * pick["test_ci"]))
                by_seed = dict(zip(seeds["seed"], seeds["test_error"], strict=True))
                flagged = evidence.outliers(by_seed)
                for seed, error in by_seed.items():
                    (far if seed in flagged else points).append((x, 100 * float(error)))
            else:
                axes.text(x, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=7,
                          color="0.5")
            match = table3[(table3["model"] == model) & (table3["downsample"] == mode)]
            if paper and len(match):
                refs.append((x, float(match["error"].iloc[0])))
        axes.bar(xs, means, width=width * 0.9, label=mode, color=COLORS.get(mode, "0.6"))
        _spread(axes, intervals, points, "black", "0.15", label=seed_label)
        if far:  # shown, never dropped: the bar and interval keep them
            axes.scatter(*zip(*far, strict=True), marker="X", s=36, color="#d62728", zorder=5,
                         label=far_label)
            far_label = None
        if points:
            seed_label = None
        if refs:
            axes.scatter([r[0] for r in refs], [r[1] for r in refs], marker="_", s=200,
                         color="black", zorder=3, label="paper" if j == 0 else None)
    axes.set_xticks(range(len(models)), [f"Model {m}" for m in models])
    axes.set_ylabel("test error % (mean, 95 % CI where n ≥ 2, seeds)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, ncols=2)
    figure.tight_layout()
    return _save(figure, path)


def _curve(rows: pd.DataFrame, key: str) -> tuple[list[int], list[float]]:
    """Mean of ``key`` per epoch over the runs' histories."""
    pairs = [history_lib.series(history, key) for history in rows["history"]]
    if not pairs or not sum(len(epochs) for epochs, _ in pairs):
        return [], []
    epochs = np.concatenate([epochs for epochs, _ in pairs])
    values = np.concatenate([values for _, values in pairs])
    order, inverse = np.unique(epochs, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return [int(e) + 1 for e in order], [100 * float(m) for m in means]


def learning_curves(runs: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Per base model: validation (solid) and training (dashed) error per epoch, each mode at
    its chosen lr, mean over seeds."""
    chosen = stats.selected(runs)
    finished = runs[(runs["status"] == Status.FINISHED) & runs["history"].notna()]
    models = stats.in_order(finished["model"].dropna(), reference.MODELS)
    if not models:
        return None

    def draw(axes, model: str) -> None:
        for name in stats.ordered_names(finished.loc[finished["model"] == model, "name"]):
            pick = chosen[name]["chosen"]
            if pick is None:
                continue
            mine = finished[(finished["name"] == name) & (finished["lr"] == pick["lr"])]
            color = COLORS.get(str(chosen[name]["downsample"]), None)
            for key, style in (("val_error", "-"), ("train_error", "--")):
                xs, ys = _curve(mine, key)
                if xs:
                    axes.plot(xs, ys, style, color=color, linewidth=1.3,
                              label=f"{name} (lr {pick['lr']:g})" if key == "val_error" else None)

    return _panels(models, draw, title, path, "epoch", "error % (val solid, train dashed)")


def consistency_by_shift(runs: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Per base model: consistency % against shift, one line of means over seeds per mode at
    its chosen lr, from 100 % at 0 px (an unmoved image keeps its prediction by definition);
    intervals from two seeds, every seed a point nudged sideways per mode so that modes do not
    hide each other. No run measured invariance: no figure (the table says n/a)."""
    shifts = load.shift_columns(runs)
    columns = list(shifts.values())
    measured = {name: (entry, mine) for name, (entry, mine) in stats.at_chosen_lr(runs).items()
                if mine[columns].notna().to_numpy().any()}
    if not measured:
        return None
    found = {str(entry["model"]) for entry, _ in measured.values()}
    models = stats.in_order(found, reference.MODELS)
    modes = stats.in_order({*reference.DOWNSAMPLES, *(str(entry["downsample"])
                                                      for entry, _ in measured.values())},
                           reference.DOWNSAMPLES)

    def draw(axes, model: str) -> None:
        for name, (entry, mine) in measured.items():
            if str(entry["model"]) != model:
                continue
            mode = str(entry["downsample"])
            color = COLORS.get(mode, "0.4")
            nudge = (modes.index(mode) - (len(modes) - 1) / 2) * 0.06
            xs, means, intervals, points = [0.0], [100.0], [], []
            for step, column in shifts.items():
                values = mine[column].dropna()
                if not len(values):
                    continue
                summary = evidence.summarize(values)
                xs.append(step + nudge)
                means.append(100 * summary.mean)
                if summary.n >= 2:
                    intervals.append((step + nudge, 100 * summary.mean, 100 * summary.half_width))
                points += [(step + nudge, 100 * float(v)) for v in values]
            axes.plot(xs, means, "-", color=color, linewidth=1.3,
                      label=f"{name} (lr {entry['chosen']['lr']:g})")
            _spread(axes, intervals, points, color, edgecolors="0.15", linewidths=0.4)
        axes.set_xticks(range(0, max(shifts) + 1))

    return _panels(models, draw, title, path, "shift (px, mean over 8 directions)",
                   "consistency % (mean, 95 % CI, seeds)")


def write_figures(frame: pd.DataFrame, directory: Path,
                  link_from: Path) -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    """All figures for ``frame``; returns, per group, (title, link relative to ``link_from``)."""
    keys = stats.groups(frame)
    several = len({k[0] for k in keys}) > 1
    links: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for protocol, dataset, augmentation in keys:
        runs = stats.runs_of(frame, protocol, dataset, augmentation)
        slug = f"{dataset}_{augmentation}" + (f"_{protocol}" if several else "")
        label = f"{dataset}, augmentation {augmentation}" + (f", {protocol}" if several else "")
        made = [
            ("test error by downsampling mode", error_by_downsampling(
                runs, f"Test error by downsampling mode ({label})",
                directory / f"error_by_downsampling_{slug}.png",
                paper=(dataset, augmentation) == ("cifar10", "none"))),
            ("learning curves", learning_curves(
                runs, f"Learning curves at each model's chosen lr ({label})",
                directory / f"learning_curves_{slug}.png")),
            ("consistency under shifts", consistency_by_shift(
                runs, f"Prediction consistency under shifts at each model's chosen lr ({label})",
                directory / f"consistency_by_shift_{slug}.png"))]
        links[(protocol, dataset, augmentation)] = [
            (title, Path(os.path.relpath(path, link_from)).as_posix())
            for title, path in made if path is not None]
    return links
