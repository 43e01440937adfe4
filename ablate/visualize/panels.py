"""Matplotlib rendering of the visualisations, to PNG bytes (nothing touches the disk here).

Display rule for every attribution map and filter, as the paper shows them: each map is
divided by its own largest absolute value and mapped to [0, 1] around 0.5 (0.5 = zero,
1 = the strongest positive value, 0 the strongest negative), over all its channels at once so
colour balance is kept; every panel of a figure is then drawn on the same fixed [0, 1] scale.
Images are drawn as they are (already in [0, 1]). NaN (outside the image, for crops) is drawn
light blue. Object API with the Agg canvas, fixed dpi, no "Software" metadata: the same
inputs give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

DPI = 80
OUTSIDE = "#cfe3f3"


def normalise_map(values: torch.Tensor) -> torch.Tensor:
    """``0.5 + 0.5 * m / max|m|`` per map (C, H, W); an all-zero map stays at 0.5."""
    scale = torch.nan_to_num(values, nan=0.0).abs().amax()
    if float(scale) == 0.0:
        return torch.where(torch.isnan(values), values, torch.full_like(values, 0.5))
    return 0.5 + 0.5 * values / scale


def _panel(axes, picture: torch.Tensor) -> None:
    """Draw one (C, H, W) picture in [0, 1]: grey for one channel, RGB for three."""
    array = picture.detach().double().numpy()
    axes.set_xticks([])
    axes.set_yticks([])
    if array.shape[0] == 1:
        cmap = colormaps["gray"].with_extremes(bad=OUTSIDE)
        axes.imshow(np.ma.masked_invalid(array[0]), cmap=cmap, vmin=0.0, vmax=1.0,
                    interpolation="nearest")
        return
    rgb = np.moveaxis(array, 0, -1)
    outside = np.isnan(rgb).any(axis=-1)
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0)
    rgb[outside] = to_rgb(OUTSIDE)
    axes.imshow(rgb, interpolation="nearest")


def _png(figure) -> bytes:
    buffer = io.BytesIO()  # savefig renders a PNG with Agg, whatever canvas the figure has
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None},
                   bbox_inches="tight", pad_inches=0.05)
    return buffer.getvalue()


def regions_figure(images: torch.Tensor, labels: torch.Tensor, image_ids: Sequence[int],
                   runs: Sequence[tuple[str, torch.Tensor, Mapping[str, torch.Tensor]]],
                   titles: Mapping[str, str]) -> bytes:
    """One row per image: the image, then each run's maps, one column per method.

    ``runs`` holds (label, predicted classes, {method: maps}) per run.
    """
    columns = 1 + sum(len(maps) for _, _, maps in runs)
    rows = len(images)
    figure = Figure(figsize=(1.1 * columns, 1.15 * rows + 0.6))
    grid = figure.add_gridspec(rows, columns, wspace=0.08, hspace=0.3)
    for row in range(rows):
        axes = figure.add_subplot(grid[row, 0])
        _panel(axes, images[row])
        axes.set_ylabel(f"#{image_ids[row]} y={int(labels[row])}", fontsize=7)
        if row == 0:
            axes.set_title("image", fontsize=7)
        column = 1
        for label, predicted, maps in runs:
            for j, (method, values) in enumerate(maps.items()):
                axes = figure.add_subplot(grid[row, column])
                _panel(axes, normalise_map(values[row]))
                if row == 0:
                    axes.set_title(f"{label}\n{titles.get(method, method)}", fontsize=7)
                if j == 0:
                    axes.set_xlabel(f"pred {int(predicted[row])}", fontsize=6, labelpad=1)
                column += 1
    return _png(figure)


def units_figure(title: str, units: Sequence[tuple[int, torch.Tensor, Sequence[float],
                                                   Mapping[str, torch.Tensor]]],
                 titles: Mapping[str, str]) -> bytes:
    """Per unit, three rows: its top images (cropped), then each rule's reconstruction.

    ``units`` holds (channel, image crops (K, C, S, S), activations, {method: crops}).
    """
    k = max(len(crops) for _, crops, _, _ in units)
    methods = len(units[0][3])
    rows = len(units) * (1 + methods)
    height = 0.95 * rows + 0.5
    figure = Figure(figsize=(0.9 * k + 1.2, height))
    figure.suptitle(title, fontsize=8, y=1 - 0.1 / height)
    grid = figure.add_gridspec(rows, k, wspace=0.06, hspace=0.3, top=1 - 0.4 / height)
    row = 0
    for channel, crops, values, maps in units:
        for j in range(len(crops)):
            axes = figure.add_subplot(grid[row, j])
            _panel(axes, crops[j])
            axes.set_title(f"{values[j]:.2f}", fontsize=6, pad=1)
            if j == 0:
                axes.set_ylabel(f"unit {channel}\nimage", fontsize=6)
        for m, (method, recon) in enumerate(maps.items(), start=1):
            for j in range(len(recon)):
                axes = figure.add_subplot(grid[row + m, j])
                _panel(axes, normalise_map(recon[j]))
                if j == 0:
                    axes.set_ylabel(titles.get(method, method), fontsize=6)
        row += 1 + methods
    return _png(figure)


def filters_figure(title: str, weights: torch.Tensor) -> bytes:
    """First-layer filters, each normalised on its own (all input channels together)."""
    count = weights.shape[0]
    columns = min(count, 12)
    rows = -(-count // columns)
    height = 0.55 * rows + 0.45
    figure = Figure(figsize=(max(0.55 * columns + 0.2, 2.5), height))
    figure.suptitle(title, fontsize=8, y=1 - 0.08 / height)
    grid = figure.add_gridspec(rows, columns, wspace=0.1, hspace=0.1, top=1 - 0.35 / height)
    for index in range(count):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        _panel(axes, normalise_map(weights[index]))
    return _png(figure)


def deletion_figure(curves: Mapping[str, Mapping[str, np.ndarray]],
                    fractions: Sequence[float], titles: Mapping[str, str]) -> bytes:
    """Mean probability of the predicted class against the fraction deleted, per run."""
    figure = Figure(figsize=(3.2 * len(curves), 2.8))
    x = 100 * np.asarray(fractions)
    for i, (label, by_method) in enumerate(curves.items(), start=1):
        axes = figure.add_subplot(1, len(curves), i)
        for method, values in by_method.items():
            style = ":" if method == "random" else "-"
            axes.plot(x, values.mean(axis=0), style, marker=".", label=titles.get(method, method))
        axes.set_title(label, fontsize=8)
        axes.set_xlabel("pixels deleted (%)", fontsize=7)
        axes.set_ylim(0.0, 1.0)
        axes.tick_params(labelsize=7)
        if i == 1:
            axes.set_ylabel("p(predicted class), mean", fontsize=7)
            axes.legend(fontsize=6)
    figure.tight_layout()
    return _png(figure)
