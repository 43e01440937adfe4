"""From run folders to ``<out>/visualizations.md`` and ``<out>/figures/visualize_*.png``.

Order of work, so that a bad argument never leaves a half-written report: read and check every
record (status, checkpoint, one dataset), load every run, check every layer and unit choice
against every run, compute, render all figures and the markdown in memory, and only then
write, each file atomically, the markdown last. W&B logging comes after that and can only warn.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate import atomic
from ablate import spec as spec_lib
from ablate.visualize import attribution, deletion, markdown, panels, units
from ablate.visualize.loading import LoadedRun, VisualizeError, load_run, read_finished_record

log = logging.getLogger("ablate.visualize")

REPORT_FILE = "visualizations.md"
FIGURE_DIR = "figures"
DEFAULT_LAYERS = ("middle", "last3x3")


@dataclass(frozen=True)
class Options:
    """What to show; the defaults take seconds on the quick preset's runs."""

    images: int = 64        # the first N test images, shared by every run (deletion test)
    rows: int = 8           # how many of them the region figure shows
    layers: Sequence[str] = DEFAULT_LAYERS
    units: Sequence[int] | None = None  # None: the most active channels of each layer
    unit_count: int = 4
    top_k: int = 6
    seed: int = 0           # of the random deletion baseline


@dataclass
class RunResult:
    """Everything computed for one run, before rendering."""

    run: LoadedRun
    label: str
    predicted: torch.Tensor
    maps: dict[str, torch.Tensor]
    deletion: dict[str, dict[str, np.ndarray]]
    layers: list[dict]  # per chosen layer: its units' top images and reconstructions


def _labels(runs: Sequence[LoadedRun]) -> list[str]:
    """The paper's name per run; the folder name added where names repeat, then the position."""
    names = [run.name for run in runs]
    labels = [name if names.count(name) == 1 else f"{name} ({run.run_dir.name})"
              for name, run in zip(names, runs, strict=True)]
    return [label if labels.count(label) == 1 else f"{label} #{position}"
            for position, label in enumerate(labels, start=1)]


def _resolve_layers(run: LoadedRun, options: Options) -> list[tuple[str, int, torch.nn.Module]]:
    """(name, spec index, trunk) per chosen layer, unit choices checked, duplicates dropped."""
    chosen: list[tuple[str, int, torch.nn.Module]] = []
    names = units.conv_layers(run.network.spec)
    for choice in options.layers:
        name = units.resolve_layer(run.network.spec, choice, f"{run.run_dir} ({run.name})")
        if any(name == seen for seen, _, _ in chosen):
            continue
        trunk = units.trunk(run.network, names[name])
        conv = [m for m in trunk if isinstance(m, torch.nn.Conv2d)][-1]
        bad = [u for u in options.units or () if not 0 <= u < conv.out_channels]
        if bad:
            raise VisualizeError(
                f"{run.run_dir} ({run.name}): {name} has {conv.out_channels} channels, so unit(s) "
                f"{bad} do not exist; valid units are 0..{conv.out_channels - 1} (or leave "
                "--units out to take the most active ones)")
        chosen.append((name, names[name], trunk))
    return chosen


def _layer_result(run: LoadedRun, name: str, index: int, trunk: torch.nn.Module,
                  options: Options) -> dict:
    """Top images of each chosen unit, cropped to its field, with both reconstructions."""
    with torch.no_grad():  # the layer's ReLU maps of the whole test split, in batches
        maps = torch.cat([trunk(part) for part in run.test_x.split(500)])
    channels = (list(options.units) if options.units is not None
                else units.most_active_units(maps, options.unit_count))
    field_ = units.receptive_fields(run.network.spec)[index]
    shown = []
    for channel in channels:
        top = units.top_images(maps, channel, options.top_k)
        recon = attribution.unit_attributions(trunk, channel, run.test_x[top.indices], top.rows,
                                              top.cols)
        shown.append((channel, field_.crops(run.images[top.indices], top.rows, top.cols),
                      top.values.tolist(),
                      {method: field_.crops(values, top.rows, top.cols)
                       for method, values in recon.items()}, top.indices.tolist()))
    return {"name": name, "index": index, "layer": run.network.spec[index], "field": field_,
            "units": shown, "map_size": int(maps.shape[-1])}


