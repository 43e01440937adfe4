"""Deletion test: does a map point at the pixels the network's decision rests on?

Pixels are removed in order of decreasing attribution, and the probability of the class the
network predicted on the intact image is recorded after each step. A map that finds the
evidence makes that probability fall fast: a lower area under the curve is better. Choices:

- a pixel's attribution is the sum over channels of the map's absolute value: the three rules
  differ in sign conventions, and a strongly negative gradient marks an important pixel too;
- a removed pixel takes the training split's per-channel mean in the network's input space
  (0 after standardisation): "no information" rather than black, which is itself a feature;
- fractions 0, 5, ..., 50 % of the pixels; the area is the trapezoid rule over that range,
  divided by its width, so it is the average probability over the curve, in [0, 1];
- ties in attribution go to the lower pixel index (a stable sort), so a flat map deletes in
  reading order and results are reproducible;
- ``random`` (a seeded random order per image) is the baseline any map has to beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.integrate import trapezoid
from torch import nn

FRACTIONS = tuple(round(0.05 * step, 2) for step in range(11))
RANDOM = "random"


def deletion_order(attribution: torch.Tensor) -> torch.Tensor:
    """Pixel indices (row-major) per image, most attributed first: (N, H * W)."""
    score = attribution.abs().sum(dim=1).flatten(1)
    return torch.argsort(score, dim=1, descending=True, stable=True)


@torch.no_grad()
def deletion_curves(network: nn.Module, inputs: torch.Tensor, order: torch.Tensor,
                    fill: torch.Tensor, fractions: Sequence[float] = FRACTIONS,
                    target: torch.Tensor | None = None) -> torch.Tensor:
    """Probability of ``target`` (default: the intact prediction) per image and step: (N, S).

    ``fill`` holds one value per channel; the pixels ``order[:, :m]`` of each image are set to
    it, with m = round(fraction * H * W).
    """
    n, channels, height, width = inputs.shape
    pixels = height * width
    if target is None:
        target = network(inputs).argmax(dim=1)
    curves = []
    for fraction in fractions:
        count = int(round(fraction * pixels))
        keep = torch.ones(n, pixels, dtype=torch.bool)
        keep.scatter_(1, order[:, :count], False)
        keep = keep.view(n, 1, height, width)
        removed = torch.where(keep, inputs, fill.view(1, channels, 1, 1).to(inputs.dtype))
        probability = network(removed).softmax(dim=1)
        curves.append(probability[torch.arange(n), target])
    return torch.stack(curves, dim=1)


def area_under(curves: torch.Tensor, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Trapezoid area per curve, divided by the fraction range: a mean probability in [0, 1]."""
    x = np.asarray(fractions, dtype=np.float64)
    return trapezoid(curves.double().numpy(), x, axis=1) / (x[-1] - x[0])


@torch.no_grad()
def deletion_test(network: nn.Module, inputs: torch.Tensor,
                  attributions: Mapping[str, torch.Tensor], fill: torch.Tensor,
                  seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Curves and areas for each map in ``attributions`` plus the random baseline.

    Returns ``{method: {"curves": (N, S), "auc": (N,)}}``; the images and their predicted
    classes are the same for every method, so the areas are paired across methods.
    """
    target = network(inputs).argmax(dim=1)
    height, width = inputs.shape[-2:]
    orders = {method: deletion_order(a) for method, a in attributions.items()}
    generator = torch.Generator().manual_seed(seed)  # a reproducible random order per image
    orders[RANDOM] = torch.stack([torch.randperm(height * width, generator=generator)
                                  for _ in range(len(inputs))])
    results = {}
    for method, order in orders.items():
        curves = deletion_curves(network, inputs, order, fill, target=target)
        results[method] = {"curves": curves.double().numpy(), "auc": area_under(curves)}
    return results