def compute(runs: Sequence[LoadedRun], options: Options) -> list[RunResult]:
    """All numbers and maps, for runs already loaded and checked."""
    test_size = min(len(run.test_x) for run in runs)
    if not 1 <= options.images <= test_size:
        raise VisualizeError(f"--images {options.images} is out of range; the test split has "
                             f"{test_size} images, so use 1..{test_size}")
    for name in ("rows", "unit_count", "top_k"):
        if getattr(options, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise VisualizeError(f"{flag} {getattr(options, name)} must be at least 1")
    if not options.layers:
        raise VisualizeError(f"no layers chosen; use a role ({', '.join(units.ROLES)}) or a "
                             "conv name such as conv3")
    layer_choices = [_resolve_layers(run, options) for run in runs]  # all checked before work
    results = []
    for run, label, chosen in zip(runs, _labels(runs), layer_choices, strict=True):
        inputs = run.test_x[: options.images]
        with torch.no_grad():
            predicted = run.network(inputs).argmax(dim=1)
        maps = {method: attribution.attribute(run.network, inputs, method, predicted.tolist())
                for method in attribution.METHODS}  # the predicted class's score, per image
        results.append(RunResult(
            run=run, label=label, predicted=predicted, maps=maps,
            deletion=deletion.deletion_test(run.network, inputs, maps, run.input_mean,
                                            seed=options.seed),
            layers=[_layer_result(run, *layer, options) for layer in chosen]))
    return results


def render(results: Sequence[RunResult], options: Options,
           sources: Sequence[str]) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """Every output file, relative to ``out``, as bytes; and each run's figures by label."""
    titles = attribution.METHOD_TITLES
    files: dict[str, bytes] = {}
    first = results[0].run
    rows = min(options.rows, options.images)
    figure_paths: dict[str, str] = {}
    per_run: dict[str, list[str]] = {r.label: [] for r in results}

    def add(key: str, filename: str, payload: bytes, label: str | None = None) -> None:
        path = f"{FIGURE_DIR}/{filename}"
        files[path] = payload
        figure_paths[key] = path
        for run_label in per_run if label is None else [label]:
            per_run[run_label].append(path)

    add("regions", "visualize_regions.png", panels.regions_figure(
        first.images[:rows], first.test_y[:rows], list(range(rows)),
        [(r.label, r.predicted[:rows], {m: v[:rows] for m, v in r.maps.items()})
         for r in results], titles))
    add("deletion", "visualize_deletion.png", panels.deletion_figure(
        {r.label: {m: d["curves"] for m, d in r.deletion.items()} for r in results},
        deletion.FRACTIONS, {**titles, deletion.RANDOM: "random order"}))
    for r in results:
        slug = re.sub(r"[^a-z0-9]+", "-", r.label.lower()).strip("-") or "run"
        for layer in r.layers:
            title = (f"{r.label}, {layer['name']} ({spec_lib.describe(layer['layer'])}): "
                     f"receptive field {layer['field'].size} px")
            add(f"units/{r.label}/{layer['name']}",
                f"visualize_units_{slug}_{layer['name']}.png",
                panels.units_figure(title, [u[:4] for u in layer["units"]], titles), r.label)
        first_conv = next(m for m in r.run.network if isinstance(m, torch.nn.Conv2d))
        add(f"filters/{r.label}", f"visualize_filters_{slug}.png",
            panels.filters_figure(f"{r.label}: conv1 filters", first_conv.weight.detach()),
            r.label)
    files[REPORT_FILE] = markdown.render(results, options, figure_paths, sources).encode()
    return files, per_run


def visualize(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] = "reports",
              options: Options | None = None, wandb: bool = True) -> Path:
    """Write the visualisations of finished runs to ``out``; returns the markdown's path.

    Raises :class:`VisualizeError` (before writing anything) for a run that cannot be shown,
    runs of different datasets, or a layer, unit or count that does not exist.
    """
    options = options or Options()
    if not run_dirs:
        raise VisualizeError("no run folders given; pass the output folder of at least one run")
    # Runs shown side by side must see the same test images in the same order, so their
    # datasets (name, image size, source and split seed) must agree.
    identities = [{"dataset": record.cell.get("dataset"),
                   **{key: (record.config.get("datamodule") or {}).get(key)
                      for key in ("image_size", "source", "split_seed")}}
                  for record in map(read_finished_record, run_dirs)]
    if any(identity != identities[0] for identity in identities):
        lines = "; ".join(f"{run_dir}: {identity['dataset']} at {identity['image_size']} px "
                          f"(split_seed {identity['split_seed']})"
                          for run_dir, identity in zip(run_dirs, identities, strict=True))
        raise VisualizeError(f"the runs use different datasets ({lines}); runs are compared on "
                             "the same test images, so pass only runs of one dataset (and image "
                             "size) per call")
    runs = [load_run(run_dir) for run_dir in run_dirs]
    results = compute(runs, options)
    files, per_run = render(results, options, [str(run_dir) for run_dir in run_dirs])
    out = Path(out)
    for name in sorted(files, key=lambda name: (name == REPORT_FILE, name)):  # markdown last
        atomic.write_atomic(out / name, files[name])
    log.info("%d runs -> %s (%d figures)", len(runs), out / REPORT_FILE, len(files) - 1)
    if wandb:
        from ablate.visualize.wandb_log import log_figures

        for result in results:
            log_figures(result.run.record, {name: out / name for name in per_run[result.label]})
    return out / REPORT_FILE
